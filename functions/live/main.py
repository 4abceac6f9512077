"""live: a Pub/Sub push (CloudEvent) on its own subscription ``viewer-events-live`` of
``viewer-events`` -> the room's live state in Bigtable (shared/live/, docs/live.md).

Outcomes: every well-formed event is applied exactly once (claims in Bigtable, shared/live/apply.py);
malformed lines (or a body that is not base64 NDJSON) are quarantined under ``quarantine/live/`` and
logged, and the message is acknowledged (a bad message never loops). A Bigtable or store failure
raises, the function answers 500 and Pub/Sub redelivers (dead-letter topic after max attempts);
the redelivery adds nothing that was already counted.

After a message is applied, the rooms it touched are judged by the GMV-drop alert rule (at most
once per ``DAIHUO_ALERT_LIVE_CHECK_S`` per room and instance; shared/alerts.py): an alert is
recorded under ``alerts/`` and published on ``alerts`` once per window, whatever the redeliveries.
"""

import base64
import binascii
import gzip
import json
import time
import uuid
from datetime import UTC, datetime

import functions_framework
import orjson

from shared import alerts, layout, runtime
from shared.live import schema
from shared.live.apply import LiveWriter
from shared.live.config import LiveConfig
from shared.log import get_logger

log = get_logger("live")


def _writer() -> LiveWriter:
    cfg = LiveConfig()
    return LiveWriter(schema.open_table(cfg), cfg)


_live = runtime.per_instance(_writer)  # the Bigtable client on the first message


def _alerts() -> alerts.LiveAlerts:
    from shared.live.reader import LiveReader

    writer = _live.get()  # one Bigtable client per instance: the writer's
    reader = LiveReader(writer.table, writer.cfg)
    return alerts.LiveAlerts(reader, alerts.AlertSink(runtime.get_store(), runtime.get_bus()))


_live_alerts = runtime.per_instance(_alerts)


def _quarantine(rows: list[dict], message_id: str | None, attributes: dict) -> str:
    now = time.time()
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    received = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # a fresh name per attempt: the runtime identity may only create objects, never overwrite
    key = layout.live_quarantine_key(day, int(now * 1000), f"{message_id or 'none'}-{uuid.uuid4().hex[:8]}")
    lines = [
        orjson.dumps(
            {**r, "stage": "live", "message_id": message_id, "attributes": attributes, "received_at": received}
        )
        for r in rows
    ]
    runtime.get_store().put(key, gzip.compress(b"\n".join(lines) + b"\n", mtime=0), content_type="application/gzip")
    return key


@functions_framework.cloud_event
def live(cloud_event):
    msg = (cloud_event.data or {}).get("message") or {}
    message_id = runtime.pubsub_message_id(cloud_event)
    attributes = dict(msg.get("attributes") or {})
    try:
        data = base64.b64decode(msg.get("data") or b"", validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        key = _quarantine(
            [{"reasons": [f"message: data is not base64 ({exc})"], "raw": str(msg.get("data"))[:65536]}],
            message_id,
            attributes,
        )
        log.warning("live message quarantined", extra={"message_id": message_id, "quarantine": key})
        return json.dumps({"quarantined": key})
    result = _live.get().apply_message(data, attributes, message_id)  # LiveStoreError -> 500 -> redelivery
    summary = result.summary()
    if result.rejected:
        summary["quarantine"] = _quarantine(result.rejected, message_id, attributes)
        log.warning("live: malformed events quarantined", extra={"message_id": message_id, **summary})
    log.info("live applied", extra={"message_id": message_id, "type": attributes.get("type"), **summary})
    if result.streams:
        try:
            fired = _live_alerts.get().check(result.streams)  # never raises once built
        except Exception as exc:  # building it (a store or bus client) failed: the next message retries
            fired = {}
            log.error("alerts: evaluation failed", extra={"error": f"{type(exc).__name__}: {exc}"})
        if fired:
            summary["alerts"] = fired
    return json.dumps(summary)
