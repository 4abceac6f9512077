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
    ev.update(extra)
    return ev


def batch(n: int, **kw) -> list[dict]:
    types = ["stream_enter", "like", "product_impression", "product_click", "add_to_cart", "purchase"]
    return [
        event(types[i % len(types)], stream_id=f"s-{i % 3}", user_id=f"u-{i % 50}", item_id=f"sku-{i % 20}", **kw)
        for i in range(n)
    ]
