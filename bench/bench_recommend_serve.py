"""Recommend for the heaviest verified viewers at catalogue scale: in process and over HTTP.

    python bench/bench_recommend_serve.py                      # 50k items, 1M user ids, 4M events (cached model)
    python bench/bench_recommend_serve.py --rate 1500 --duration 15
    python bench/bench_recommend_serve.py --rebuild            # retrain the cached model

The issue's aim (50k items / 1M users, the heaviest users): < 200 µs median in process, >= 1,500 req/s
per instance over HTTP with p99 < 20 ms. This bench measures exactly that case and nothing easier:

1. data + model: the synthetic power-law world of ``bench_recommend_http.synthetic`` written as clean/
   Parquet, ``run_train`` as the function runs it (gate, promote). The store is cached under
   var/bench-data/serve-<sizes>-<hash of the trees of shared/reco, shared/serving> (a change to the
   model code retrains);
2. viewers: the --viewers users with the longest histories (distinct items), each with an Ed25519
   viewer token (``shared.identity``), so every answer is *personal* (a stranger's answer skips the
   history, the expensive part); each request names a stream;
3. in process, one thread: the model's ``recommend`` alone and the whole ``Recommender.handle``
   (parse, identity, filters, reasons, JSON body), with the compiled kernel and with the numpy path
   (``DAIHUO_RECOMMEND_KERNEL=0``: the anchor, what served before the kernel), each in
   --in-process-runs fresh processes, alternating: the median of their medians and their range (one
   process's timings on this VM are 20-40 % off another's for the same code);
4. HTTP: the recommend function under functions-framework (gunicorn, WORKERS x THREADS) and, as the
   anchor, a bare ``hello`` function served the same way; ``wrk`` closed loop (--connections) and
   paced at --rate (latency from each request's due time, bench/wrk/ingest.lua: no coordinated
   omission), every request signed for its viewer. CPU per request is the server's process-tree CPU.

The machine has 2 cores: wrk shares them with the server, so req/s here is a floor for an instance.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import WRK_INSTALL, run_wrk, tree_cpu, write_requests  # noqa: E402
from bench_recommend_http import synthetic, viewer_tokens  # noqa: E402

from devtools import emulators  # noqa: E402
from shared.adapters.storage import open_store  # noqa: E402

AIM_IN_PROCESS_US = 200.0
AIM_RPS, AIM_P99_MS = 1500.0, 20.0
HELLO = '''"""Bare anchor of bench/bench_recommend_serve.py: answer a small JSON body."""
import functions_framework


@functions_framework.http
def hello(request):
    return {"items": [], "user_id": request.args.get("user_id")}
'''


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


MODEL_CODE = (
    "shared/reco",
    "shared/serving",
    "shared/action_weights.py",
    "shared/settings.py",
)  # what the model depends on


def tree_hash(paths=MODEL_CODE) -> str:
    """A short hash of the committed trees of ``paths`` (+ "-dirty" when they have local changes)."""
    import hashlib

    try:
        trees = [
            subprocess.run(
                ["git", "rev-parse", f"HEAD:{p}"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            for p in paths
        ]
        dirty = subprocess.run(["git", "status", "--porcelain", *paths], cwd=ROOT, capture_output=True, text=True)
        return hashlib.sha1(" ".join(trees).encode()).hexdigest()[:12] + ("-dirty" if dirty.stdout.strip() else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "nogit"


def build(args, cache: Path) -> dict:
    """Write the world and train; returns the viewers file's content (cached beside the store)."""
    import pandas as pd

    from shared.serving.data import write_clean_from_frames
    from shared.serving.train import run_train

    if cache.exists():
        shutil.rmtree(cache)
    tmp = cache.with_name(cache.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    store = open_store(str(tmp / "store"))
    t = time.perf_counter()
    ev, cat, _users, streams = synthetic(args.users, args.items, args.events, args.streams)
    write_clean_from_frames(store, ev, cat, run_id="bench")
    print(f"data: {len(ev):,} events, {len(cat):,} items written in {time.perf_counter() - t:.1f}s", flush=True)
    per_user = ev[["user_id", "item_id", "stream_id"]].drop_duplicates(["user_id", "item_id"])
    hist = per_user.groupby("user_id", observed=True).size().sort_values(ascending=False, kind="stable")
    heavy = hist.head(args.viewers)
    # each viewer's request names the stream they touched most (a room they are in)
    own = ev.loc[ev["user_id"].isin(heavy.index), ["user_id", "stream_id"]]
    room = own.groupby(["user_id", "stream_id"], observed=True).size().reset_index(name="n")
    room = room.sort_values(["user_id", "n"], ascending=[True, False]).drop_duplicates("user_id")
    room_of = dict(zip(room["user_id"].astype(str), room["stream_id"].astype(str)))
    users_total = int(ev["user_id"].nunique())
    del ev, per_user, own
    t = time.perf_counter()
    res = run_train(store, None)
    train_s = time.perf_counter() - t
    print(f"train: {train_s:.1f}s, promoted={res.promoted}, version {res.version}", flush=True)
    info = {
        "viewers": [{"user_id": str(u), "history": int(n), "stream_id": room_of[str(u)]} for u, n in heavy.items()],
        "streams": list(streams),
        "users": users_total,
        "items": int(len(cat)),
        "train_s": train_s,
        "built": pd.Timestamp.now("UTC").isoformat(),
    }
    (tmp / "viewers.json").write_text(json.dumps(info))
    tmp.rename(cache)
    return info


def worker_cpu(proc) -> dict[int, float]:
    """CPU seconds per process of ``proc``'s group (the gunicorn master and its workers)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    pgid = os.getpgid(proc.pid)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(f[2]) == pgid:
                out[int(d)] = (int(f[11]) + int(f[12])) / tick
    return out


def raw_get(host: str, path: str, token: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


def concurrent_cpu(r, viewers, tokens, n: int, threads: int) -> tuple[float, float]:
    """``handle()`` from ``threads`` request threads at once (as a gunicorn worker's threads run it):
    the process's CPU per call (µs) and its voluntary context switches per call. A call that releases the
    GIL (a system call, most numpy sorts, reductions and fancy indexing) while other threads are
    runnable hands the GIL over and waits to get it back: each such switch costs CPU (caches refilled),
    so this figure, not the one-thread median, is what an instance with concurrent requests pays."""
    import resource

    per = max(1, n // threads)
    failed: list[str] = []

    def work(off: int) -> None:
        for k in range(per):
            v = viewers[(k * 7 + off) % len(viewers)]
            args = {"user_id": v["user_id"], "stream_id": v["stream_id"], "k": "10"}
            a = r.handle("GET", args, {"Authorization": "Bearer " + tokens[v["user_id"]]})
            if a.status != 200:  # a thread's exception would not reach the caller: recorded, raised below
                failed.append(f"in-process answer {a.status}: {a.json}")
                return

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if failed:
        raise RuntimeError(failed[0])
    calls = per * threads
    cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / calls * 1e6
    return cpu, (ru1.ru_nvcsw - ru0.ru_nvcsw) / calls


def in_process(store, viewers, tokens, kernel: str, n: int, threads: int = 8) -> dict:
    """The model's recommend and the whole handle(), one thread, kernel on or off; then handle()'s CPU
    per call from one thread and from ``threads`` threads at once (``concurrent_cpu``)."""
    os.environ["DAIHUO_RECOMMEND_KERNEL"] = kernel
    from shared.serving.recommend import ModelHolder, Recommender
    from shared.settings import settings

    r = Recommender(ModelHolder(store, refresh_s=3600))
    loaded = r.holder.get()
    model = loaded.served.model
    if kernel == "1" and not model.warm_kernel():
        raise RuntimeError("the compiled kernel did not load")
    cfg = settings()
    div = dict(max_per_category=cfg.recommend_max_per_category, near_duplicate=cfg.recommend_near_duplicate or None)
    now = max(time.time(), model.reference_day * 86400.0)
    model_us, handle_us, personal = [], [], 0
    # two loops, not one alternating: a request must not find the same viewer's data warm in the caches
    # from the call just before it (the kernel is memory-bound: ~5k scratch rows touched per request)
    for rnd in range(2):  # round 0 warms (first-touch pages, the token cache); round 1 is measured
        for k in range(n):
            v = viewers[k % len(viewers)]
            t = time.perf_counter()
            # as the service asks it (no live state here): the stream's showcase only, the diversity settings
            allowed = loaded.served.showcase.get(v["stream_id"]) if cfg.recommend_showcase_only else None
            model.recommend(v["user_id"], 10, stream_id=v["stream_id"], now=now, allowed_idx=allowed, **div)
            if rnd:
                model_us.append((time.perf_counter() - t) * 1e6)
        for k in range(n):
            v = viewers[k % len(viewers)]
            args = {"user_id": v["user_id"], "stream_id": v["stream_id"], "k": "10"}
            t = time.perf_counter()
            a = r.handle("GET", args, {"Authorization": "Bearer " + tokens[v["user_id"]]})
            dh = time.perf_counter() - t
            if a.status != 200:
                raise RuntimeError(f"in-process answer {a.status}: {a.json}")
            if rnd:
                handle_us.append(dh * 1e6)
                personal += bool(a.json["personal"])
    threaded = {t: concurrent_cpu(r, viewers, tokens, n, t) for t in (1, threads)}
    r.holder.stop()
    os.environ.pop("DAIHUO_RECOMMEND_KERNEL", None)
    return {
        "cpu_us_1": threaded[1][0],
        "csw_1": threaded[1][1],
        "cpu_us_n": threaded[threads][0],
        "csw_n": threaded[threads][1],
        "model_us": float(np.median(model_us)),
        "model_p99_us": float(np.percentile(model_us, 99)),
        "handle_us": float(np.median(handle_us)),
        "handle_p99_us": float(np.percentile(handle_us, 99)),
        "personal": personal / n,
    }


def http_runs(args, store_dir: Path, viewers, tokens, keys: str, log_dir: Path) -> dict:
    out: dict = {}
    hello_src = log_dir / "hello" / "main.py"
    hello_src.parent.mkdir(parents=True, exist_ok=True)
    hello_src.write_text(HELLO)
    env = {"DAIHUO_STORE": str(store_dir), "DAIHUO_VIEWER_KEYS": keys, "DAIHUO_MODEL_REFRESH_S": "3600"}
    for name, target, source in (("recommend", "recommend", None), ("hello", "hello", hello_src)):
        fn = emulators.start_function(
            name if source is None else "bench-hello",
            target,
            env=env,
            log_dir=log_dir,
            workers=args.workers,
            threads=args.threads,
            source=source,
            timeout=120,
        )
        try:
            paths = [f"/?user_id={v['user_id']}&stream_id={v['stream_id']}&k=10" for v in viewers]
            reqs = [raw_get(fn.host, p, tokens[v["user_id"]]) for p, v in zip(paths, viewers)]
            s = requests.Session()
            for k in range(300 * args.workers):  # warm every worker (model load, kernel, token cache)
                v = viewers[k % len(viewers)]
                a = s.get(
                    f"http://{fn.host}{paths[k % len(paths)]}",
                    headers={"Authorization": "Bearer " + tokens[v["user_id"]]},
                    timeout=60,
                )
                if a.status_code != 200 or (source is None and not a.json()["personal"]):
                    raise RuntimeError(f"{name} warm-up answer {a.status_code}: {a.text[:300]}")
            reqfile = log_dir / f"{name}.req"
            write_requests(reqfile, reqs)
            # the loop above used one keep-alive connection, so one worker: wrk's connections reach every
            # worker (a worker still loading its model inside a measured scenario was 1-2 s of its CPU)
            warm = run_wrk(f"http://{fn.host}/", reqfile, 3, args.connections, min(2, args.connections), 0.0)
            if warm["non_2xx"] or warm["socket_errors"]:
                raise RuntimeError(f"{name} warm-up: {warm['non_2xx']} non-2xx, {warm['socket_errors']} errors")
            for mode in ("closed", "paced"):
                conns = args.connections if mode == "closed" else args.paced_connections
                threads = min(2, conns) if mode == "closed" else conns
                interval = 0.0 if mode == "closed" else conns / args.rate * 1e6
                l0, c0, w0 = load(), tree_cpu(fn.proc), worker_cpu(fn.proc)
                r = run_wrk(f"http://{fn.host}/", reqfile, args.duration, conns, threads, interval)
                w1 = worker_cpu(fn.proc)
                busy = sorted((w1[p] - w0.get(p, 0.0) for p in w1), reverse=True)
                r.update(
                    load=(l0, load()),
                    cpu_ms_per_req=(tree_cpu(fn.proc) - c0) / max(1, r["requests"]) * 1e3,
                    worker_share=[round(b / max(1e-9, sum(busy)), 2) for b in busy[: args.workers]],
                )
                out[f"{name} {mode}"] = r
                print(
                    f"{name:9s} {mode:6s} ({conns} conns{'' if mode == 'closed' else f', {args.rate:.0f}/s due'}): "
                    f"{r['requests_per_s']:7.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                    f"non-2xx {r['non_2xx']}  errors {r['socket_errors']}  server CPU {r['cpu_ms_per_req']:.2f} ms/req"
                    f" (busiest workers' shares {r['worker_share']})"
                    f"  (load {r['load'][0]} -> {r['load'][1]})",
                    flush=True,
                )
        finally:
            fn.stop()
    return out


def in_process_child(cache: Path, kernel: str, n: int, threads: int) -> int:
    """One fresh process, one path (``--in-process-child``): its figures as one JSON line on stdout."""
    info = json.loads((cache / "viewers.json").read_text())
    viewers = info["viewers"]
    _, tokens = viewer_tokens(v["user_id"] for v in viewers)
    r = in_process(open_store(str(cache / "store")), viewers, tokens, kernel, n, threads)
    print("CHILD " + json.dumps(r), flush=True)
    return 0


def in_process_runs(args, cache: Path) -> dict:
    """``--in-process-runs`` fresh processes per path, alternating (numpy path, kernel, numpy path, ...).
    On this VM one process's timings sit 20-40 % above or below another's for the same code and data
    (measured 150-280 µs for the model: where its arrays landed in memory, not the load), so one
    process is not a figure: the median of the runs' medians is printed, with their range."""
    runs: dict[str, list[dict]] = {"0": [], "1": []}
    for i in range(args.in_process_runs):
        for kernel in ("0", "1"):
            l0 = load()
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--in-process-child",
                    kernel,
                    "--model-dir",
                    str(cache),
                    "--requests",
                    str(args.requests),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            line = next((x for x in out.stdout.splitlines() if x.startswith("CHILD ")), None)
            if out.returncode != 0 or line is None:
                raise RuntimeError(f"in-process run failed ({out.returncode}): {out.stderr[-2000:]}")
            r = json.loads(line[6:])
            runs[kernel].append(r)
            print(
                f"  run {i + 1}, {'kernel' if kernel == '1' else 'numpy path':10s}: model {r['model_us']:5.0f} µs, "
                f"handle() {r['handle_us']:5.0f} µs; CPU per handle() from 1 / {args.threads} threads "
                f"{r['cpu_us_1']:4.0f} / {r['cpu_us_n']:4.0f} µs, context switches {r['csw_1']:.2f} / {r['csw_n']:.2f}"
                f"  (load {l0})",
                flush=True,
            )
    ip = {}
    for kernel, what in (("0", "numpy path (anchor)"), ("1", "compiled kernel")):
        rs = runs[kernel]
        agg = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
        agg["model_range"] = (min(r["model_us"] for r in rs), max(r["model_us"] for r in rs))
        agg["handle_range"] = (min(r["handle_us"] for r in rs), max(r["handle_us"] for r in rs))
        ip[kernel] = agg
        print(
            f"in process, {what:20s}: model.recommend median {agg['model_us']:5.0f} µs "
            f"(runs {agg['model_range'][0]:.0f}-{agg['model_range'][1]:.0f}, p99 {agg['model_p99_us']:5.0f})"
            f"  handle() median {agg['handle_us']:5.0f} µs (runs {agg['handle_range'][0]:.0f}-"
            f"{agg['handle_range'][1]:.0f}, p99 {agg['handle_p99_us']:5.0f})  personal {agg['personal']:.0%}"
            f"  ({len(rs)} processes)",
            flush=True,
        )
        print(
            f"  {'':20s}  handle() CPU per call, 1 thread {agg['cpu_us_1']:4.0f} µs, {args.threads} threads at once"
            f" {agg['cpu_us_n']:4.0f} µs ({agg['cpu_us_n'] / max(agg['cpu_us_1'], 1e-9):.2f}x); voluntary context"
            f" switches per call {agg['csw_1']:.2f} / {agg['csw_n']:.2f}",
            flush=True,
        )
    return ip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=4_000_000, help="4M: the heaviest 300 have ~225-item histories")
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--viewers", type=int, default=300, help="the heaviest N users (longest histories)")
    ap.add_argument("--requests", type=int, default=2000, help="in process: requests per path")
    ap.add_argument(
        "--in-process-runs", type=int, default=3, help="in process: fresh processes per path (median of their medians)"
    )
    ap.add_argument("--in-process-child", choices=("0", "1"), help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8, help="HTTP: threads per worker; in process: threads at once")
    ap.add_argument("--connections", type=int, default=16, help="wrk closed loop connections")
    ap.add_argument("--rate", type=float, default=1500.0, help="paced: requests/s due")
    ap.add_argument("--paced-connections", type=int, default=8, help="paced: connections = wrk threads")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--no-http", action="store_true")
    ap.add_argument("--rebuild", action="store_true", help="retrain the cached model")
    ap.add_argument("--cache", default=str(ROOT / "var" / "bench-data"))
    ap.add_argument(
        "--model-dir", help="use this built world (a serve-* directory) whatever the code's hash (A/B runs)"
    )
    args = ap.parse_args(argv)
    if args.in_process_child:
        return in_process_child(Path(args.model_dir), args.in_process_child, args.requests, args.threads)
    if not args.no_http and not shutil.which("wrk"):
        print(WRK_INSTALL, file=sys.stderr)
        return 2
    print(f"bench_recommend_serve: {os.cpu_count()} cores, load average {load()}", flush=True)
    key = f"serve-i{args.items}-u{args.users}-e{args.events}-s{args.streams}-v{args.viewers}-{tree_hash()}"
    cache = Path(args.model_dir) if args.model_dir else Path(args.cache) / key
    if args.rebuild or not (cache / "viewers.json").exists():
        print(f"building {cache} (cached afterwards)", flush=True)
        info = build(args, cache)
    else:
        info = json.loads((cache / "viewers.json").read_text())
        print(f"cached model store {cache} (trained in {info['train_s']:.0f}s on {info['built']})", flush=True)
    viewers = info["viewers"]
    h = np.array([v["history"] for v in viewers])
    print(
        f"world: {info['items']:,} items, {info['users']:,} users; the {len(viewers)} heaviest viewers' histories: "
        f"median {np.median(h):.0f}, min {h.min()}, max {h.max()} distinct items",
        flush=True,
    )
    keys, tokens = viewer_tokens(v["user_id"] for v in viewers)
    ip = in_process_runs(args, cache)
    http = {}
    if not args.no_http:
        with tempfile.TemporaryDirectory(prefix="daihuo-serve-") as tmp:
            http = http_runs(args, cache / "store", viewers, tokens, keys, Path(tmp))
    k = ip["1"]
    print(
        f"RESULT recommend in process (heaviest verified viewers, {info['items']:,} items): handle() "
        f"{k['handle_us']:.0f} µs, model {k['model_us']:.0f} µs (numpy path {ip['0']['handle_us']:.0f} / "
        f"{ip['0']['model_us']:.0f} µs); aim < {AIM_IN_PROCESS_US:.0f} µs: "
        f"{'met' if k['handle_us'] < AIM_IN_PROCESS_US else 'MISSED'} (handle), "
        f"{'met' if k['model_us'] < AIM_IN_PROCESS_US else 'MISSED'} (model)"
    )
    if http:
        c, p, hc = http["recommend closed"], http["recommend paced"], http["hello closed"]
        ok = c["requests_per_s"] >= AIM_RPS and c["p99_ms"] < AIM_P99_MS
        okp = p["requests_per_s"] >= 0.98 * args.rate and p["p99_ms"] < AIM_P99_MS
        print(
            f"RESULT recommend HTTP {args.workers}x{args.threads}: closed loop {c['requests_per_s']:.0f} req/s p99 "
            f"{c['p99_ms']:.1f} ms ({c['cpu_ms_per_req']:.2f} ms CPU/req; hello anchor {hc['requests_per_s']:.0f} "
            f"req/s p99 {hc['p99_ms']:.1f} ms); paced {args.rate:.0f}/s: {p['requests_per_s']:.0f} req/s p99 "
            f"{p['p99_ms']:.1f} ms; aim >= {AIM_RPS:.0f} req/s p99 < {AIM_P99_MS:.0f} ms: closed "
            f"{'met' if ok else 'MISSED'}, paced {'met' if okp else 'MISSED'} (load now {load()})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
