"""``make demo``: a simulated live-stream evening through the local cloud.

Brings the stack up (Google's Pub/Sub emulator, every function under functions-framework, the
scheduler), signs and sends simulated webhooks to ingest, and shows what arrived on the bus. Fails
loudly (non-zero exit) if any step fails.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import orjson

from shared.localcloud import Stack
from shared import simulator


def step(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run(args) -> int:
    stack = Stack(port_base=args.port_base, store=args.store, fresh=True)
    step("starting the local cloud (Pub/Sub emulator, functions, scheduler)")
    t0 = time.time()
    stack.start()
    try:
        print(f"   up in {time.time() - t0:.1f}s: " + ", ".join(f"{n} {stack.url(n)}" for n in stack.functions()))
        stack.bus.ensure_subscription("demo-tap", "viewer-events", ack_deadline_s=60)

        step(f"simulating {args.streams} streams, {args.users} viewers (seed {args.seed}, faults: {args.faults})")
        sim = simulator.simulate(seed=args.seed, n_streams=args.streams, n_users=args.users, n_items=args.items,
                                 faults=None if args.faults == "none" else args.faults)
        print(f"   {len(sim.catalog)} catalog records, {len(sim.events)} viewer-event rows")

        step("sending signed webhooks to ingest")
        res = simulator.send(sim, stack.url("ingest"), stack.secrets, batch_size=500, concurrency=4, progress=True)
        print(f"   accepted {res.accepted}, rejected {res.rejected} (quarantined with reasons), "
              f"failed batches {res.failed_batches}")
        if res.failed_batches:
            raise SystemExit("ingest failed for some batches: see var/stack/logs/ingest.log")
        for reason, n in Counter(res.reject_reasons).most_common(6):
            print(f"     {n:6d}  {reason}")

        step("what arrived on the bus (topic viewer-events)")
        by_type: Counter = Counter()
        messages = 0
        deadline = time.time() + 60
        while sum(by_type.values()) < res.accepted and time.time() < deadline:
            msgs = stack.bus.pull("demo-tap", 1000, timeout_s=5)
            stack.bus.ack("demo-tap", [m.ack_id for m in msgs])
            messages += len(msgs)
            for m in msgs:
                by_type[m.attributes["type"]] += int(m.attributes["count"])
        print(f"   {sum(by_type.values())} events in {messages} messages")
        for t, n in by_type.most_common():
            print(f"     {t:20s} {n:8d}")
        if sum(by_type.values()) != res.accepted:
            raise SystemExit(f"expected {res.accepted} events on the bus, saw {sum(by_type.values())}")
        if args.stay:
            step("staying up (Ctrl-C to stop)")
            while True:
                time.sleep(1)
    finally:
        stack.stop()
    step(f"done in {time.time() - t0:.1f}s")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shared.demo")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--streams", type=int, default=6)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--faults", default="default", help="default | none")
    ap.add_argument("--store", default="local")
    ap.add_argument("--port-base", type=int, default=8080)
    ap.add_argument("--stay", action="store_true", help="keep the stack up at the end")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
