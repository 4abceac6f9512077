"""Small, explicit event factories for tests that need a handful of hand-made events."""

from __future__ import annotations

import itertools

_seq = itertools.count()


def event(
    type_: str = "product_click",
    *,
    platform: str = "douyin",
    stream_id: str = "s-1",
    user_id: str = "u-1",
    item_id: str | None = "sku-1",
    ts: str = "2026-11-27T20:15:03.120Z",
    **extra,
) -> dict:
    ev = {
        "event_id": f"t-{next(_seq):08d}",
        "type": type_,
        "ts": ts,
        "platform": platform,
        "stream_id": stream_id,
        "user_id": user_id,
    }
    if item_id is not None:
        ev["item_id"] = item_id
    if type_ == "purchase":
        ev.setdefault("price", 129.0)
    if type_ == "rec_impression":
        ev.setdefault("rec_id", "r1.none.default.AAAAAAAAAAAAAAAAAAAAAA")
    ev.update(extra)
    return ev


def batch(n: int, **kw) -> list[dict]:
    types = ["stream_enter", "like", "product_impression", "product_click", "add_to_cart", "purchase"]
    return [
        event(types[i % len(types)], stream_id=f"s-{i % 3}", user_id=f"u-{i % 50}", item_id=f"sku-{i % 20}", **kw)
        for i in range(n)
    ]


# the fields beyond the common ones that make a minimal valid host event of each type
_HOST_REQUIRED = {
    "stream_start": {"host_id": "h-1"},
    "stream_end": {},
    "slot_start": {"slot_id": "slot-1", "item_id": "sku-1"},
    "slot_end": {"slot_id": "slot-1", "item_id": "sku-1"},
    "showcase_update": {"item_id": "sku-1", "change": "add"},
}


def host_event(
    type_: str = "stream_start",
    *,
    platform: str = "douyin",
    stream_id: str = "s-1",
    ts: str = "2026-11-27T20:00:00.000Z",
    **extra,
) -> dict:
    """A valid host-side event (no user_id) of ``type_``, with ``extra`` fields set or overriding."""
    ev = {
        "event_id": f"h-{next(_seq):08d}",
        "type": type_,
        "ts": ts,
        "platform": platform,
        "stream_id": stream_id,
        **_HOST_REQUIRED.get(type_, {}),
    }
    ev.update(extra)
    return ev


def record(type_: str, **extra) -> dict:
    """A minimal valid record of any contract type (viewer, host or catalog)."""
    if type_ in _HOST_REQUIRED:
        return host_event(type_, **extra)
    if type_ == "catalog_item":
        base = {
            "event_id": f"c-{next(_seq):08d}",
            "type": type_,
            "ts": "2026-11-27T12:00:00+08:00",
            "platform": "douyin",
            "item_id": "sku-1",
            "title": "夏季 纯棉 T恤 男",
            "price": 59,
            "stream_ids": ["s-1"],
        }
        return {**base, **extra}
    return event(type_, **extra)
