"""End-to-end freshness of the live layer: an event accepted by ingest -> visible in the live read.

    python bench/bench_live_e2e.py [--rate 20] [--events 400] [--batch 1] [--readers 4] [--warmup 5]

The real local path: signed webhooks -> ingest (functions-framework) -> Pub/Sub emulator -> push
subscription -> live (functions-framework, CloudEvent) -> Bigtable emulator -> ``LiveReader.room``.

* After ``--warmup`` webhooks (not measured: the function's first message builds its Bigtable
  client), open loop at a steady ``--rate`` events/s (``--batch`` events per webhook); every webhook's events
  go to their own probe room, so "visible" is exact: the room's counters show all of them.
* latency = (first read that shows the webhook's events) - (ingest's 200 answer); the poller threads
  (``--readers``) re-read every pending room, so the figure includes up to one poll cycle (printed).
* anchor, same run, same messages: a second push subscription on the same topic delivers every
  message to a bare HTTP receiver in this process; (receipt) - (ingest's answer) is Pub/Sub's
  publish -> push delivery alone, the floor under the live path on this machine.
* applied: when the live function logged the room's message as applied (its log's wall clock, ms),
  minus the answer: delivery + the function's work, without the read.
* exactness: at the end every probe room holds exactly its events (none lost, none doubled).

Prints p50/p95/max of both, the poll cycle, the load average before/after; the aim is p95 <= 5 s.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from devtools import emulators  # noqa: E402
from shared.live import schema  # noqa: E402
from shared.live.config import LiveConfig  # noqa: E402

LOGS = ROOT / "var" / "bench-live-e2e"
# one webhook's events: a viewer enters, looks, clicks and buys (a purchase reads the room's slots)
CYCLE = ("stream_enter", "product_impression", "product_click", "add_to_cart", "purchase", "like")
COUNTED = ("entries", "impressions", "clicks", "add_to_carts", "orders", "like_events")


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def events_of(run: str, i: int, size: int, now: float) -> list[dict]:
    out = []
    for k in range(size):
        t = CYCLE[(i + k) % len(CYCLE)]
        ev = {
            "event_id": f"{run}-{i}-{k}",
            "type": t,
            "ts": iso(now),
            "platform": "douyin",
            "stream_id": f"e2e-{run}-{i}",
            "user_id": f"u{k}",
        }
        if t in ("product_impression", "product_click", "add_to_cart", "purchase"):
            ev["item_id"] = f"i{k % 7}"
        if t == "purchase":
            ev.update(price=19.9, quantity=1)
        out.append(ev)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


class Anchor:
    """A bare push endpoint: records when each message's events arrive (perf_counter)."""

    def __init__(self):
        self.seen: dict[str, float] = {}
        self.room_of: dict[str, str] = {}  # Pub/Sub message id (the same on every subscription) -> room
        seen, room_of = self.seen, self.room_of

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                t = time.perf_counter()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                msg = json.loads(body).get("message") or {}
                for line in base64.b64decode(msg.get("data") or b"").split(b"\n"):
                    if line:
                        room = orjson.loads(line)["stream_id"]
                        seen.setdefault(room, t)
                        room_of[msg.get("messageId") or ""] = room
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def run(args) -> dict:
    from shared.adapters.bus import Bus
    from shared.live.reader import LiveReader
    from shared.signing import signed_headers

    LOGS.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    bt = emulators.start_bigtable(log_dir=LOGS)
    ps = emulators.start_pubsub(log_dir=LOGS)
    os.environ.update({**bt.env, **ps.env})
    cfg = LiveConfig(table="e2e" + uuid.uuid4().hex[:6])
    schema.ensure_table(cfg)
    secret = "bench-e2e-" + uuid.uuid4().hex
    topic = "bench-e2e-" + uuid.uuid4().hex[:6]
    store = tempfile.mkdtemp(prefix="bench-live-e2e-")
    env = {
        **bt.env,
        **ps.env,
        "DAIHUO_STORE": store,
        "DAIHUO_EVENTS_TOPIC": topic,
        "DAIHUO_SECRET_DOUYIN": secret,
        "DAIHUO_BIGTABLE_PROJECT": cfg.project,
        "DAIHUO_LIVE_TABLE": cfg.table,
    }
    ingest = emulators.start_function("ingest", env=env, log_dir=LOGS)
    live_log = LOGS / "live.log"
    log_offset = live_log.stat().st_size if live_log.exists() else 0
    live = emulators.start_function("live", signature_type="cloudevent", env=env, log_dir=LOGS)
    anchor = Anchor()
    bus = Bus()
    subs = (f"{topic}-live", f"{topic}-anchor")
    try:
        bus.ensure_topic(topic)
        # as the local stack declares them (infra/topology.json), but a short first backoff
        bus.ensure_subscription(
            subs[0], topic, push_endpoint=f"http://{live.host}/", min_backoff_s=0.1, max_backoff_s=1
        )
        bus.ensure_subscription(subs[1], topic, push_endpoint=anchor.url, min_backoff_s=0.1, max_backoff_s=1)
        reader = LiveReader(cfg=cfg, timeout_s=2.0)
        run_id = uuid.uuid4().hex[:6]
        lock = threading.Lock()
        pending: dict[str, float] = {}  # room -> perf_counter of ingest's answer
        accepted_at: dict[str, float] = {}
        accepted_wall: dict[str, float] = {}
        visible: dict[str, float] = {}
        cycles: list[float] = []
        stop = threading.Event()
        want = args.batch

        def poll(k: int) -> None:
            while not stop.is_set():
                t_cycle = time.perf_counter()
                with lock:
                    mine = [r for j, r in enumerate(pending) if j % args.readers == k]
                for room in mine:
                    t = reader.room(room, since_minutes=5).totals
                    if sum(t[c] for c in COUNTED) >= want:
                        t_seen = time.perf_counter()
                        with lock:
                            visible[room] = t_seen
                            pending.pop(room, None)
                cycles.append(time.perf_counter() - t_cycle)
                time.sleep(0.01)

        pollers = [threading.Thread(target=poll, args=(k,), daemon=True) for k in range(args.readers)]
        for p in pollers:
            p.start()
        h, _, port = ingest.host.partition(":")
        conn = http.client.HTTPConnection(h, int(port), timeout=30)

        def post(body: bytes) -> tuple[int, bytes]:
            headers = {"Content-Type": "application/x-ndjson", **signed_headers("douyin", secret, body)}
            conn.request("POST", "/", body, headers)
            resp = conn.getresponse()
            return resp.status, resp.read()

        # warm-up (not measured): the first messages build the function's Bigtable client and the
        # emulator's first rows; in the cloud the function keeps one warm instance (infra/live.tf)
        for w in range(args.warmup):
            post(b"\n".join(orjson.dumps(e) for e in events_of(f"warm{run_id}", w, len(CYCLE), time.time())))
        t_warm = time.perf_counter()
        while args.warmup and time.perf_counter() - t_warm < 60:
            if all(
                sum(reader.room(f"e2e-warm{run_id}-{w}").totals[c] for c in COUNTED) == len(CYCLE)
                for w in range(args.warmup)
            ):
                break
            time.sleep(0.1)
        n_req = max(1, args.events // args.batch)
        interval = args.batch / args.rate
        t_start = time.perf_counter()
        errors = 0
        for i in range(n_req):
            time.sleep(max(0.0, t_start + i * interval - time.perf_counter()))
            status, answer = post(b"\n".join(orjson.dumps(e) for e in events_of(run_id, i, args.batch, time.time())))
            t_acc = time.perf_counter()
            if status != 200 or json.loads(answer)["accepted"] != args.batch:
                errors += 1
                continue
            room = f"e2e-{run_id}-{i}"
            with lock:
                accepted_at[room] = t_acc
                accepted_wall[room] = time.time() - (time.perf_counter() - t_acc)
                pending[room] = t_acc
        sent_s = time.perf_counter() - t_start
        deadline = time.perf_counter() + args.wait_s
        while time.perf_counter() < deadline:
            with lock:
                if not pending:
                    break
            time.sleep(0.1)
        stop.set()
        for p in pollers:
            p.join()
        lat = [visible[r] - accepted_at[r] for r in visible]
        anc = [anchor.seen[r] - accepted_at[r] for r in accepted_at if r in anchor.seen]
        # the live function's own log (wall clock, ms): when it finished applying each room's last message
        applied: dict[str, float] = {}
        for line in live_log.read_bytes()[log_offset:].splitlines():
            if line.startswith(b"{") and b'"live applied"' in line:
                doc = json.loads(line)
                room = anchor.room_of.get(str(doc.get("message_id")))
                if room:
                    at = datetime.fromisoformat(doc["time"]).timestamp()
                    applied[room] = max(applied.get(room, 0.0), at)
        app = [applied[r] - accepted_wall[r] for r in accepted_wall if r in applied]
        # exactness: every probe room holds exactly its events
        exact = sum(
            1 for r in accepted_at if sum(reader.room(r, since_minutes=10).totals[c] for c in COUNTED) == args.batch
        )
        return {
            "rate_events_per_s": args.rate,
            "events_per_webhook": args.batch,
            "webhooks": n_req,
            "events": n_req * args.batch,
            "ingest_errors": errors,
            "send_seconds": sent_s,
            "visible": len(lat),
            "not_visible": len(pending),
            "exact_rooms": exact,
            "p50_s": pct(lat, 0.5),
            "p95_s": pct(lat, 0.95),
            "max_s": max(lat) if lat else float("nan"),
            "anchor_delivered": len(anc),
            "anchor_p50_s": pct(anc, 0.5),
            "anchor_p95_s": pct(anc, 0.95),
            "anchor_max_s": max(anc) if anc else float("nan"),
            "applied_p50_s": pct(app, 0.5),
            "applied_p95_s": pct(app, 0.95),
            "poll_cycle_p50_s": pct(cycles, 0.5),
            "poll_cycle_p95_s": pct(cycles, 0.95),
            "load_before": load0[0],
            "load_after": os.getloadavg()[0],
            "cpus": os.cpu_count(),
        }
    finally:
        for s in subs:
            bus.delete_subscription(s)
        bus.close()
        anchor.stop()
        ingest.stop()
        live.stop()
        schema.drop_table(cfg)
        ps.stop()
        bt.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="events per second, steady (open loop)")
    ap.add_argument("--events", type=int, default=400, help="events in all")
    ap.add_argument("--batch", type=int, default=1, help="events per webhook (each webhook its own probe room)")
    ap.add_argument("--readers", type=int, default=4, help="poller threads re-reading the pending rooms")
    ap.add_argument("--warmup", type=int, default=5, help="webhooks sent (and waited for) before measuring")
    ap.add_argument("--wait-s", type=float, default=60.0, help="how long to wait for the last events after sending")
    args = ap.parse_args(argv)
    r = run(args)
    print(
        f"accepted by ingest -> visible in LiveReader.room, {r['events']} events at {r['rate_events_per_s']:g} events/s "
        f"({r['events_per_webhook']} per webhook, {r['webhooks']} webhooks in {r['send_seconds']:.1f} s):\n"
        f"  live path        p50 {r['p50_s']:.3f} s  p95 {r['p95_s']:.3f} s  max {r['max_s']:.3f} s   "
        f"({r['visible']} visible, {r['not_visible']} not within {args.wait_s:g} s; aim p95 <= 5 s)\n"
        f"  anchor: Pub/Sub publish -> push delivery alone (same messages)  p50 {r['anchor_p50_s']:.3f} s  "
        f"p95 {r['anchor_p95_s']:.3f} s  max {r['anchor_max_s']:.3f} s  ({r['anchor_delivered']} delivered)\n"
        f"  of which: written to Bigtable by the live function (its log, ms clock)  p50 {r['applied_p50_s']:.3f} s  "
        f"p95 {r['applied_p95_s']:.3f} s\n"
        f"  poll cycle (included in the live figure) p50 {r['poll_cycle_p50_s'] * 1000:.0f} ms "
        f"p95 {r['poll_cycle_p95_s'] * 1000:.0f} ms\n"
        f"  exact: {r['exact_rooms']}/{r['webhooks']} probe rooms hold exactly their events; ingest errors "
        f"{r['ingest_errors']}\n"
        f"  load average before {r['load_before']:.2f} after {r['load_after']:.2f} ({r['cpus']} cores)"
    )
    (LOGS / "results.json").write_text(json.dumps(r, indent=2))
    return 0 if r["not_visible"] == 0 and r["exact_rooms"] == r["webhooks"] and not r["ingest_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
