"""archive: a scheduler tick (Pub/Sub push on topic ``archive-tick``) drains a bounded batch of
``viewer-events`` from the pull subscription ``viewer-events-archive`` into ``raw/`` and acks it.

The tick's body may bound the batch (``{"max_events": 5000}``); nothing in it can make the function
fail on purpose (fault injection goes through ``shared.runtime.faults`` only).
An exception answers 500, so Pub/Sub retries the tick; unacked events are redelivered anyway.
"""

import json

import functions_framework

from shared import runtime
from shared.pipeline.archive import ArchiveConfig, run_archive


@functions_framework.cloud_event
def archive(cloud_event):
    params = runtime.pubsub_json(cloud_event)
    cfg = ArchiveConfig()
    if "max_events" in params:
        cfg = ArchiveConfig(max_events=int(params["max_events"]))
    return json.dumps(run_archive(runtime.get_bus(), runtime.get_store(), cfg))
