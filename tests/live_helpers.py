"""Event factories and a table fixture helper for the live tests (real Bigtable emulator)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import orjson

from shared.live import schema
from shared.live.config import LiveConfig

_n = itertools.count()


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ev(type_: str, stream: str, ts: float, *, user: str | None = "u1", item: str | None = None, **extra) -> dict:
    doc = {"event_id": f"e{next(_n)}-{uuid.uuid4().hex[:8]}", "type": type_, "ts": iso(ts), "platform": "douyin"}
    doc["stream_id"] = stream
    if user is not None and type_ not in ("stream_start", "stream_end", "slot_start", "slot_end", "showcase_update"):
        doc["user_id"] = user
    if item is not None:
        doc["item_id"] = item
    doc.update(extra)
    return doc


def ndjson(events: list[dict]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in events)


def fresh_config(**overrides) -> LiveConfig:
    cfg = LiveConfig(table=f"t{uuid.uuid4().hex[:10]}", **overrides)
    schema.ensure_table(cfg)
    return cfg
