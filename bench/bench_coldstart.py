"""Benchmark: cold starts of the packaged bundles, run as the cloud runs them.

    python bench/bench_coldstart.py [--rounds 3] [--functions ingest,recommend,analytics]

For each function: ``devtools.package`` builds ``<name>.zip`` (exactly what ``make package`` ships), the
bench unzips it, makes the directory READ-ONLY and starts ``functions-framework --source main.py`` in
it as an unprivileged user (``setpriv`` to ``nobody`` when the bench runs as root: root ignores file
modes), with the bundle directory as the working directory and the only source on ``PYTHONPATH``, a fresh
empty ``HOME``, and every third-party package NOT in the function's pinned requirements (nor their
dependencies) hidden from ``import`` (the venv holds more than a deployed function would install:
``numba`` for instance). The time is process start -> the first 200 answer, median of ``--rounds``
fresh processes, beside a bare ``hello`` function bundled and started the same way in the same run
(the anchor: interpreter + functions-framework + Flask). Answers timed:

* ingest: one signed POST of a valid event (Google's Pub/Sub emulator receives it);
* recommend: ``GET ?user_id=...&k=10`` on a 50k-item model (synthetic data, trained once, cached);
* analytics: ``GET /api/streams`` (the first JSON answer) and, in other fresh processes, the overview
  page ``/`` (its charts included), from the analytics tables of a clean run over 1M simulated events that
  pre-rendered the overview's charts (as the clean function does: shared/dashboard/prerender.py; the answer
  is checked to carry them); then ``analytics / on request``: the same page from a store whose clean run
  pre-rendered nothing, so the instance renders the charts itself (the fallback; a reference, no aim).

Files written into a bundle directory during the runs are counted (the cloud's would fail or be lost).
The data (model store, analytics store) is cached under ``--cache``. Ends with a ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.emulators import free_port, start_pubsub  # noqa: E402

AIMS = {"hello": None, "ingest": 0.5, "recommend": 1.0, "analytics": 1.0, "analytics /": 1.0}
REFERENCES = {"analytics / on request"}  # the overview without pre-rendered charts: the fallback, no aim
TOKEN = "bench-operator-token-0123456789"
SECRET = "bench-webhook-secret"
HELLO = """import functions_framework


@functions_framework.http
def hello(request):
    return "ok"
"""


# ---------------------------------------------------------------------------------- the data
def model_store(cache: Path, items: int, users: int, events: int) -> tuple[Path, str]:
    """A store holding a promoted model (synthetic power-law data, ``items`` items), cached."""
    d = cache / f"coldstart-model-i{items}-u{users}-e{events}"
    done = d / "DONE"
    if not done.exists():
        shutil.rmtree(d, ignore_errors=True)
        code = f"""
import sys, json
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "bench")!r})
from bench_recommend_http import synthetic
from shared.adapters.storage import open_store
from shared.serving.data import write_clean_from_frames
from shared.serving.train import run_train
store = open_store({str(d / "store")!r})
ev, cat, users, streams = synthetic({users}, {items}, {events}, 40)
write_clean_from_frames(store, ev, cat, run_id="bench")
res = run_train(store, None)
open({str(done)!r}, "w").write(json.dumps({{"user": users[0], "version": res.version}}))
"""
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
        print(f"  model store built in {time.monotonic() - t:.0f}s: {d}", flush=True)
    return d / "store", json.loads(done.read_text())["user"]


def analytics_store(cache: Path, events: int, charts: bool = True) -> Path:
    """A store after one clean run over ``events`` simulated raw rows (bench_clean's data), cached. ``charts``:
    the run pre-renders the overview's charts, as the clean function does (its hook); without: the page
    renders them on request (the fallback)."""
    d = cache / f"coldstart-analytics{'-charts' if charts else ''}-n{events}"
    done = d / "DONE"
    if not done.exists():
        from bench_clean import store_for  # (bench/ is on sys.path when run as a script)

        raw = store_for(events, cache, [events])
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(raw / "raw", d / "store" / "raw", copy_function=os.link)
        code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from shared.adapters.storage import open_store
from shared.pipeline.clean import CleanConfig, run_clean
hook = None
if {charts!r}:
    from shared.dashboard.prerender import write_overview as hook
run_clean(open_store({str(d / "store")!r}), None, CleanConfig(threads=2), charts=hook)
"""
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
        done.write_text("ok")
        print(f"  analytics store built in {time.monotonic() - t:.0f}s: {d}", flush=True)
    return d / "store"


# ------------------------------------------------------------------------------- the bundles
def allowed_modules(requirements: Path) -> set[str] | None:
    """Top-level modules of the pinned distributions and everything they require (recursively)."""
    import re
    from importlib import metadata

    def name_of(req: str) -> str:
        return re.match(r"\s*([A-Za-z0-9._-]+)", req).group(1)  # type: ignore[union-attr]

    todo = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            todo.append(name_of(line))
    seen: set[str] = set()
    mods: set[str] = set()
    by_dist: dict[str, list[str]] = {}
    for mod, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(dist.lower().replace("_", "-"), []).append(mod)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        mods.update(by_dist.get(name, []))
        mods.update(by_dist.get(dist.metadata["Name"].lower().replace("_", "-"), []))
        for r in dist.requires or []:
            # an extra's requirement is not installed; other markers (python, platform) are kept: the guard
            # then allows a little more than pip would install, never less
            if "extra ==" not in r.replace("extra==", "extra =="):
                todo.append(name_of(r))
    return mods


GUARD = '''"""bench_coldstart: hide the packages a deployed bundle would not have (sitecustomize)."""
import sys, json
_BLOCKED = frozenset(json.loads({blocked!r}))


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the bundle's requirements)", name=name)
        return None


sys.meta_path.insert(0, _Hide())
'''


def prepare_bundle(name: str, work: Path) -> Path:
    """dist zip -> unzipped, read-only directory (+ a guard dir hiding unpinned packages)."""
    from importlib import metadata

    from devtools.package import build

    dest = work / "bundles" / name
    if name == "hello":
        dest.mkdir(parents=True)
        (dest / "main.py").write_text(HELLO)
        (dest / "requirements.txt").write_text("functions-framework\n")
    else:
        b = build(name, work / "dist")
        with zipfile.ZipFile(b.path) as zf:
            zf.extractall(dest)
    allowed = allowed_modules(dest / "requirements.txt")
    installed = {m for m in metadata.packages_distributions() if m.isidentifier() and not m.startswith("_")}
    blocked = sorted(installed - allowed - set(sys.stdlib_module_names))
    guard = work / "guards" / name
    guard.mkdir(parents=True)
    (guard / "sitecustomize.py").write_text(GUARD.format(blocked=json.dumps(blocked)))
    for p in [dest, *dest.rglob("*"), guard, *guard.rglob("*")]:  # read-only for everyone
        mode = p.stat().st_mode
        p.chmod((mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    for p in [dest, *dest.rglob("*"), guard]:
        if p.is_dir():
            p.chmod(0o555)
    return dest


def snapshot(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def as_unprivileged() -> list[str]:
    """Run the function as ``nobody`` when we are root (root ignores the read-only modes)."""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    return []


# ---------------------------------------------------------------------------------- the runs
def cold_start(name: str, target: str, bundle: Path, work: Path, env: dict, request) -> float:
    port = free_port()
    exe = Path(sys.executable).parent / "functions-framework"
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work / "scratch"))
    home.chmod(0o777)
    e = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{work / 'guards' / name}:{bundle}",
        "HOME": str(home),  # a fresh empty home per process: nothing cached from an earlier instance
        "TMPDIR": str(home),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log = open(work / "logs" / f"{name}-{port}.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*as_unprivileged(), str(exe), "--target", target, "--source", "main.py", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        cwd=bundle,
        env=e,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - t0 < 120:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: see {log.name}")
            try:
                r = request(f"http://127.0.0.1:{port}")
                if r.status_code == 200:
                    return time.perf_counter() - t0
                if r.status_code not in (502, 503):
                    log.flush()
                    tail = Path(log.name).read_text(errors="replace")[-2500:]
                    raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:300]}\n{tail}")
            except requests.ConnectionError:
                time.sleep(0.005)
        raise RuntimeError(f"{name}: no answer in 120 s")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
        log.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--functions", default="ingest,recommend,analytics")
    ap.add_argument("--cache", default="var/bench-data")
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000, help="model: synthetic clean events")
    ap.add_argument("--clean-events", type=int, default=1_000_000, help="analytics: raw rows cleaned")
    ap.add_argument("--json", help="write the results to this file")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    cache = Path(a.cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    names = [n for n in a.functions.split(",") if n]
    print(f"bench_coldstart: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    stores = {}
    if "recommend" in names:
        stores["recommend"] = model_store(cache, a.items, a.users, a.events)
    if "analytics" in names:
        stores["analytics"] = analytics_store(cache, a.clean_events)
        stores["analytics-nocharts"] = analytics_store(cache, a.clean_events, charts=False)
    work = Path(tempfile.mkdtemp(prefix="daihuo-coldstart-"))
    for sub in ("scratch", "logs"):
        (work / sub).mkdir()
        (work / sub).chmod(0o777)
    work.chmod(0o755)
    for s in stores.values():  # the local store takes lock files: writable by the unprivileged user
        st = s[0] if isinstance(s, tuple) else s
        subprocess.run(["chmod", "-R", "a+rwX", str(st)], check=True)
    pubsub = None
    results: dict[str, list[float]] = {}
    writes: dict[str, list[str]] = {}
    try:
        env_common: dict[str, str] = {}
        plans = [("hello", "hello", "hello", {}, lambda u: requests.get(u + "/", timeout=30))]
        if "ingest" in names:
            pubsub = start_pubsub(log_dir=work / "logs")
            from shared.adapters.bus import Bus

            os.environ.update(pubsub.env)
            Bus().ensure_topic("viewer-events")
            from shared.signing import signed_headers

            def ingest_req(u):
                ev = {
                    "event_id": f"cs-{time.monotonic_ns()}",
                    "type": "like",
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "platform": "douyin",
                    "stream_id": "s-1",
                    "user_id": "u-1",
                }
                body = json.dumps(ev).encode()
                h = {**signed_headers("douyin", SECRET, body), "Content-Type": "application/json"}
                return requests.post(u + "/", data=body, headers=h, timeout=30)

            ingest_env = {**pubsub.env, "DAIHUO_SECRET_DOUYIN": SECRET, "DAIHUO_STORE": str(work / "scratch" / "store")}
            plans.append(("ingest", "ingest", "ingest", ingest_env, ingest_req))
        if "recommend" in names:
            st, user = stores["recommend"]
            plans.append(
                (
                    "recommend",
                    "recommend",
                    "recommend",
                    {"DAIHUO_STORE": str(st), "DAIHUO_RECOMMEND_LIVE": "off"},
                    lambda u, user=user: requests.get(u + "/", params={"user_id": user, "k": 10}, timeout=30),
                )
            )
        if "analytics" in names:
            aenv = {"DAIHUO_STORE": str(stores["analytics"]), "DAIHUO_OPERATOR_TOKENS": TOKEN}
            auth = {"Authorization": f"Bearer {TOKEN}"}
            plans.append(
                ("analytics", "analytics", "analytics", aenv, lambda u: requests.get(u + "/api/streams", headers=auth))
            )

            def page(u, pre: bool):
                r = requests.get(u + "/", headers=auth, timeout=30)
                if r.status_code == 200 and ('id="charts-note"' in r.text) == pre:
                    raise RuntimeError(f"the overview {'rendered' if pre else 'did not render'} its charts on request")
                return r

            plans.append(("analytics /", "analytics", "analytics", aenv, lambda u: page(u, True)))
            nenv = {**aenv, "DAIHUO_STORE": str(stores["analytics-nocharts"])}
            plans.append(("analytics / on request", "analytics", "analytics", nenv, lambda u: page(u, False)))
        bundles = {}
        for label, fn, target, env, req in plans:
            if fn not in bundles:
                bundles[fn] = prepare_bundle(fn, work)
                before = snapshot(bundles[fn])
                writes[fn] = []
            for _ in range(a.rounds):
                secs = cold_start(fn, target, bundles[fn], work, {**env_common, **env}, req)
                results.setdefault(label, []).append(secs)
            writes[fn] = sorted(snapshot(bundles[fn]) - before)
            med = statistics.median(results[label])
            aim = AIMS.get(label)
            print(
                f"  {label:12s} cold start -> first 200: median {med:.2f}s "
                f"({', '.join(f'{x:.2f}' for x in results[label])})"
                + (
                    f"  aim < {aim}s: {'met' if med < aim else 'MISSED'}"
                    if aim
                    else ("  (reference)" if label in REFERENCES else "  (the anchor)")
                )
                + (f"  {len(writes[fn])} files written into the bundle" if writes[fn] else ""),
                flush=True,
            )
    finally:
        if pubsub is not None:
            pubsub.stop()
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    anchor = statistics.median(results["hello"])
    print()
    print("| function | cold start -> first 200 (median) | bare function (same run) | aim |")
    print("|---|---|---|---|")
    for label, xs in results.items():
        aim = AIMS.get(label)
        what = f"< {aim} s" if aim else ("reference" if label in REFERENCES else "anchor")
        print(f"| {label} | {statistics.median(xs):.2f} s | {anchor:.2f} s | {what} |")
    summary = ", ".join(f"{k} {statistics.median(v):.2f}s" for k, v in results.items() if k != "hello")
    print(f"RESULT coldstart: {summary} vs bare function {anchor:.2f}s; load average {os.getloadavg()[0]:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({k: statistics.median(v) for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
