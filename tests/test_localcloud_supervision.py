"""The local stack supervises its functions and reports what really runs: kill -9 of a function's
process -> the supervisor restarts it (backoff) and it answers again on the same port;
``python -m devtools.localcloud status`` checks each function and emulator for real -> a killed Pub/Sub
emulator is reported DOWN (exit 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from devtools import emulators
from devtools.localcloud import Ports, Stack


def _status(state_dir):
    p = subprocess.run(
        [sys.executable, "-m", "devtools.localcloud", "status", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=emulators.REPO_ROOT,
    )
    return p.returncode, p.stdout


def test_restart_after_kill_and_real_status(tmp_path):
    base = Ports.free().base
    stack = Stack(
        port_base=base, state_dir=tmp_path, functions=["recommend"], scheduler=False, restart_backoff_s=(0.5, 4.0)
    )
    stack.start()
    try:
        url = stack.url("recommend")
        assert requests.get(url, params={"stream_id": "s-1"}, timeout=10).status_code in (200, 503)
        rc, out = _status(tmp_path)
        assert rc == 0, out
        assert "recommend" in out and "pubsub-emulator" in out and "DOWN" not in out
        old = stack.procs["recommend"].proc.pid
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        answered = False
        while time.monotonic() < deadline:
            try:
                answered = requests.get(url, params={"stream_id": "s-1"}, timeout=2).status_code in (200, 503)
            except requests.RequestException:
                answered = False
            if answered and stack.restarts.get("recommend"):
                break
            time.sleep(0.2)
        assert answered and stack.restarts["recommend"] == 1
        assert stack.procs["recommend"].proc.pid != old
        rc, out = _status(tmp_path)
        assert rc == 0 and "restarted 1x" in out, out
        # a dead emulator is reported down
        ps = stack.procs["pubsub-emulator"].proc
        os.killpg(ps.pid, signal.SIGKILL)
        ps.wait(timeout=10)
        rc, out = _status(tmp_path)
        assert rc == 1, out
        line = [ln for ln in out.splitlines() if ln.startswith("pubsub-emulator")][0]
        assert "DOWN" in line
    finally:
        stack.stop()
    rc, out = _status(tmp_path)
    assert rc == 1 and "not running" in out
