"""What the alert rules cost where they run (docs/alerts.md, "Costs and limits").

    python bench/bench_alerts.py [--rounds 30]

* live: ``LiveAlerts.evaluate`` on one room of 45 minutes (20 viewers entering and 20 purchases a
  minute) in Google's Bigtable emulator -- wall time and CPU per evaluation; anchor: the same room
  read alone (``LiveReader.room(since_minutes=41)``, what the rule reads), in the same run.
* clean: ``dead_letter_depths`` on the Pub/Sub emulator, an empty subscription and one with 50 messages
  waiting (what each clean tick adds).

Prints ``RESULT`` lines with the load average; figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import emulators
from shared import alerts
from shared.adapters.bus import Bus
from shared.adapters.storage import open_store
from shared.alert_rules import AlertRules
from shared.pipeline import alerts as batch


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ms(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    bt, ps = emulators.start_bigtable(), emulators.start_pubsub()
    os.environ.update({**bt.env, **ps.env})
    try:
        from shared.live import schema
        from shared.live.apply import LiveWriter
        from shared.live.reader import LiveReader
        from tests.live_helpers import ev, fresh_config, ndjson

        cfg = fresh_config()
        table = schema.open_table(cfg)
        writer, reader = LiveWriter(table, cfg), LiveReader(table, cfg)
        now = time.time()
        t0 = (int(now // 60) - 45) * 60
        evs = [ev("stream_start", "s1", t0, title="bench", host_id="h1")]
        for m in range(45):
            for k in range(20):
                evs.append(ev("stream_enter", "s1", t0 + m * 60 + k, user=f"u{m}-{k}"))
                evs.append(ev("purchase", "s1", t0 + m * 60 + k + 1, user=f"u{m}-{k}", item=f"i{k}", price=10.0))
        for i in range(0, len(evs), 500):
            writer.apply_message(ndjson(evs[i : i + 500]))
        store = open_store(str(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-alerts-{uuid.uuid4().hex[:6]}"))
        live = alerts.LiveAlerts(reader, alerts.AlertSink(store, None), AlertRules(), every_s=0)
        live.evaluate("s1")  # warm
        load0 = os.getloadavg()
        wall, c0 = [], _cpu()
        for _ in range(args.rounds):
            t = time.perf_counter()
            live.evaluate("s1")
            wall.append(time.perf_counter() - t)
        cpu = (_cpu() - c0) / args.rounds
        anchor = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            reader.room("s1", since_minutes=41)
            anchor.append(time.perf_counter() - t)
        print(
            f"RESULT live GMV-drop evaluation: median {statistics.median(wall) * 1e3:.1f} ms, p90 {_ms(wall, 0.9):.1f} ms, "
            f"CPU {cpu * 1e3:.1f} ms per evaluation | anchor, the room read alone: median "
            f"{statistics.median(anchor) * 1e3:.1f} ms, p90 {_ms(anchor, 0.9):.1f} ms | load {load0[0]:.1f} -> "
            f"{os.getloadavg()[0]:.1f}"
        )
        schema.drop_table(cfg)
        bus = Bus()
        dl = f"dl-{uuid.uuid4().hex[:6]}"
        bus.ensure_topic(dl)
        bus.ensure_subscription(f"{dl}-inspect", dl)
        t = time.perf_counter()
        batch.dead_letter_depths(bus, [f"{dl}-inspect"])
        empty = time.perf_counter() - t
        for _ in range(50):
            bus.publish(dl, b"dead")
        t = time.perf_counter()
        got = batch.dead_letter_depths(bus, [f"{dl}-inspect"])[f"{dl}-inspect"]
        full = time.perf_counter() - t
        print(
            f"RESULT dead-letter count per clean tick: empty subscription {empty:.2f} s; 50 waiting: counted {got} "
            f"in {full:.2f} s | load {os.getloadavg()[0]:.1f}"
        )
        bus.close()
    finally:
        bt.stop()
        ps.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
