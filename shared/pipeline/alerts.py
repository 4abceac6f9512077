"""The batch alert rules, after every clean tick (functions/clean; docs/alerts.md): the clean run's
quarantine rate, the dead-letter subscriptions' depth, the model versions' promotion streak, and each
stream of the run against its host's typical GMV per minute. Fired through ``shared.alerts.AlertSink``
(recorded under ``alerts/`` and published on ``alerts`` once). Apart from shared/alerts.py so that the
live function's bundle does not carry the batch pipeline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from shared import alert_rules, layout
from shared.alert_rules import Alert, AlertRules
from shared.alerts import AlertSink, model_alert, rules_or_settings
from shared.log import get_logger

log = get_logger("alerts")

#: most messages counted per dead-letter subscription (the depth is then a lower bound)
PEEK_CAP = 1000


def dead_letter_depths(bus, subscriptions: Iterable[str], cap: int = PEEK_CAP) -> dict[str, int]:
    """Messages waiting on each subscription, counted by pulling up to ``cap`` and giving every one
    back at once (ack deadline 0: nothing is consumed). Cloud Monitoring's
    ``num_undelivered_messages`` is the exact figure on Google Cloud (the alert policy of
    infra/alerts.tf); this count works on the emulator too. A subscription that cannot be read is
    left out (logged)."""
    out = {}
    for sub in subscriptions:
        got: list[str] = []
        try:
            while len(got) < cap:
                msgs = bus.pull(sub, max_messages=min(100, cap - len(got)), timeout_s=2.0)
                if not msgs:
                    break
                got += [m.ack_id for m in msgs]
        except Exception as exc:
            log.error("alerts: dead-letter subscription unreadable", extra={"subscription": sub, "error": str(exc)})
            continue
        finally:
            if got:
                try:
                    bus.nack(sub, got)
                except Exception as exc:  # they come back after the ack deadline anyway
                    log.warning("alerts: nack failed", extra={"subscription": sub, "error": str(exc)})
        out[sub] = len(got)
    return out


def _run_streams(store, summary: dict) -> set[str]:
    manifest, _ = layout.load_manifest(store)
    keys = set(summary.get("clean") or [])
    return {s for f in manifest.clean_files if f.key in keys for s in f.streams}


def host_gmv_alerts(store, summary: dict, rules: AlertRules, now: float) -> list[Alert]:
    """The streams this run touched that are over (a ``stream_end``, or no event for an hour), against
    their host's typical GMV per minute. Writes every host's rate to ``state/host-rates.json`` for
    the live rule."""
    rule = rules.gmv_drop
    if not rule.enabled or not rule.compare_host or summary.get("status") != "committed":
        return []
    from shared.pipeline.clean import read_analytics

    touched = _run_streams(store, summary)
    if not touched:
        return []
    table = read_analytics(store, "stream")
    if table.num_rows == 0 or "host_id" not in table.column_names:
        return []
    cols = [c for c in ("stream_id", "host_id", "gmv", "duration_s", "end", "ended_at") if c in table.column_names]
    rows = table.select(cols).to_pylist()
    for r in rows:
        r["end"] = _iso(r.get("end"))
    at = alert_rules.iso(now)
    rates = alert_rules.host_rates(rows, rule)
    doc = {"at": at, "hosts": rates}
    store.put(layout.HOST_RATES, json.dumps(doc, allow_nan=False).encode(), content_type="application/json")
    alerts = alert_rules.gmv_drop_vs_host(rows, rule, at=at)
    # judge a stream once it is over (its whole span), and only the streams of this run
    quiet = alert_rules.iso(now - 3600)
    ended = {str(r["stream_id"]) for r in rows if r.get("ended_at") is not None or (r["end"] or "9") < quiet}
    return [a for a in alerts if a.subject[7:] in touched and a.subject[7:] in ended]


def _iso(v: Any) -> str | None:
    if v is None:
        return None
    if hasattr(v, "timestamp"):
        return alert_rules.iso(v.timestamp())
    return str(v)


def evaluate_batch(
    store, bus, summary: dict, rules: AlertRules | None = None, *, now: float | None = None
) -> list[Alert]:
    """Every batch rule after one clean tick (``summary``: run_clean's answer, any status)."""
    rules = rules_or_settings(rules)
    now = time.time() if now is None else now
    at = alert_rules.iso(now)
    out: list[Alert] = []
    steps: list[tuple[str, Callable[[], Iterable[Alert | None]]]] = [
        ("quarantine_rate", lambda: [alert_rules.quarantine_rate(summary, rules.quarantine_rate, at=at)]),
        (
            "dead_letter_depth",
            lambda: (
                alert_rules.dead_letter_depth(
                    dead_letter_depths(bus, rules.dead_letter_depth.subscriptions) if bus is not None else {},
                    rules.dead_letter_depth,
                    now=now,
                    capped=PEEK_CAP,
                )
                if rules.dead_letter_depth.enabled
                else []
            ),
        ),
        ("model_not_promoted", lambda: [model_alert(store, rules)]),
        ("gmv_drop", lambda: host_gmv_alerts(store, summary, rules, now)),
    ]
    for name, step in steps:
        try:
            out += [a for a in step() if a is not None]
        except Exception as exc:
            log.error("alerts: evaluation failed", extra={"rule": name, "error": f"{type(exc).__name__}: {exc}"})
    return out


def after_clean(
    store, bus, summary: dict, rules: AlertRules | None = None, *, now: float | None = None, topic: str | None = None
) -> dict:
    """Evaluate the batch rules and fire what fires. Never raises (the run is committed already)."""
    try:
        alerts = evaluate_batch(store, bus, summary, rules, now=now)
        fired = AlertSink(store, bus, topic).fire_all(alerts)
    except Exception as exc:
        log.error("alerts: evaluation failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        return {"error": str(exc)}
    log.info("alerts evaluated", extra={"after": "clean", "status": summary.get("status"), "fired": fired})
    return {"alerts": len(alerts), "fired": fired}
