"""Per-process singletons for the function handlers: the bus and the object store, created on the
first request (not at import) and reused by every later request of the instance.

Configuration, all from the environment:
``DAIHUO_STORE``   where objects live: ``gs://bucket[/prefix]``, ``s3://bucket[/prefix]`` or a local
                   path / ``file://`` URL (default ``var/store``, the embedded local backend).
``PUBSUB_PROJECT_ID`` / ``GOOGLE_CLOUD_PROJECT``  the Pub/Sub project.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_bus = None
_store = None


def get_bus():
    global _bus
    if _bus is None:
        with _lock:
            if _bus is None:
                from shared.bus import Bus

                _bus = Bus()
    return _bus


def get_store():
    global _store
    if _store is None:
        with _lock:
            if _store is None:
                from shared.storage import open_store

                _store = open_store(os.environ.get("DAIHUO_STORE", "var/store"))
    return _store


def fail_once(function: str) -> str | None:
    """Fault injection for the at-least-once tests: with ``DAIHUO_FAIL_ONCE=<function>:<point>`` in
    the environment, the first invocation of ``function`` in this store gets ``<point>`` back (the
    handler then crashes there) and every later one gets None. "First" is decided by a create-only
    marker object ``state/faults/<function>-<point>``, so it holds across processes and retries."""
    spec = os.environ.get("DAIHUO_FAIL_ONCE", "")
    name, _, point = spec.partition(":")
    if name != function or not point:
        return None
    from shared.storage import ABSENT, PreconditionFailed

    try:
        get_store().put(f"state/faults/{function}-{point}", b"injected", if_generation_match=ABSENT)
    except PreconditionFailed:
        return None
    return point


def pubsub_json(cloud_event) -> dict:
    """The JSON object carried by a Pub/Sub push CloudEvent (``data.message.data``, base64), or {}
    when the message has no body or it is not a JSON object (ticks may be empty)."""
    import base64
    import binascii
    import json

    msg = (cloud_event.data or {}).get("message") or {}
    try:
        body = json.loads(base64.b64decode(msg.get("data") or b"") or b"{}")
    except (ValueError, binascii.Error):
        return {}
    return body if isinstance(body, dict) else {}


def pubsub_message_id(cloud_event) -> str | None:
    msg = (cloud_event.data or {}).get("message") or {}
    return msg.get("messageId") or msg.get("message_id")
