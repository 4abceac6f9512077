"""The live dashboard's data: a room of the live layer (``shared.live.reader.RoomLive``) -> the JSON the
live page polls (``/api/live/<stream_id>``), and the list of rooms (``/api/live``).

Numbers are the reader's unchanged (docs/live.md); this module only picks what the big screen shows,
adds the catalog titles of the items it names and the derived conversion (orders / impressions, the
batch KPI's definition, docs/metrics.md). Times stay ISO 8601 UTC; the page shows them in
``DAIHUO_DASHBOARD_TZ``.

Bigtable slow or down (``LiveUnavailable``): ``{"available": false, "message": ...}`` with status 200,
so the page keeps its last numbers, says so and polls on (slower); it never turns into a 5xx loop.
A short per-instance cache (``cache_s``) lets many operators watching one room cost one read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pandas as pd

from shared.log import get_logger

log = get_logger("dashboard.live")

TILES = ("viewers_now", "entries", "gmv", "orders", "units", "conversion")
TRENDING_TOP = 10
MINUTES_SHOWN = 180  # the charts draw the last 3 hours of a room


class LiveRoomUnknown(LookupError):
    def __init__(self, stream_id: str):
        super().__init__(f"no live data for stream {stream_id!r}")
        self.stream_id = stream_id


def _titles(catalog: pd.DataFrame) -> dict[str, str]:
    if catalog is None or not len(catalog):
        return {}
    df = catalog.dropna(subset=["title"])
    return dict(zip(df["item_id"].astype(str), df["title"].astype(str), strict=False))


def _every_minute(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reader's minutes (only those with events) -> one point per minute from the first to the
    last: a quiet minute has no GMV or orders and the viewer level of the minute before."""
    out: list[dict[str, Any]] = []
    prev_minute = None
    for m in rows:
        minute = int(pd.Timestamp(m["minute"]).timestamp() // 60)
        if prev_minute is not None:
            for gap in range(prev_minute + 1, minute):
                out.append({"minute": _iso_minute(gap), "viewers": out[-1]["viewers"], "gmv": 0.0, "orders": 0})
        out.append(
            {
                "minute": m["minute"],
                "viewers": int(m["viewers"]),
                "gmv": round(float(m["gmv"]), 2),
                "orders": int(m["orders"]),
            }
        )
        prev_minute = minute
    return out


def _iso_minute(minute: int) -> str:
    return pd.Timestamp(minute * 60, unit="s", tz="UTC").isoformat(timespec="milliseconds").replace("+00:00", "Z")


def room_doc(room, titles: dict[str, str]) -> dict[str, Any]:
    """A ``RoomLive`` -> the page's JSON (``LiveRoom`` in schema/openapi/analytics.json)."""
    t = room.totals
    imps = t.get("impressions") or 0
    tiles = {
        "viewers_now": t.get("viewers_now"),
        "entries": int(t.get("entries") or 0),
        "gmv": round(float(t.get("gmv") or 0.0), 2),
        "orders": int(t.get("orders") or 0),
        "units": int(t.get("units") or 0),
        "conversion": (t.get("orders") or 0) / imps if imps else None,
        "unique_viewers": int(t.get("unique_viewers") or 0),
        "buyers": int(t.get("buyers") or 0),
        "impressions": int(imps),
        "clicks": int(t.get("clicks") or 0),
        "add_to_carts": int(t.get("add_to_carts") or 0),
        "refunds": int(t.get("refunds") or 0),
        "net_gmv": round(float(t.get("net_gmv") or 0.0), 2),
    }
    minutes = _every_minute(room.minutes)[-MINUTES_SHOWN:]
    on_stage = None
    if room.on_stage is not None:
        s = room.on_stage
        sales = s.get("sales") or {}
        on_stage = {
            "slot_id": s["slot_id"],
            "item_id": s["item_id"],
            "title": titles.get(s["item_id"]),
            "started_at": s["started_at"],
            "price": s.get("price"),
            "currency": s.get("currency"),
            "sales": {
                "orders": int(sales.get("orders", 0)),
                "units": int(sales.get("units", 0)),
                "gmv": round(float(sales.get("gmv", 0.0)), 2),
            },
            "sold_out": s["item_id"] in room.sold_out,
        }
    trending = [
        {
            "item_id": x["item_id"],
            "title": titles.get(x["item_id"]),
            "score": x["score"],
            "previous_score": x["previous_score"],
            "rise": x["rise"],
            "orders": int(x["window"].get("orders", 0)),
            "clicks": int(x["window"].get("clicks", 0)),
            "add_to_carts": int(x["window"].get("add_to_carts", 0)),
            "gmv": round(float(x["window"].get("gmv", 0.0)), 2),
            "sold_out": x["item_id"] in room.sold_out,
        }
        for x in room.trending[:TRENDING_TOP]
    ]
    info = room.info or {}
    return {
        "stream_id": room.stream_id,
        "available": True,
        "as_of": room.as_of,
        "on_air": bool(room.on_air),
        "info": {
            k: info.get(k)
            for k in ("title", "host_id", "host_name", "platform", "started_at", "ended_at", "last_event_at")
        },
        "tiles": tiles,
        "minutes": minutes,
        "on_stage": on_stage,
        "slots": len(room.slots),
        "trending": trending,
        "trend_minutes": (room.window or {}).get("trend_minutes"),
        "sold_out": [{"item_id": i, "title": titles.get(i)} for i in room.sold_out],
    }


def unavailable_doc(stream_id: str | None, message: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"available": False, "message": message, "as_of": _now_iso()}
    if stream_id is not None:
        doc["stream_id"] = stream_id
    return doc


def _now_iso() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LiveView:
    """The instance's live reads: ``room(stream_id, catalog)`` and ``streams()``, each cached ``cache_s``."""

    def __init__(self, reader_factory: Callable[[], Any], cache_s: float = 1.0, max_rooms: int = 64):
        self._factory = reader_factory
        self._reader = None
        self._lock = threading.Lock()
        self.cache_s = cache_s
        self._cache: OrderedDict[Any, tuple[float, dict]] = OrderedDict()
        self._max = max_rooms

    @property
    def reader(self):
        if self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = self._factory()
        return self._reader

    def _cached(self, key, build: Callable[[], dict]) -> dict:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.cache_s:
                return hit[1]
        doc = build()
        with self._lock:
            self._cache[key] = (time.monotonic(), doc)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return doc

    def room(self, stream_id: str, catalog: pd.DataFrame) -> dict[str, Any]:
        """The room's JSON; ``LiveRoomUnknown`` if the table has nothing of it; an unavailable doc if
        Bigtable failed (not cached: the next poll tries again)."""
        from shared.live.reader import LiveUnavailable

        try:
            doc = self._cached(("room", stream_id), lambda: self._room(stream_id, catalog))
        except LiveUnavailable as exc:
            log.warning("live room unavailable", extra={"stream_id": stream_id, "error": str(exc)})
            return unavailable_doc(stream_id, "实时数据暂不可用 live data unavailable (Bigtable): " + str(exc)[:200])
        if doc.get("exists") is False:
            raise LiveRoomUnknown(stream_id)
        return doc

    def _room(self, stream_id: str, catalog: pd.DataFrame) -> dict:
        room = self.reader.room(stream_id)
        if not room.exists:
            return {"exists": False}
        return room_doc(room, _titles(catalog))

    def streams(self) -> dict[str, Any]:
        """Every room the live table knows, newest activity first, on air ones first."""
        from shared.live.reader import LiveUnavailable

        try:
            rows = self._cached(("streams",), lambda: {"streams": self.reader.streams()})["streams"]
        except LiveUnavailable as exc:
            log.warning("live streams unavailable", extra={"error": str(exc)})
            return {
                **unavailable_doc(None, "实时数据暂不可用 live data unavailable (Bigtable): " + str(exc)[:200]),
                "streams": [],
            }
        rows = sorted(rows, key=lambda s: not s["on_air"])  # stable: newest first within each group
        return {"available": True, "as_of": _now_iso(), "streams": rows}
