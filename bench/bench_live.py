"""Live-layer benchmark: one live instance (functions-framework, one worker) against Google's Bigtable
emulator, fed Pub/Sub push envelopes over HTTP like the push subscription sends them.

    python bench/bench_live.py [--duration 8] [--batched 1,2,4,8] [--single 4,16,32] [--latency-s 15]

* anchor   : the same emulator's raw throughput in this run: MutateRows (500 rows per call) rows/s
             and single CheckAndMutateRow calls/s, from one client thread.
* in-process: the writer alone (``LiveWriter.apply_message`` in this process, no HTTP).
* batched  : 500-event messages (a realistic type mix, 20 rooms, fresh event ids), closed loop at
             each concurrency; events/s counted from the function's answers (``counted``).
* single   : single-event messages, same; messages/s.
* latency  : webhook -> ingest (functions-framework) -> Pub/Sub emulator -> push -> live -> Bigtable
             -> LiveReader: each request's events go to their own probe room; a poller records when
             the room shows all of them. Open loop at --latency-rate requests/s of 100 events.

Prints a table and the load average before/after; figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from devtools import emulators  # noqa: E402
from shared.live import schema  # noqa: E402
from shared.live.config import LiveConfig  # noqa: E402

MIX = [
    ("stream_enter", 5),
    ("stream_leave", 3),
    ("product_impression", 50),
    ("product_click", 20),
    ("add_to_cart", 8),
    ("purchase", 4),
    ("like", 6),
    ("comment", 4),
]
TYPES = [t for t, w in MIX for _ in range(w)]
LOGS = ROOT / "var" / "bench-live"


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def make_event(rng: random.Random, run: str, n: int, stream: str, t: float, type_: str | None = None) -> dict:
    type_ = type_ or rng.choice(TYPES)
    ev = {
        "event_id": f"{run}-{n}",
        "type": type_,
        "ts": iso(t),
        "platform": "douyin",
        "stream_id": stream,
        "user_id": f"u{rng.randrange(5000)}",
    }
    if type_ in ("product_impression", "product_click", "add_to_cart", "purchase"):
        ev["item_id"] = f"i{rng.randrange(200)}"
    if type_ == "purchase":
        ev["price"] = round(rng.uniform(5, 200), 2)
        ev["quantity"] = rng.choice((1, 1, 1, 2))
    return ev


def envelope(body: bytes, attrs: dict) -> bytes:
    msg = {"data": base64.b64encode(body).decode(), "attributes": attrs, "messageId": uuid.uuid4().hex}
    return orjson.dumps({"message": msg, "subscription": "projects/bench/subscriptions/viewer-events-live"})


def build_messages(n_msgs: int, size: int, run: str, seed: int) -> list[tuple[bytes, int]]:
    """Messages grouped like ingest's: one (type, stream) per message."""
    rng = random.Random(seed)
    now = time.time()
    out, n = [], 0
    for j in range(n_msgs):
        stream = f"room{j % 20}"
        type_ = rng.choice(TYPES) if size == 1 else None
        evs = []
        for _ in range(size):
            evs.append(make_event(rng, run, n, stream, now - rng.uniform(0, 30), type_))
            n += 1
        if size > 1:  # ingest groups by type: sort so a message is a few types' runs (counts are per event)
            evs.sort(key=lambda e: e["type"])
        body = b"\n".join(orjson.dumps(e) for e in evs)
        out.append((envelope(body, {"type": evs[0]["type"], "stream_id": stream, "count": str(size)}), size))
    return out


def closed_loop(host: str, messages: list[tuple[bytes, int]], concurrency: int, duration: float) -> dict:
    h, _, port = host.partition(":")
    lock = threading.Lock()
    idx = [0]
    counted, sent, errors, lat = [0], [0], [0], []
    stop_at = time.perf_counter() + duration

    def worker():
        conn = http.client.HTTPConnection(h, int(port), timeout=60)
        while time.perf_counter() < stop_at:
            with lock:
                if idx[0] >= len(messages):
                    return
                body, n_events = messages[idx[0]]
                idx[0] += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
            except Exception:
                errors[0] += 1
                conn = http.client.HTTPConnection(h, int(port), timeout=60)
                continue
            dt = time.perf_counter() - t0
            with lock:
                sent[0] += 1
                lat.append(dt)
                if resp.status == 200:  # a CloudEvent function answers 200 with no body
                    counted[0] += n_events
                else:
                    errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
    return {
        "concurrency": concurrency,
        "messages": sent[0],
        "events": counted[0],
        "errors": errors[0],
        "elapsed_s": elapsed,
        "msg_per_s": sent[0] / elapsed,
        "events_per_s": counted[0] / elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "exhausted": idx[0] >= len(messages),
    }


def in_process(cfg: LiveConfig, size: int, seconds: float) -> dict:
    """The writer alone (``LiveWriter.apply_message`` in this process, no HTTP, one message at a
    time): what an instance's code costs without functions-framework and the HTTP client."""
    from shared.live.apply import LiveWriter

    writer = LiveWriter(schema.open_table(cfg), cfg)
    n_msgs = int((12_000 / size + 150) * seconds)
    bodies = [
        base64.b64decode(orjson.loads(m)["message"]["data"])
        for m, _ in build_messages(n_msgs, size, f"I{size}-{uuid.uuid4().hex[:6]}", seed=7 + size)
    ]
    done, t0 = 0, time.perf_counter()
    for body in bodies:
        writer.apply_message(body)
        done += 1
        if time.perf_counter() - t0 > seconds:
            break
    el = time.perf_counter() - t0
    return {"size": size, "messages": done, "msg_per_s": done / el, "events_per_s": done * size / el}


def verify(cfg: LiveConfig, results: dict) -> dict:
    """Every acknowledged event is in Bigtable exactly once: the rooms' counters sum to the count."""
    from shared.live.reader import LiveReader

    reader = LiveReader(cfg=cfg, timeout_s=30)
    total = 0
    for j in range(20):
        t = reader.room(f"room{j}").totals
        total += sum(t[k] for k in ("entries", "leaves", "impressions", "clicks", "add_to_carts", "orders"))
        total += t["like_events"] + t["comments"]
    acked = sum(r["events"] for step in ("batched", "single") for r in results.get(step, []))
    acked += sum(r["messages"] * r["size"] for r in results.get("in_process", []))
    return {"in_bigtable": int(total), "acknowledged": acked}


def anchor(cfg: LiveConfig, seconds: float = 3.0) -> dict:
    from google.cloud.bigtable.data import row_filters as rf
    from google.cloud.bigtable.data.mutations import RowMutationEntry, SetCell

    table = schema.open_table(cfg)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        entries = [RowMutationEntry(f"anchor#{n + i}".encode(), [SetCell("s", b"q", b"v" * 100)]) for i in range(500)]
        table.bulk_mutate_rows(entries)
        n += 500
    rows_s = n / (time.perf_counter() - t0)
    k, t0 = 0, time.perf_counter()
    pred = rf.RowFilterChain([rf.FamilyNameRegexFilter("^x$"), rf.ColumnQualifierRegexFilter(b"^(nope)$")])
    while time.perf_counter() - t0 < seconds:
        table.check_and_mutate_row(
            f"anchorc#{k % 50}".encode(), pred, false_case_mutations=[SetCell("x", f"id{k}".encode(), b"")]
        )
        k += 1
    return {"mutate_rows_per_s": rows_s, "check_and_mutate_per_s": k / (time.perf_counter() - t0)}


def latency(bt_env: dict, cfg: LiveConfig, live_host: str, seconds: float, rate: float, size: int) -> dict:
    from shared.adapters.bus import Bus
    from shared.live.reader import LiveReader
    from shared.signing import signed_headers

    ps = emulators.start_pubsub(log_dir=LOGS)
    os.environ.update(ps.env)
    secret = "bench-live-" + uuid.uuid4().hex
    topic = "bench-live-events"
    store = tempfile.mkdtemp(prefix="bench-live-store-")
    ingest = emulators.start_function(
        "ingest",
        env={**ps.env, "DAIHUO_STORE": store, "DAIHUO_EVENTS_TOPIC": topic, "DAIHUO_SECRET_DOUYIN": secret},
        log_dir=LOGS,
    )
    bus = Bus()
    try:
        bus.ensure_topic(topic)
        bus.ensure_subscription(
            "bench-live-push", topic, push_endpoint=f"http://{live_host}/", min_backoff_s=0.1, max_backoff_s=1
        )
        reader = LiveReader(cfg=cfg, timeout_s=2.0)
        rng = random.Random(7)
        run = uuid.uuid4().hex[:6]
        pending: dict[str, tuple[float, int]] = {}
        done: list[float] = []
        lock = threading.Lock()
        stop = threading.Event()

        def poll():
            while not stop.is_set() or pending:
                with lock:
                    items = list(pending.items())
                for stream, (t_acc, expect) in items:
                    t = reader.room(stream, since_minutes=3).totals
                    seen = sum(t[k] for k in ("entries", "leaves", "impressions", "clicks", "add_to_carts", "orders"))
                    seen += t["like_events"] + t["comments"]
                    if seen >= expect:
                        with lock:
                            done.append(time.perf_counter() - t_acc)
                            pending.pop(stream, None)
                if stop.is_set() and time.perf_counter() - stop_time[0] > 30:
                    return
                time.sleep(0.02)

        stop_time = [0.0]
        poller = threading.Thread(target=poll)
        poller.start()
        h, _, port = ingest.host.partition(":")
        conn = http.client.HTTPConnection(h, int(port), timeout=30)
        t_start = time.perf_counter()
        i = 0
        while time.perf_counter() - t_start < seconds:
            due = t_start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            stream = f"lat-{run}-{i}"
            now = time.time()
            evs = [make_event(rng, f"L{run}-{i}", k, stream, now) for k in range(size)]
            body = b"\n".join(orjson.dumps(e) for e in evs)
            conn.request(
                "POST", "/", body, {"Content-Type": "application/x-ndjson", **signed_headers("douyin", secret, body)}
            )
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                with lock:
                    pending[stream] = (time.perf_counter(), size)
            i += 1
        stop_time[0] = time.perf_counter()
        stop.set()
        poller.join()
        done.sort()
        pct = lambda p: done[min(len(done) - 1, int(p * len(done)))] if done else float("nan")
        return {
            "requests": i,
            "visible": len(done),
            "lost": len(pending),
            "p50_s": pct(0.5),
            "p95_s": pct(0.95),
            "max_s": done[-1] if done else float("nan"),
        }
    finally:
        bus.delete_subscription("bench-live-push")
        bus.close()
        ingest.stop()
        ps.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per throughput step")
    ap.add_argument("--batched", default="1,2,4,8", help="concurrencies for 500-event messages")
    ap.add_argument("--single", default="4,16,32", help="concurrencies for single-event messages")
    ap.add_argument("--threads", type=int, default=16, help="threads of the live instance (one worker)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--latency-s", type=float, default=15.0)
    ap.add_argument("--latency-rate", type=float, default=5.0, help="webhook requests/s in the latency run")
    ap.add_argument("--latency-size", type=int, default=100, help="events per webhook request")
    args = ap.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    bt = emulators.start_bigtable(log_dir=LOGS)
    os.environ.update(bt.env)
    cfg = LiveConfig(table="bench" + uuid.uuid4().hex[:6], shards=args.shards)
    schema.ensure_table(cfg)
    env = {
        **bt.env,
        "DAIHUO_BIGTABLE_PROJECT": cfg.project,
        "DAIHUO_LIVE_TABLE": cfg.table,
        "DAIHUO_LIVE_SHARDS": str(args.shards),
        "DAIHUO_STORE": tempfile.mkdtemp(prefix="bench-live-q-"),
    }
    live = emulators.start_function(
        "live", signature_type="cloudevent", env=env, log_dir=LOGS, workers=1, threads=args.threads
    )
    results: dict = {"load_before": load0[0], "cpus": os.cpu_count()}
    try:
        results["anchor"] = anchor(cfg)
        print(
            f"anchor (same emulator, 1 client thread): MutateRows {results['anchor']['mutate_rows_per_s']:,.0f} rows/s, "
            f"CheckAndMutateRow {results['anchor']['check_and_mutate_per_s']:,.0f} calls/s",
            flush=True,
        )
        results["in_process"] = [in_process(cfg, 500, args.duration), in_process(cfg, 1, args.duration)]
        b, one = results["in_process"]
        print(
            f"in-process writer (no HTTP): {b['events_per_s']:,.0f} events/s in 500-event messages, "
            f"{one['msg_per_s']:,.0f} single-event msg/s",
            flush=True,
        )
        results["batched"] = []
        for c in [int(x) for x in args.batched.split(",") if x]:
            msgs = build_messages(int(120 * args.duration), 500, f"B{c}-{uuid.uuid4().hex[:6]}", seed=c)
            r = closed_loop(live.host, msgs, c, args.duration)
            results["batched"].append(r)
            print(
                f"batched  c={c:<3d} {r['events_per_s']:>9,.0f} events/s  {r['msg_per_s']:>7,.1f} msg/s  "
                f"p50 {r['p50_ms']:.0f} ms p99 {r['p99_ms']:.0f} ms  errors {r['errors']}"
                + ("  (ran out of prepared messages)" if r["exhausted"] else ""),
                flush=True,
            )
        results["single"] = []
        for c in [int(x) for x in args.single.split(",") if x]:
            msgs = build_messages(int(3000 * args.duration), 1, f"S{c}-{uuid.uuid4().hex[:6]}", seed=100 + c)
            r = closed_loop(live.host, msgs, c, args.duration)
            results["single"].append(r)
            print(
                f"single   c={c:<3d} {r['msg_per_s']:>9,.0f} msg/s     p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms  "
                f"errors {r['errors']}" + ("  (ran out of prepared messages)" if r["exhausted"] else ""),
                flush=True,
            )
        results["verified"] = verify(cfg, results)
        print(
            f"verified: the rooms hold {results['verified']['in_bigtable']:,} events, "
            f"{results['verified']['acknowledged']:,} were acknowledged (must be equal)",
            flush=True,
        )
        if args.latency_s > 0:
            results["latency"] = latency(bt.env, cfg, live.host, args.latency_s, args.latency_rate, args.latency_size)
            lat = results["latency"]
            print(
                f"latency  accepted by ingest -> visible in LiveReader ({args.latency_rate:.0f} req/s x {args.latency_size} "
                f"events): p50 {lat['p50_s']:.2f} s  p95 {lat['p95_s']:.2f} s  max {lat['max_s']:.2f} s  "
                f"({lat['visible']}/{lat['requests']} visible, {lat['lost']} not within 30 s)",
                flush=True,
            )
    finally:
        live.stop()
        schema.drop_table(cfg)
        bt.stop()
    results["load_after"] = os.getloadavg()[0]
    best_b = max((r["events_per_s"] for r in results["batched"]), default=0)
    best_s = max((r["msg_per_s"] for r in results["single"]), default=0)
    print(
        f"best: batched {best_b:,.0f} events/s (aim >= 20,000), single {best_s:,.0f} msg/s (aim >= 1,000); "
        f"load average before {results['load_before']:.2f} after {results['load_after']:.2f} ({results['cpus']} cores)"
    )
    (LOGS / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
