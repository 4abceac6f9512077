"""train: a Pub/Sub push on ``events-cleaned`` (CloudEvent) -> fit, evaluate, write models/<version>/,
maybe move models/LATEST.json, publish ``model-published``. Logic: shared/serving/train.py.

An exception answers 500, so Pub/Sub retries (and dead-letters after max attempts); a redelivered
event finds its version already written and only finishes/republishes.
"""
import base64
import json

import functions_framework

from shared import runtime
from shared.serving.train import TrainConfig, run_train


def _message(cloud_event) -> dict:
    msg = (cloud_event.data or {}).get("message") or {}
    try:
        body = json.loads(base64.b64decode(msg.get("data") or b"") or b"{}")
    except ValueError:
        body = {}
    return {"message_id": msg.get("messageId") or msg.get("message_id"), "event_id": cloud_event["id"],
            "summary": body if isinstance(body, dict) else {}}


@functions_framework.cloud_event
def train(cloud_event):
    result = run_train(runtime.get_store(), runtime.get_bus(), TrainConfig(), trigger=_message(cloud_event))
    return json.dumps(result.message(), ensure_ascii=False)
