"""Ingest benchmark: one ingest instance (functions-framework/gunicorn) on loopback, publishing to
Google's Pub/Sub emulator, under a bounded load generator.

    python bench/bench_ingest.py [--duration 15] [--configs 1x8,2x4] [--rate 500]

Scenarios, per server configuration (WORKERS x THREADS):
  batch  : 500-event NDJSON batches from the simulator (one stream per batch, realistic type mix),
           closed loop with `wrk` (if installed; else a Python client) at --connections concurrency.
           Reports requests/s, events/s, p50/p99.
  single : single-event requests, open loop at --rate req/s from a Python client; latency measured
           from each request's scheduled send time (no coordinated omission). Reports p50/p99.

Bodies are signed once per run (a signature is valid for 5 minutes) and re-sent: duplicate
event_ids are accepted by contract, so this measures the real path (verify, parse, validate,
publish, wait for the futures) without the load generator paying for HMAC per request.
The emulator topic has no subscription during the benchmark (messages are not retained).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import requests  # noqa: E402

from devtools import emulators, simulator  # noqa: E402
from shared.adapters.bus import Bus  # noqa: E402
from shared.signing import signed_headers  # noqa: E402

SECRET = "bench-secret"


def make_batches(n_batches: int = 20, size: int = 500) -> list[bytes]:
    sim = simulator.simulate(seed=11, n_streams=4, n_users=4000, n_items=300, platforms=("douyin",))
    rows = [e for e in sim.events if isinstance(e, dict)]
    by_stream: dict[str, list[dict]] = {}
    for e in rows:
        by_stream.setdefault(e["stream_id"], []).append(e)
    bodies = []
    for evs in by_stream.values():
        for i in range(0, len(evs) - size + 1, size):
            bodies.append(b"\n".join(orjson.dumps(e) for e in evs[i : i + size]) + b"\n")
            if len(bodies) >= n_batches:
                return bodies
    return bodies


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def wrk_batch(url: str, body: bytes, duration: int, connections: int) -> dict:
    headers = {"Content-Type": "application/x-ndjson", **signed_headers("douyin", SECRET, body)}
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "body.ndjson").write_bytes(body)
        lua = Path(d) / "post.lua"
        lua.write_text(
            'local f = io.open("%s", "rb"); wrk.body = f:read("*all"); f:close()\n' % (Path(d) / "body.ndjson")
            + 'wrk.method = "POST"\n'
            + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
            + "done = function(summary, latency, requests)\n"
            '  io.write(string.format("JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"non2xx\\": %d, '
            '\\"p50_us\\": %d, \\"p99_us\\": %d, \\"errors\\": %d}\\n", summary.requests, summary.duration, '
            "summary.errors.status, latency:percentile(50), latency:percentile(99), "
            "summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))\n"
            "end\n"
        )
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                "-s",
                str(lua),
                url,
            ],
            capture_output=True,
            text=True,
        )
    if out.returncode:
        raise RuntimeError(f"wrk failed: {out.stderr or out.stdout}")
    out = out.stdout
    m = re.search(r"JSON (\{.*\})", out)
    stats = json.loads(m.group(1))
    non2xx = int(re.search(r"Non-2xx or 3xx responses: (\d+)", out).group(1)) if "Non-2xx" in out else 0
    secs = stats["duration_us"] / 1e6
    return {
        "requests_per_s": stats["requests"] / secs,
        "p50_ms": stats["p50_us"] / 1e3,
        "p99_ms": stats["p99_us"] / 1e3,
        "requests": stats["requests"],
        "non_2xx": non2xx,
        "socket_errors": stats["errors"],
    }


def python_batch(url: str, body: bytes, duration: int, connections: int) -> dict:
    headers = {"Content-Type": "application/x-ndjson", **signed_headers("douyin", SECRET, body)}
    lat: list[float] = []
    bad = [0]
    stop = time.monotonic() + duration
    lock = threading.Lock()

    def worker():
        s = requests.Session()
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            r = s.post(url, data=body, headers=headers, timeout=30)
            mine.append(time.perf_counter() - t)
            if r.status_code != 200:
                bad[0] += 1
        with lock:
            lat.extend(mine)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    secs = time.monotonic() - t0
    return {
        "requests_per_s": len(lat) / secs,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "requests": len(lat),
        "non_2xx": bad[0],
        "socket_errors": 0,
    }


def open_loop_single(url: str, bodies: list[bytes], rate: float, duration: int, threads: int = 16) -> dict:
    """Send single events at `rate` req/s; latency from scheduled time to answer."""
    signed = [(b, {"Content-Type": "application/json", **signed_headers("douyin", SECRET, b)}) for b in bodies]
    n = int(rate * duration)
    start = time.perf_counter() + 0.5
    lat: list[float] = []
    bad = [0]
    lock = threading.Lock()

    def worker(k: int):
        s = requests.Session()
        mine = []
        for i in range(k, n, threads):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            body, h = signed[i % len(signed)]
            r = s.post(url, data=body, headers=h, timeout=30)
            mine.append(time.perf_counter() - due)
            if r.status_code != 200:
                bad[0] += 1
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    achieved = len(lat) / (time.perf_counter() - start)
    return {
        "target_rate": rate,
        "achieved_rate": achieved,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "max_ms": max(lat) * 1e3,
        "requests": len(lat),
        "non_2xx": bad[0],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--configs", default="1x8,2x8", help="WORKERSxTHREADS list")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    log_dir = ROOT / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; load avg {os.getloadavg()[0]:.2f}", file=sys.stderr)
    batches = make_batches()
    batch_events = batches[0].count(b"\n")
    singles = [orjson.dumps(orjson.loads(line)) for line in batches[1].splitlines()[:200]]
    msgs_per_batch = len({(e["type"], e["stream_id"]) for e in map(orjson.loads, batches[0].splitlines())})
    print(
        f"batch body: {batch_events} events, {len(batches[0])} bytes, {msgs_per_batch} Pub/Sub messages",
        file=sys.stderr,
    )
    results = []
    with tempfile.TemporaryDirectory() as store:
        ps = emulators.start_pubsub(log_dir=log_dir)
        try:
            os.environ.update(ps.env)
            bus = Bus()
            bus.ensure_topic("viewer-events")
            for cfg in args.configs.split(","):
                workers, threads = (int(x) for x in cfg.split("x"))
                fn = emulators.start_function(
                    "ingest",
                    env={**ps.env, "DAIHUO_STORE": store, "DAIHUO_SECRET_DOUYIN": SECRET},
                    log_dir=log_dir,
                    workers=workers,
                    threads=threads,
                )
                url = f"http://{fn.host}/"
                try:
                    for b in batches[:3]:  # warm up every worker
                        requests.post(
                            url,
                            data=b,
                            headers={"Content-Type": "application/x-ndjson", **signed_headers("douyin", SECRET, b)},
                            timeout=30,
                        )
                    runner = wrk_batch if shutil.which("wrk") else python_batch
                    b = runner(url, batches[0], args.duration, args.connections)
                    b.update(events_per_s=b["requests_per_s"] * batch_events, loader=runner.__name__)
                    s = open_loop_single(url, singles, args.rate, args.duration)
                    results.append({"config": f"{workers} worker(s) x {threads} threads", "batch": b, "single": s})
                    print(json.dumps(results[-1]), file=sys.stderr)
                finally:
                    fn.stop()
        finally:
            ps.stop()
    print(
        f"\n{'server':28s} {'batch req/s':>11s} {'events/s':>10s} {'p50 ms':>7s} {'p99 ms':>7s} | "
        f"{'single @':>8s} {'achieved':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'non-2xx':>7s}"
    )
    for r in results:
        b, s = r["batch"], r["single"]
        print(
            f"{r['config']:28s} {b['requests_per_s']:11.0f} {b['events_per_s']:10.0f} {b['p50_ms']:7.1f} {b['p99_ms']:7.1f} | "
            f"{s['target_rate']:8.0f} {s['achieved_rate']:8.0f} {s['p50_ms']:7.1f} {s['p99_ms']:7.1f} {b['non_2xx'] + s['non_2xx']:7d}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
