"""``make demo``: a simulated live-stream evening through the whole local cloud.

1. brings the stack up (Google's Pub/Sub and Bigtable emulators, every function under
   functions-framework, the topics and push subscriptions of infra/topology.json, the scheduler);
2. signs and sends the simulated webhooks of several streams and thousands of viewers, with the
   host side (stream start/end, presentation slots, showcase, sold out), to ingest; while they are
   sent it prints the live numbers every few seconds from the live layer (``LiveReader`` on the
   Bigtable table the ``live`` function keeps): viewers now, orders, GMV so far, the item on stage;
   then waits until the live layer equals the simulator's live truth;
3. lets the scheduler's ticks drive archive → clean, and Pub/Sub drive clean → train
   (``events-cleaned``) → ``model-published``;
4. asks recommend for a few viewers and prints the answers with their reasons;
5. prints the streams' headline KPIs from the analytics function, the live totals beside them (they
   must agree: the demo fails otherwise) and where the dashboard is;
6. an A/B test of recommendations (``--experiment-viewers``, 0 skips it): ``models/EXPERIMENT.json``
   splits viewers between the serving model and the stream's bestsellers, simulated viewers
   (``devtools.rec_sim``) ask recommend, see the lists and react (impressions, clicks, purchases with
   the answer's ``rec_id``) through ingest; after the next clean run it prints the arms from
   ``/api/experiments`` with their intervals (docs/experiments.md);
7. shuts down (``--stay`` keeps it up).

Any failed step exits non-zero with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import requests

from devtools import simulator
from devtools.localcloud import Stack


class DemoFailed(SystemExit):
    pass


def step(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def wait(pred, timeout: float, what: str, interval: float = 1.0, progress=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = pred()
        if value:
            return value
        if progress:
            print(f"\r   {progress()} ({time.monotonic() - t0:.0f}s)", end="", file=sys.stderr, flush=True)
        time.sleep(interval)
    raise DemoFailed(f"demo failed: timed out after {timeout:.0f}s waiting for {what}; logs in var/stack/logs/")


def run(args) -> int:
    import logging

    from shared import layout
    from shared.adapters.storage import open_store
    from shared.layout import load_manifest

    logging.getLogger("daihuo.localcloud").setLevel(logging.WARNING)  # ticks are in var/stack/logs
    t_start = time.time()
    stack = Stack(
        port_base=args.port_base,
        store=args.store,
        fresh=True,
        overrides={"archive-every-minute": args.archive_every, "clean-hourly": args.clean_every},
        extra_env={"DAIHUO_MODEL_REFRESH_S": "2"},
    )
    step("starting the local cloud: Pub/Sub and Bigtable emulators, the functions, subscriptions, scheduler")
    stack.start()
    try:
        print("   " + "\n   ".join(f"{n:10s} {stack.url(n)}" for n in stack.functions()))
        print(f"   store: {stack.env['DAIHUO_STORE']}   logs: {stack.log_dir}")
        print(
            f"   schedules (demo pace): archive every {args.archive_every:g}s, clean every {args.clean_every:g}s "
            "(infra/topology.json: every minute / hourly)"
        )
        store = open_store(stack.env["DAIHUO_STORE"])

        step(
            f"simulating an evening: {args.streams} streams, {args.users} viewers, {args.items} products "
            f"(seed {args.seed}, faults {args.faults})"
        )
        timing = demo_timing(args.start)
        sim = simulator.simulate(
            seed=args.seed,
            n_streams=args.streams,
            n_users=args.users,
            n_items=args.items,
            mean_viewers_per_stream=args.viewers,
            faults=demo_faults(args.faults, timing),
            host_events=True,
            **timing,
        )
        n_host = sum(1 for r in sim.events if isinstance(r, dict) and r.get("type") in simulator.HOST_TYPES)
        print(
            f"   {len(sim.catalog)} catalog records, {len(sim.events)} event rows ({n_host} host-side: streams, "
            f"slots, showcase; {len(sim.truth.fault_log)} injected faults); the evening started {sim.cfg.start}"
        )
        if "until" in timing:
            print(
                f"   dated now: streams of {sim.cfg.stream_min_hours * 60:.0f}-{sim.cfg.stream_max_hours * 60:.0f} min "
                f"in the last {(time.time() * 1000 - sim.cfg.start_ms()) / 60000:.0f} min, sent as they would arrive "
                "now (on time; no rows hours late); what happens after now (later refunds) is not sent"
            )
        else:
            print(
                f"   a replay of {sim.cfg.start}: rows older than the late threshold are flagged late, as they would be"
            )

        step("sending signed webhooks to ingest; the live layer while they arrive (LiveReader on Bigtable)")
        live = LiveWatch(stack, sim) if "live" in stack.functions() else None
        if live is not None:
            res = live.send_and_watch(args.live_every)
        else:  # a stack without the live function (Stack(functions=[...]))
            res = simulator.send(sim, stack.url("ingest"), stack.secrets, batch_size=500, concurrency=4, progress=True)
        print(f"   accepted {res.accepted}, rejected {res.rejected} (quarantined with reasons)")
        if res.failed_batches:
            raise DemoFailed(f"demo failed: {res.failed_batches} ingest batches failed; see var/stack/logs/ingest.log")
        for reason, n in sorted(res.reject_reasons.items(), key=lambda kv: -kv[1])[:5]:
            print(f"     {n:5d}  {reason}")
        if live is not None:
            live.wait_for_truth(args.timeout)

        step("archive → clean run on the scheduler's ticks")
        lines_in: dict[str, int] = {}

        def archived() -> int:
            import gzip

            for k in store.list(layout.RAW):
                if k not in lines_in:
                    lines_in[k] = gzip.decompress(store.get(k)).count(b"\n")
            return sum(lines_in.values())

        def progress():
            m, _ = load_manifest(store)
            return (
                f"archived {archived()}/{res.accepted} events in {len(lines_in)} raw objects, "
                f"{len(m.clean_files)} clean runs committed"
            )

        def all_cleaned():
            if archived() < res.accepted:
                return None
            m, _ = load_manifest(store)
            return m if set(lines_in) <= set(m.done) else None

        wait(all_cleaned, args.timeout, "archive and clean to process every accepted event", progress=progress)
        print()
        reports = [json.loads(store.get(run.report)) for run in load_manifest(store)[0].runs]
        tot = lambda k: sum(int(r.get(k, 0) or 0) for r in reports)
        print(
            f"   {len(reports)} clean runs: rows in {tot('rows_in')}, clean {tot('rows_out')}, "
            f"duplicates dropped {tot('duplicates_in_run') + tot('duplicates_seen_before')}, "
            f"late {tot('late')}, clock-skew corrected {tot('ts_corrected')}"
        )
        skew = [m for m in sim.truth.fault_log.values() if m["kind"] == "skew"]
        late_faults = sum(1 for m in sim.truth.fault_log.values() if m["kind"] == "late")
        print(
            f"   the simulator injected {len(skew)} device-clock faults ({sum(m['skew_s'] < 0 for m in skew)} behind, "
            f"{sum(m['skew_s'] > 0 for m in skew)} ahead: behind by more than DAIHUO_LATE_AFTER_S -> late, ahead by "
            f"more than DAIHUO_MAX_FUTURE_S -> corrected; smaller offsets pass unflagged) and {late_faults} rows "
            "delivered hours late"
        )
        dropped: dict[str, int] = {}
        for r in reports:
            for k, v in (r.get("dropped_by_reason") or {}).items():
                dropped[k] = dropped.get(k, 0) + int(v)
        if dropped:
            print("   quarantined by clean: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))

        step("train runs on events-cleaned (once per committed clean run); the gate promotes or keeps")
        manifest = load_manifest(store)[0]
        wait(
            lambda: _trained_on(store, manifest),
            args.timeout,
            "a model version trained on every committed clean file",
            progress=lambda: f"{len(_versions(store))} model versions written",
        )
        print()
        _print_versions(store)
        serving = _print_serving(store, "serving after the last clean run")

        step("recommend: top products for a few viewers, with the reasons")
        clean_users = _sample_users(store, sim, n=3)
        for user, stream in clean_users + [("new-viewer-0001", clean_users[0][1])]:
            # as the viewer app does: with a short-lived token the platform signed for this viewer
            auth = {"Authorization": "Bearer " + stack.viewer_token(user)}
            r = wait(
                lambda: _get(stack.url("recommend"), {"user_id": user, "stream_id": stream, "k": 5}, auth),  # noqa: B023 (called in this iteration)
                60,
                "recommend to answer",
            )
            body = r.json()
            print(
                f"   viewer {user} in {stream}  [strategy: {body['strategy']}, model {body['model_version']}, "
                f"{body.get('timing_ms', {}).get('total', '?')} ms]"
            )
            for it in body["items"]:
                reason = it["reason"]
                text = reason.get("text_zh") or reason.get("text_en") or json.dumps(reason, ensure_ascii=False)
                print(f"     {it['score']:8.3f}  {it['title'][:28]:28s}  {text}")

        step("headline KPIs per stream (analytics function)")
        operator = {"Authorization": "Bearer " + stack.identity["operator_token"]}  # docs/dashboard.md
        r = requests.get(stack.url("analytics") + "api/streams", params={"limit": 20}, headers=operator, timeout=30)
        if r.status_code != 200:
            raise DemoFailed(f"demo failed: analytics answered {r.status_code}: {r.text[:300]}")
        streams = r.json().get("streams", [])
        print(
            f"   {'stream':14s} {'platform':9s} {'viewers':>7s} {'peak':>5s} {'orders':>6s} {'GMV ¥':>10s} {'GPM ¥':>8s} {'CTR':>6s} {'conv':>6s}"
        )
        for s in streams:
            num = lambda k: float(s.get(k) or 0)  # noqa: B023 (used in this iteration)
            print(
                f"   {s['stream_id']:14s} {str(s.get('platform', '')):9s} {num('unique_viewers'):7.0f} "
                f"{num('peak_concurrent'):5.0f} {num('orders'):6.0f} {num('gmv'):10.2f} "
                f"{num('gpm'):8.1f} {num('ctr'):6.1%} {num('conversion_rate'):6.1%}"
            )
        if live is not None:
            live.compare_with_batch(streams)
        _print_alerts(stack.url("analytics"), operator)
        if args.experiment_viewers > 0 and serving is not None:
            _run_experiment(stack, store, sim, serving, args, operator)
        step("the model serving now (models/LATEST.json)")
        _print_versions(store)
        now_serving = _print_serving(store, "serving at the end")
        if now_serving != serving:
            print(f"   (it moved from {serving} while the demo ran: a later train run promoted it)")
        out = _save_dashboard(stack.url("analytics"), [s["stream_id"] for s in streams], operator)
        print(
            f"\n   dashboard: {stack.url('analytics')} while the stack is up (make demo DEMO_ARGS=--stay, or make up);"
            f"\n   a static copy of its pages was written to {out}/index.html"
        )
        if args.stay:
            step("staying up: Ctrl-C to stop")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        stack.stop()
    step(f"done in {time.time() - t_start:.0f}s")
    return 0


#: ``--start now``: an evening that happened in the last hour, so that a send of a minute or two is on
#: time (every row within ``DAIHUO_LATE_AFTER_S`` = 1 h of its ts when ingest receives it): it starts
#: 50 minutes before now, streams start within 9 minutes and last 15-36 minutes, refunds follow their
#: purchase by minutes, and what would happen after now is not sent.
NOW_TIMING = {"window_hours": 0.15, "stream_hours": 0.4, "stream_min_hours": 0.25, "stream_max_hours": 0.6}
NOW_LEAD_MIN = 50
NOW_REFUND_HOURS = 0.08


def demo_timing(value: str, now: float | None = None) -> dict:
    """The simulator's timing knobs for ``--start``: ``now`` (default) -- an evening that ends before
    now and is sent on time (``NOW_TIMING``, ``until`` = now); a date (RFC 3339, UTC) -- the
    simulator's evening at that date (a replay: sent later, its rows arrive late, as they would)."""
    from datetime import UTC, datetime, timedelta

    if value != "now":
        return {"start": value}
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC).replace(microsecond=0)
    start = t.replace(second=0) - timedelta(minutes=NOW_LEAD_MIN)
    iso = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"start": iso(start), "until": iso(t), "refund_hours": NOW_REFUND_HOURS, **NOW_TIMING}


def demo_faults(value: str, timing: dict):
    """The fault rates: ``none``; ``default`` -- the simulator's, except that a demo dated now sends
    no late rows (a row delivered hours late cannot arrive in a send that lasts a minute)."""
    import dataclasses

    if value == "none":
        return None
    if "until" in timing:
        return dataclasses.replace(simulator.DEFAULT_FAULTS, late=0.0)
    return value


# the live figures compared with the batch KPIs (analytics /api/streams) at the end: same names, same dedupe
LIVE_VS_BATCH = (
    "unique_viewers",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "units",
    "gmv",
    "refunds",
    "likes",
)


LABELS = {"unique_viewers": "viewers", "add_to_carts": "carts", "impressions": "impressions", "gmv": "GMV ¥"}


def _fmt(key: str, value: float) -> str:
    return f"{value:11,.2f}" if key == "gmv" else f"{value:11,.0f}"


class LiveWatch:
    """The live layer seen from the demo: ``LiveReader`` (shared/live/reader.py) on the stack's table."""

    def __init__(self, stack: Stack, sim):
        from shared.live.reader import LiveReader

        self.sim = sim
        self.stack = stack
        # a whole room's read grows with the stream; the emulator shares the 2 cores with the writers
        self.reader = LiveReader(timeout_s=15.0)
        self.unavailable: str | None = None
        self.read_s: list[float] = []  # how long each room read took
        self.titles = {c["item_id"]: c.get("title") or c["item_id"] for c in sim.catalog}
        self.stream_ids = sorted(sim.truth.streams["stream_id"])
        self.last: dict[str, tuple] = {}

    def rooms(self) -> dict[str, object]:
        """The rooms the live layer has; {} (and the reason in ``self.unavailable``) if it did not answer."""
        from shared.live.reader import LiveUnavailable

        out = {}
        for sid in self.stream_ids:
            t0 = time.perf_counter()
            try:
                room = self.reader.room(sid)
                self.read_s.append(time.perf_counter() - t0)
            except LiveUnavailable as exc:
                self.unavailable = str(exc)
                return {}
            if room.exists:
                out[sid] = room
        self.unavailable = None
        return out

    def print_rooms(self, elapsed: float, sent: str) -> None:
        rooms = self.rooms()
        if self.unavailable:
            print(f"   [{elapsed:5.1f}s] live layer unavailable: {self.unavailable}", flush=True)
        lines = []
        for sid, room in rooms.items():
            t = room.totals
            state = (t["viewers_now"], t["orders"], round(t["gmv"], 2), room.on_air)
            if self.last.get(sid) == state:
                continue  # unchanged since the last print (an ended room, or one not reached yet)
            self.last[sid] = state
            if room.info.get("ended_at"):
                peak = max((m["viewers"] for m in room.minutes), default=0)
                lines.append(
                    f"     {sid:8s} ended  peak viewers {peak:4.0f}  orders {t['orders']:5.0f}  GMV ¥{t['gmv']:11,.2f}  "
                    f"{len(room.sold_out)} items sold out at the end"
                )
            elif room.on_air:
                stage = room.on_stage
                if stage:
                    price = f" ¥{stage['price']:g}" if stage.get("price") is not None else ""
                    what = f"on stage: {self.titles.get(stage['item_id'], stage['item_id'])[:22]}{price}"
                else:
                    what = "between presentations"
                lines.append(
                    f"     {sid:8s} ON AIR viewers now {t['viewers_now']:5.0f}  orders {t['orders']:5.0f}  "
                    f"GMV ¥{t['gmv']:11,.2f}  {what}"
                )
            else:  # events, but neither its stream_start nor anything in the last 30 minutes yet (docs/live.md)
                lines.append(
                    f"     {sid:8s} ...    viewers now {t['viewers_now']:5.0f}  orders {t['orders']:5.0f}  "
                    f"GMV ¥{t['gmv']:11,.2f}  (its stream_start not applied yet)"
                )
        if lines:
            print(f"   [{elapsed:5.1f}s] {sent}")
            print("\n".join(lines), flush=True)

    def send_and_watch(self, every: float):
        """Send the evening in a thread; every ``every`` seconds print the rooms that changed."""
        result: dict[str, object] = {}

        def sender() -> None:
            try:
                result["res"] = simulator.send(
                    self.sim,
                    self.stack.url("ingest"),
                    self.stack.secrets,
                    batch_size=500,
                    concurrency=4,
                    progress=False,
                )
            except BaseException as exc:  # reported by the main thread
                result["error"] = exc

        th = threading.Thread(target=sender, name="demo-send", daemon=True)
        t0 = time.monotonic()
        th.start()
        while th.is_alive():
            th.join(every)
            self.print_rooms(time.monotonic() - t0, "sending ..." if th.is_alive() else "all rows sent")
        if "error" in result:
            raise DemoFailed(f"demo failed: sending to ingest: {result['error']}")
        return result["res"]

    def wait_for_truth(self, timeout: float) -> None:
        """Until every room equals the simulator's live truth (all rows sent, late ones included);
        prints the rooms as they catch up."""
        truth = self.sim.live_truth(include_late=True)
        keys = ("entries", "leaves", "orders", "units", "gmv", "impressions", "clicks", "unique_viewers")
        t0 = time.monotonic()

        def caught_up() -> bool:
            rooms = self.rooms()
            return all(
                sid in rooms and all(round(rooms[sid].totals[k], 2) == round(d[k], 2) for k in keys)
                for sid, d in truth.streams.items()
            )

        next_print = t0 + 1
        while not caught_up():
            if time.monotonic() - t0 > timeout:
                raise DemoFailed(
                    f"demo failed: the live layer did not reach the simulator's truth within {timeout:.0f}s; "
                    "logs in var/stack/logs/live.log"
                )
            if time.monotonic() >= next_print:
                self.print_rooms(time.monotonic() - t0, "the live layer catching up")
                next_print = time.monotonic() + 3
            time.sleep(0.5)
        self.print_rooms(time.monotonic() - t0, "caught up")
        n = sum(d["events"] for d in truth.streams.values())
        print(
            f"   live layer = the simulator's live truth for all {len(truth.streams)} rooms ({n} unique events counted "
            f"once, {sum(truth.duplicates.values())} duplicate copies refused, {len(truth.late_event_ids)} late "
            f"events counted in their rooms after they ended), {time.monotonic() - t0:.1f}s after the last webhook"
        )
        for sid, room in self.rooms().items():
            t = room.totals
            best = max(room.slots, key=lambda d: d["sales"]["gmv"], default=None)
            star = f"best presentation: {self.titles.get(best['item_id'], best['item_id'])[:20]} " if best else ""
            print(
                f"     {sid:8s} unique viewers {t['unique_viewers']:5.0f}  buyers {t['buyers']:4.0f}  "
                f"net GMV ¥{t['net_gmv']:11,.2f} (refunds ¥{t['refund_amount']:,.2f})  {len(room.slots)} presentations; "
                + (f"{star}(¥{best['sales']['gmv']:,.2f} in its slot)" if best else "")
            )

    def compare_with_batch(self, batch_streams: list[dict]) -> None:
        """The live totals beside the batch KPIs of each stream; they must agree (same dedupe)."""
        rooms = self.rooms()
        if self.unavailable:
            raise DemoFailed(f"demo failed: the live layer did not answer: {self.unavailable}")
        reads = sorted(self.read_s)
        print(
            f"\n   {len(reads)} room reads (LiveReader.room, whole stream): median {reads[len(reads) // 2] * 1000:.0f} ms, "
            f"max {reads[-1] * 1000:.0f} ms"
        )
        print("   live totals (Bigtable, seconds) vs batch KPIs (clean + analytics, the scheduler's runs):")
        print(f"   {'stream':9s} {'':6s} " + " ".join(f"{LABELS.get(k, k):>11s}" for k in LIVE_VS_BATCH))
        bad = []
        for s in batch_streams:
            sid = s["stream_id"]
            room = rooms.get(sid)
            if room is None:
                bad.append((sid, "not in the live layer"))
                continue
            lv = [round(float(room.totals[k]), 2) for k in LIVE_VS_BATCH]
            bv = [round(float(s.get(k) or 0), 2) for k in LIVE_VS_BATCH]
            print(f"   {sid:9s} {'live':6s} " + " ".join(_fmt(k, v) for k, v in zip(LIVE_VS_BATCH, lv)))
            print(f"   {'':9s} {'batch':6s} " + " ".join(_fmt(k, v) for k, v in zip(LIVE_VS_BATCH, bv)))
            bad += [(sid, k, a, b) for k, a, b in zip(LIVE_VS_BATCH, lv, bv) if a != b]
        if bad:
            raise DemoFailed(f"demo failed: live and batch disagree: {bad[:10]}")
        print("   live and batch agree on every stream")


def _print_alerts(base: str, headers: dict) -> None:
    """The alerts the evening raised (docs/alerts.md), as the dashboard's /alerts lists them."""
    step("alerts (clean, live and train rules; /alerts)")
    r = requests.get(base + "api/alerts", headers=headers, timeout=30)
    if r.status_code != 200:
        raise DemoFailed(f"demo failed: /api/alerts answered {r.status_code}: {r.text[:300]}")
    got = r.json()["alerts"]
    if not got:
        print("   none fired")
    for a in got[:10]:
        print(f"   {a['time']}  {a['rule']:18s} {a['subject'][:28]:28s} {a['message'][:90]}")


def _run_experiment(stack, store, sim, version: str, args, operator: dict) -> None:
    """An A/B test on simulated traffic: the serving model (pinned) vs the stream's bestsellers."""
    from concurrent.futures import ThreadPoolExecutor

    from devtools.rec_sim import RecTraffic
    from shared import layout

    name = "demo-ranker-vs-popular"
    step(f"an A/B test: the model {version} vs the stream's bestsellers, viewers split by a hash (docs/experiments.md)")
    cfg = {
        "experiment": name,
        "arms": [
            {"name": "control", "weight": 0.5, "recipe": "popular"},
            {"name": "ranker", "weight": 0.5, "recipe": "model", "version": version},
        ],
    }
    store.put(layout.EXPERIMENT, json.dumps(cfg).encode(), content_type="application/json")
    print(f"   {layout.EXPERIMENT}: {json.dumps(cfg)}")
    traffic = RecTraffic(sim, seed=args.seed)
    reqs = traffic.requests(args.experiment_viewers)
    url = stack.url("recommend")

    def ask(q):
        user, stream = q
        auth = {"Authorization": "Bearer " + stack.viewer_token(user)}
        r = _get(url, {"user_id": user, "stream_id": stream, "k": 8}, auth)
        return r.json() if r is not None else None

    wait(lambda: (ask(reqs[0]) or {}).get("experiment"), 60, "recommend to read the experiment config")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, reqs))
    if any(a is None for a in answers):
        raise DemoFailed("demo failed: recommend did not answer every viewer of the experiment")
    events, _ = traffic.react(reqs, answers)
    n_imp = sum(e["type"] == "rec_impression" for e in events)
    print(f"   {len(answers)} answers, {n_imp} items shown, {len(events) - n_imp} clicks / carts / purchases")
    by_plat: dict[str, list] = {}
    for e in events:
        by_plat.setdefault(e["platform"], []).append(e)
    with requests.Session() as s:
        for plat, rows in by_plat.items():
            for i in range(0, len(rows), 500):
                for res in simulator._post_batch(
                    s, stack.url("ingest"), plat, stack.secrets[plat], rows[i : i + 500], "ndjson", 30.0, 5, 10.0
                ):
                    if res.get("status") != 200 or res.get("rejected"):
                        raise DemoFailed(f"demo failed: ingest refused experiment events: {res}")
    base = stack.url("analytics")

    def measured():
        r = requests.get(base + "api/experiments", headers=operator, timeout=30)
        for e in r.json().get("experiments", []) if r.status_code == 200 else []:
            if e["experiment"] == name and sum(a["impressions"] for a in e["arms"]) >= n_imp:
                return e
        return None

    e = wait(measured, args.timeout, "archive and clean to attribute the experiment's events")
    print()
    print(f"   {'arm':8s} {'viewers':>7s} {'shown':>6s} {'CTR [95% CI]':>24s} {'conversion':>24s} {'GMV/shown ¥':>22s}")
    for a in e["arms"]:
        ci = lambda m, f: f"{f.format(a[m])} [{f.format(a[m + '_lo'])}, {f.format(a[m + '_hi'])}]"  # noqa: B023
        print(
            f"   {a['arm']:8s} {a['viewers']:7d} {a['impressions']:6d} {ci('ctr', '{:.2%}'):>24s} "
            f"{ci('conversion_rate', '{:.2%}'):>24s} {ci('gmv_per_impression', '{:.2f}'):>22s}"
        )
        if not a["is_control"]:
            for m, f in (("ctr", "{:+.2%}"), ("conversion_rate", "{:+.2%}"), ("gmv_per_impression", "{:+.2f}")):
                verdict = "the interval excludes 0" if a[m + "_significant"] else "not significant"
                print(
                    f"     {m} vs control: {f.format(a[m + '_diff'])} [{f.format(a[m + '_diff_lo'])}, "
                    f"{f.format(a[m + '_diff_hi'])}]: {verdict}"
                )
    print("   (the experiment's purchases are real ones of the streams: the stream KPIs above predate them)")
    from shared.layout import load_manifest

    manifest = load_manifest(store)[0]  # its clean run triggered train too: the summary below waits for it
    wait(lambda: _trained_on(store, manifest), args.timeout, "train on the experiment's clean run")


def _save_dashboard(base: str, stream_ids: list[str], headers: dict | None = None) -> str:
    """Fetch the dashboard pages (server-rendered HTML with inline SVG charts) into var/demo/dashboard."""
    import re
    from pathlib import Path

    out = Path(__file__).resolve().parent.parent / "var" / "demo" / "dashboard"
    (out / "streams").mkdir(parents=True, exist_ok=True)
    pages = {"index.html": "", "quality.html": "quality", "models.html": "models", "live.html": "live"}
    pages["alerts.html"] = "alerts"
    pages["experiments.html"] = "experiments"
    pages.update({f"streams/{sid}.html": f"streams/{sid}" for sid in stream_ids})
    for name, path in pages.items():
        r = requests.get(base + path, headers=headers, timeout=60)
        if r.status_code != 200:
            raise DemoFailed(f"demo failed: dashboard page /{path} answered {r.status_code}")
        html = r.text
        # make the saved copy browsable from disk: page links point at the saved files
        depth = "../" if name.startswith("streams/") else ""
        html = re.sub(r'href="/streams/([^"/?#]+)"', lambda m: f'href="{depth}streams/{m.group(1)}.html"', html)  # noqa: B023
        html = html.replace('href="/quality"', f'href="{depth}quality.html"').replace(
            'href="/models"', f'href="{depth}models.html"'
        )
        html = html.replace('href="/"', f'href="{depth}index.html"').replace('href="/live"', f'href="{depth}live.html"')
        html = html.replace('href="/alerts"', f'href="{depth}alerts.html"')
        html = html.replace('href="/experiments"', f'href="{depth}experiments.html"')
        # a room's live page polls the analytics function: its links go to the running stack
        html = re.sub(r'href="/live/([^"/?#]+)"', lambda m: f'href="{base}live/{m.group(1)}"', html)
        (out / name).write_text(html, encoding="utf-8")
    return str(out)


def _versions(store) -> list[dict]:
    """Every written model version's meta.json, oldest first."""
    from shared.dashboard.data import load_models

    return [m for m in load_models(store)[0] if "error" not in m]


def _trained_on(store, manifest) -> bool:
    """Some version was trained on every clean file the manifest names (the last clean run's train ran)."""
    keys = {f.key for f in manifest.clean_files}
    return any(keys <= {i.get("key") for i in meta.get("inputs") or []} for meta in _versions(store))


def _print_versions(store) -> None:
    """Every version with its outcome as the models page shows it (queries.model_statuses)."""
    from shared.dashboard.data import load_models
    from shared.dashboard.queries import model_statuses

    models, latest = load_models(store)
    status = model_statuses(models, latest)
    for meta in models:
        d = meta.get("decision") or {}
        print(f"   {meta['version']}  {status.get(meta['version'])}: {str(d.get('reason', ''))[:140]}")


def _print_serving(store, label: str) -> str | None:
    """The version LATEST points at, its decision and the gate's figures against the baselines."""
    from shared import layout

    if not store.exists(layout.LATEST):
        print("   no model promoted yet (recommend answers from popularity)")
        return None
    latest = json.loads(store.get(layout.LATEST))
    meta = json.loads(store.get(layout.model_meta_key(latest["version"])))
    d = meta.get("decision") or {}
    print(f"   {label}: model {latest['version']} (promoted {latest.get('promoted_at', '?')})")
    print(f"     decision: {d.get('reason', '')}")
    data = meta.get("data") or {}
    if data:
        print(
            f"     trained on {data.get('events', '?')} events, {data.get('users', '?')} users, "
            f"{data.get('items', '?')} items, {data.get('streams', '?')} streams"
        )
    for name, b in ((meta.get("evaluation") or {}).get("blocks") or {}).items():
        if "rankers" in b:
            best = b["best_baseline"]
            vs = (b.get("vs_best_baseline") or {}).get("candidate") or {}
            print(
                f"     holdout {name:24s} ndcg@10 model {b['rankers']['candidate']['ndcg@10']:.3f}  "
                f"best baseline {best} {b['rankers'][best]['ndcg@10']:.3f}  ratio {vs.get('ratio') or 0:.2f} "
                f"[{vs.get('ratio_lo') or 0:.2f}, {vs.get('ratio_hi') or 0:.2f}]  ({b['n_queries']} queries)"
            )
    if d.get("below_baseline"):
        print("     NOTE: below the best baseline on the gate's primary metric (promoted: nothing else served)")
    from shared.layout import load_manifest

    keys = {f.key for f in load_manifest(store)[0].clean_files}
    got = {i.get("key") for i in meta.get("inputs") or []}
    if not keys <= got:
        print(
            f"     NOTE: trained on {len(keys & got)} of the {len(keys)} clean files: the version trained on all of "
            "them was not promoted (see its status above); the next clean run's train compares against this one"
        )
    return latest["version"]


def _get(url: str, params: dict, headers: dict | None = None):
    try:
        r = requests.get(url, params=params, headers=headers, timeout=10)
    except requests.RequestException:
        return None
    return r if r.status_code == 200 else None


def _sample_users(store, sim, n: int) -> list[tuple[str, str]]:
    from shared.pipeline.clean import read_clean

    df = read_clean(store).to_pandas()
    buys = df[df["type"].astype(str).isin(["purchase", "add_to_cart"])]
    counts = buys.groupby(["user_id", "stream_id"], observed=True).size().sort_values(ascending=False)
    # the busiest buyer of each of n different rooms (the heaviest pairs are often in one room: the same
    # showcase and room counts give near-identical lists, which shows nothing about the viewers)
    out: list[tuple[str, str]] = []
    for u, s in counts.index:
        if str(s) not in {x[1] for x in out} and str(u) not in {x[0] for x in out}:
            out.append((str(u), str(s)))
        if len(out) == n:
            break
    return out or [(str(u), str(s)) for u, s in counts.index[:n]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--streams", type=int, default=6)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--viewers", type=float, default=600.0, help="mean viewers per stream")
    ap.add_argument("--faults", default="default", help="default | none")
    ap.add_argument("--store", default="local", help="local (embedded) | gcs (GCS emulator) | URL")
    ap.add_argument("--port-base", type=int, default=8080)
    ap.add_argument("--archive-every", type=float, default=3.0)
    ap.add_argument("--clean-every", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument(
        "--start",
        default="now",
        help="now: a short evening that ended just now, sent on time; or a date (UTC, RFC 3339): a replay of "
        "the simulator's evening then (rows older than DAIHUO_LATE_AFTER_S arrive late)",
    )
    ap.add_argument("--live-every", type=float, default=3.0, help="seconds between two prints of the live numbers")
    ap.add_argument(
        "--experiment-viewers",
        type=int,
        default=1500,
        help="answers of the A/B test (the model vs the stream's bestsellers) at the end; 0 skips it",
    )
    ap.add_argument("--stay", action="store_true", help="keep the stack up at the end")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
