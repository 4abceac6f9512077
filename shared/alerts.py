"""Alerts: the rules of shared/alert_rules.py evaluated where their data is, each firing recorded in
the store and published on the alerts topic once (docs/alerts.md).

* ``shared.pipeline.alerts.after_clean`` -- after every clean tick (functions/clean): the clean
  run's quarantine rate, the dead-letter subscriptions' depth, the model versions' promotion streak,
  and each stream of the run against its host's typical GMV per minute.
* :func:`after_train` -- after every train run (functions/train): the promotion streak at once (clean
  judges it again; the same condition is the same alert).
* :class:`LiveAlerts` -- by the live function after it applied a message: the GMV-drop rule on the
  room's per-minute GMV in Bigtable (against its own earlier rate, then against its host's typical
  rate from ``state/host-rates.json``, which clean writes), at most once per ``DAIHUO_ALERT_LIVE_CHECK_S`` per room and
  instance.

Once: an alert's id hashes (rule, subject, window) (``Alert.id``). :meth:`AlertSink.fire` creates
``alerts/date=<day>/<id>.json`` only if absent (the claim: a second evaluation of the same condition,
a redelivered message, a second instance, finds it and stops), publishes the alert, then creates the
marker ``alerts/sent/<id>``. A crash between the claim and the marker leaves a claim without a
marker: the next evaluation of the same condition older than ``lease_s`` publishes it again
(at least once; the message's ``alert_id`` attribute lets a consumer drop the copy). Both writes are
creations, which the live function's create-only identity may do.

Alert evaluation never fails the work it follows: an error is logged (``alerts: evaluation
failed``) and the next evaluation tries again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from shared import alert_rules, layout
from shared.adapters.storage import ABSENT, NotFound, PreconditionFailed
from shared.alert_rules import Alert, AlertRules
from shared.log import get_logger

log = get_logger("alerts")

#: days of alerts the dashboard lists
LIST_DAYS = 7


def rules_or_settings(rules: AlertRules | None) -> AlertRules:
    if rules is not None:
        return rules
    from shared.settings import settings

    return settings().alerts


def _topic(topic: str | None) -> str:
    if topic:
        return topic
    from shared.settings import settings

    return settings().alerts_topic


# -------------------------------------------------------------------------------------------- sink
class AlertSink:
    """Records (store) and publishes (bus, may be None: record only) alerts, each once."""

    def __init__(self, store, bus=None, topic: str | None = None, *, lease_s: float = 120.0, clock=time.time):
        self.store = store
        self.bus = bus
        self.topic = _topic(topic)
        self.lease_s = lease_s
        self.clock = clock

    def fire(self, alert: Alert) -> str:
        """``published`` (new), ``recorded`` (new, no bus), ``duplicate`` (already fired) or
        ``republished`` (claimed earlier, never marked sent: a crash in between)."""
        doc = {**alert.to_dict(), "recorded_at": alert_rules.iso(self.clock())}
        key = layout.alert_key(alert.time[:10] if len(alert.time) >= 10 else "unknown", alert.id)
        try:
            self.store.put(key, _dumps(doc), content_type="application/json", if_generation_match=ABSENT)
        except PreconditionFailed:
            if self.bus is None or self.store.exists(layout.alert_sent_key(alert.id)):
                return "duplicate"
            try:
                earlier = json.loads(self.store.get(key))
            except (NotFound, ValueError):
                return "duplicate"
            age = self.clock() - _epoch(earlier.get("recorded_at"))
            if age < self.lease_s:  # another evaluation claimed it moments ago and is publishing
                return "duplicate"
            self._publish(alert, earlier)
            return "republished"
        if self.bus is None:
            fields = {k: doc[k] for k in ("id", "rule", "subject", "value", "threshold")}
            log.warning("alert recorded", extra={**fields, "alert_time": doc["time"], "text": doc["message"]})
            return "recorded"
        self._publish(alert, doc)
        return "published"

    def _publish(self, alert: Alert, doc: dict[str, Any]) -> None:
        self.bus.publish(self.topic, _dumps(doc), alert_id=alert.id, rule=alert.rule, subject=alert.subject)
        try:
            self.store.put(layout.alert_sent_key(alert.id), b"", if_generation_match=ABSENT)
        except PreconditionFailed:
            pass
        fields = {k: doc[k] for k in ("id", "rule", "subject", "value", "threshold")}
        log.warning("alert published", extra={**fields, "alert_time": doc["time"], "text": doc["message"]})

    def fire_all(self, alerts: Iterable[Alert]) -> dict[str, str]:
        out = {}
        for a in alerts:
            try:
                out[a.id] = self.fire(a)
            except Exception as exc:  # a store or bus failure: the next evaluation tries again
                log.error("alerts: could not fire", extra={"id": a.id, "rule": a.rule, "error": str(exc)})
                out[a.id] = "failed"
        return out


def _dumps(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (stdlib: the train bundle ships no orjson)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _epoch(value: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------------ model
def model_alert(store, rules: AlertRules) -> Alert | None:
    """The promotion streak over the newest model versions (by version id, i.e. by window end)."""
    rule = rules.model_not_promoted
    if not rule.enabled:
        return None
    metas = sorted(k for k in store.list(layout.MODELS) if layout.MODEL_META_RE.match(k))
    newest = metas[-max(2 * rule.runs, 10) :]
    docs = []
    for k in newest:
        try:
            docs.append(json.loads(store.get(k)))
        except (NotFound, ValueError):
            continue
    try:
        latest = json.loads(store.get(layout.LATEST))
    except NotFound:
        latest = None
    return alert_rules.model_not_promoted(docs, latest, rule)


def after_train(store, bus, rules: AlertRules | None = None, *, topic: str | None = None) -> dict[str, str]:
    """The model rule right after a train run (functions/train); never raises (logged)."""
    try:
        alert = model_alert(store, rules_or_settings(rules))
        return AlertSink(store, bus, topic).fire_all([alert] if alert else [])
    except Exception as exc:
        log.error(
            "alerts: evaluation failed", extra={"rule": "model_not_promoted", "error": f"{type(exc).__name__}: {exc}"}
        )
        return {}


# ------------------------------------------------------------------------------------------- live
class LiveAlerts:
    """The GMV-drop rule on live rooms, for the live function: :meth:`check` after each applied
    message, for the streams it touched; a room is read and judged at most once per ``every_s`` per
    instance (the rest return at once). Thread-safe."""

    def __init__(
        self,
        reader,
        sink: AlertSink,
        rules: AlertRules | None = None,
        *,
        every_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        from shared.settings import settings

        self.reader = reader
        self.sink = sink
        self.rules = rules_or_settings(rules)
        self.every_s = settings().alert_live_check_s if every_s is None else every_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._rates: tuple[float, dict[str, Any]] | None = None  # (read at, state/host-rates.json hosts)

    #: seconds the hosts' typical rates are reused per instance (clean rewrites them hourly)
    RATES_TTL_S = 600.0

    def host_rates(self, now: float) -> dict[str, Any]:
        """``state/host-rates.json``'s hosts (clean writes it), re-read every ``RATES_TTL_S``; {} if absent
        or unreadable (the host comparison is then skipped)."""
        hit = self._rates
        if hit is not None and now - hit[0] < self.RATES_TTL_S:
            return hit[1]
        try:
            hosts = json.loads(self.sink.store.get(layout.HOST_RATES)).get("hosts") or {}
        except (NotFound, ValueError, AttributeError):
            hosts = {}
        self._rates = (now, hosts)
        return hosts

    def _due(self, stream: str, now: float) -> bool:
        with self._lock:
            last = self._last.get(stream)
            if last is not None and now - last < self.every_s:
                return False
            self._last[stream] = now
            if len(self._last) > 10_000:  # forget the oldest rooms
                for k in sorted(self._last, key=self._last.__getitem__)[:5000]:
                    del self._last[k]
            return True

    def evaluate(self, stream: str, now: float | None = None) -> Alert | None:
        """The rule on one room now (no rate limit, nothing fired)."""
        rule = self.rules.gmv_drop
        if not rule.enabled:
            return None
        now = self.clock() if now is None else now
        span = rule.window_min + rule.baseline_min + 1
        room = self.reader.room(stream, now=now, since_minutes=span)
        if not room.on_air:
            return None  # an ended room's GMV stops; that is not a drop
        series: dict[int, float] = {}
        for m in room.minutes:
            series[int(_epoch(m["minute"]) // 60)] = float(m.get("gmv") or 0.0)
        first = None
        started = room.info.get("started_at")
        if started:
            first = int(_epoch(started) // 60)
        elif series:
            first = min(series)
        if first is None:
            return None
        last_complete = int(now // 60) - 1
        subject = f"stream:{stream}"
        own = alert_rules.gmv_drop_series(subject, series, last_complete, rule, first_minute=first)
        if own is not None or not rule.compare_host:
            return own
        host = room.info.get("host_id")
        rate = self.host_rates(now).get(str(host)) if host else None
        if not rate:
            return None
        return alert_rules.gmv_drop_vs_host_live(
            subject,
            series,
            last_complete,
            rule,
            first_minute=first,
            host_id=str(host),
            host_per_min=float(rate.get("gmv_per_min") or 0.0),
        )

    def check(self, streams: Iterable[str]) -> dict[str, str]:
        """Judge the due rooms among ``streams`` and fire; never raises (logged)."""
        out: dict[str, str] = {}
        if not self.rules.gmv_drop.enabled:
            return out
        now = self.clock()
        for stream in streams:
            if not stream or not self._due(stream, now):
                continue
            try:
                alert = self.evaluate(stream, now)
                if alert is not None:
                    out[stream] = self.sink.fire(alert)
            except Exception as exc:  # judged again when due (every_s): a failing room costs no more
                log.error(
                    "alerts: evaluation failed",
                    extra={"rule": "gmv_drop", "stream_id": stream, "error": f"{type(exc).__name__}: {exc}"},
                )
        return out


# --------------------------------------------------------------------------------------- reading
def recent(store, *, limit: int = 100, days: int = LIST_DAYS, now: float | None = None) -> list[dict[str, Any]]:
    """The newest alerts of the last ``days`` days (by ``time``), each with ``published``."""
    from datetime import UTC, datetime, timedelta

    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, UTC).date()
    docs: list[dict[str, Any]] = []
    for i in range(days + 1):
        day = (today - timedelta(days=i)).isoformat()
        for key in store.list(f"{layout.ALERTS}date={day}/"):
            try:
                docs.append(json.loads(store.get(key)))
            except (NotFound, ValueError):
                continue
    sent = {k.rsplit("/", 1)[-1] for k in store.list(layout.ALERTS_SENT)} if docs else set()
    for d in docs:
        d["published"] = d.get("id") in sent
    docs.sort(key=lambda d: (str(d.get("time")), str(d.get("recorded_at"))), reverse=True)
    return docs[:limit]
