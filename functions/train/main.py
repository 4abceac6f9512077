"""train: a Pub/Sub push on ``events-cleaned`` (CloudEvent) -> fit, evaluate, write models/<version>/,
maybe move models/LATEST.json, publish ``model-published``. Logic: shared/serving/train.py. Then the
``model_not_promoted`` alert rule (shared/alerts.py: the last N runs not promoted -> ``alerts``).

An exception answers 500, so Pub/Sub retries (and dead-letters after max attempts); a redelivered
event finds its version already written and only finishes/republishes.
"""

import json

import functions_framework

from shared import alerts, runtime
from shared.serving.train import TrainConfig, run_train


def _message(cloud_event) -> dict:
    return {
        "message_id": runtime.pubsub_message_id(cloud_event),
        "event_id": cloud_event["id"],
        "summary": runtime.pubsub_json(cloud_event),
    }


@functions_framework.cloud_event
def train(cloud_event):
    store, bus = runtime.get_store(), runtime.get_bus()
    result = run_train(store, bus, TrainConfig(), trigger=_message(cloud_event))
    alerts.after_train(store, bus)  # never raises
    return json.dumps(result.message(), ensure_ascii=False)
