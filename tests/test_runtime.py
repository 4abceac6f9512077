"""shared/runtime.py: the one per-instance holder of every function, and the fault hook (a no-op
unless a test installs a plan; never switched on by a message or a request)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared import runtime
from shared.adapters.storage import open_store
from shared.runtime import Faults, InjectedCrash, faults

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ per-instance state
def test_per_instance_is_lazy_built_once_under_concurrency_and_reset():
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.05)  # a slow first build: every thread arrives while it runs
        return object()

    holder = runtime.per_instance(build)
    assert calls == []  # nothing at creation (import)
    barrier = threading.Barrier(16)
    got = []

    def first_request():
        barrier.wait()
        got.append(holder.get())

    threads = [threading.Thread(target=first_request) for _ in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and len(got) == 16 and all(g is got[0] for g in got)
    assert holder.get() is got[0]
    holder.reset()
    assert holder.get() is not got[0] and len(calls) == 2
    runtime.reset_all()
    assert holder.get() is not got[0] and len(calls) == 3


def test_a_failed_build_is_retried_by_the_next_call():
    attempts = []

    def build():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("store down")
        return "up"

    holder = runtime.per_instance(build)
    with pytest.raises(ConnectionError):
        holder.get()
    assert holder.get() == "up" and holder.get() == "up" and len(attempts) == 2


def test_functions_hold_state_only_in_per_instance_holders():
    for main in sorted((ROOT / "functions").glob("*/main.py")):
        tree = ast.parse(main.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{main}: a `global` singleton"
        assert "lru_cache" not in main.read_text() and "functools.cache" not in main.read_text(), main
        for node in tree.body:  # no object constructed at import: hold it in runtime.per_instance(...)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                callee = ast.unparse(node.value.func).rsplit(".", 1)[-1]
                assert not callee[:1].isupper(), f"{main}: {ast.unparse(node)} is built at import"


# ------------------------------------------------------------------------------ the fault hook
def test_no_plan_no_fault():
    f = Faults()
    f.point("clean:write_clean")  # nothing installed: a no-op
    assert faults.planned == []  # this test process was started without a plan


def test_installed_points_crash_every_time_until_the_block_ends():
    f = Faults()
    with f.installed("archive:write"):
        for _ in range(2):
            with pytest.raises(InjectedCrash, match="injected crash at archive:write: after write"):
                f.point("archive:write", None, "after write")
        f.point("clean:commit")  # another point: not planned
    f.point("archive:write")
    assert f.planned == []


def test_once_per_store_holds_across_processes(tmp_path):
    store = open_store(tmp_path / "store")
    first, second = Faults(), Faults()  # two processes reading the same plan
    first.install("clean:write_clean", once=True)
    second.install("clean:write_clean", once=True)
    with pytest.raises(InjectedCrash):
        first.point("clean:write_clean", store)
    assert store.exists("state/faults/clean-write_clean")
    first.point("clean:write_clean", store)  # the retry passes
    second.point("clean:write_clean", store)  # so does another process on the same store
    other = open_store(tmp_path / "other")
    with pytest.raises(InjectedCrash):
        second.point("clean:write_clean", other)
    solo = Faults()
    solo.install("erase:write", once=True)
    with pytest.raises(InjectedCrash):
        solo.point("erase:write")  # no store: once in this process
    solo.point("erase:write")


def _plan_in_a_fresh_process(env: dict[str, str]) -> tuple[list[str], list[dict]]:
    code = "from shared import runtime; import json; print(json.dumps(runtime.faults.planned))"
    base = {k: v for k, v in os.environ.items() if k not in ("DAIHUO_TEST_FAULTS", "K_SERVICE")}
    p = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    *logged, planned = p.stdout.strip().splitlines()
    return json.loads(planned), [json.loads(x) for x in logged]


def test_the_test_only_variable_is_read_at_process_start_and_refused_on_google_cloud():
    assert _plan_in_a_fresh_process({}) == ([], [])
    planned, log = _plan_in_a_fresh_process({"DAIHUO_TEST_FAULTS": "clean:write_clean, archive:write"})
    assert planned == ["archive:write", "clean:write_clean"] and log == []
    planned, log = _plan_in_a_fresh_process({"DAIHUO_TEST_FAULTS": "clean:write_clean", "K_SERVICE": "clean"})
    assert planned == [] and [(x["severity"], x["points"]) for x in log] == [("ERROR", ["clean:write_clean"])]
    assert "test-only" in log[0]["message"]


def test_shipped_code_has_no_other_crash_switch():
    """No ``crash_after`` argument, no ``DAIHUO_FAIL_ONCE``: the hook is the only way."""
    for path in sorted(list((ROOT / "shared").rglob("*.py")) + list((ROOT / "functions").glob("*/main.py"))):
        text = path.read_text()
        assert "crash_after" not in text and "FAIL_ONCE" not in text, path
