"""archive: a scheduler tick (Pub/Sub push on topic ``archive-tick``) drains a bounded batch of
``viewer-events`` from the pull subscription ``viewer-events-archive`` into ``raw/`` and acks it.

An exception answers 500, so Pub/Sub retries the tick; unacked events are redelivered anyway.
"""
import base64
import json

import functions_framework

from shared import runtime
from shared.pipeline.archive import ArchiveConfig, run_archive


def _tick_params(cloud_event) -> dict:
    msg = (cloud_event.data or {}).get("message") or {}
    try:
        body = json.loads(base64.b64decode(msg.get("data") or b"") or b"{}")
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}


@functions_framework.cloud_event
def archive(cloud_event):
    params = _tick_params(cloud_event)
    cfg = ArchiveConfig()
    if "max_events" in params:
        cfg = ArchiveConfig(max_events=int(params["max_events"]))
    return json.dumps(run_archive(runtime.get_bus(), runtime.get_store(), cfg,
                                  crash_after=params.get("crash_after")))
