"""The read API of the live layer (docs/live.md, "Read API"): plain dataclasses with ``to_dict()``
(JSON-able), one Bigtable read per call, a deadline per read and one exception when Bigtable is
slow or down (``LiveUnavailable``), so callers can fall back (recommend answers from the batch model).

    reader = LiveReader()                       # LiveConfig() from the environment
    room = reader.room("s1")                    # tiles, per-minute series, trending, on stage, sold out
    room = reader.room("s1", since_minutes=10)  # only the last 10 minutes of counters (cheaper)
    session = reader.viewer("s1", "u42")        # the viewer's last product events in the room
    reader.streams()                            # the rooms the table knows, newest activity first
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from shared.live import schema
from shared.live.config import LiveConfig
from shared.live.schema import COUNTERS, ITEMS, SESSION, SHOWCASE, STATE
from shared.live.state import UNIQUE_STEPS, iso, slots_from_cells

# totals / per-minute names follow the batch KPIs (docs/metrics.md) where one exists
_ROOM_COUNTS = {
    "n:stream_enter": "entries",
    "n:stream_leave": "leaves",
    "n:like": "like_events",
    "likes": "likes",
    "n:comment": "comments",
    "n:share": "shares",
    "n:follow": "follows",
    "n:gift": "gifts",
    "n:product_impression": "impressions",
    "n:product_click": "clicks",
    "n:add_to_cart": "add_to_carts",
    "cart_units": "cart_units",
    "n:purchase": "orders",
    "units": "units",
    "n:refund": "refunds",
    "refund_units": "refund_units",
}
_ROOM_MONEY = {"gmv_milli": "gmv", "gift_milli": "gift_value", "refund_milli": "refund_amount"}
_ITEM = {
    "product_impression": "impressions",
    "product_click": "clicks",
    "add_to_cart": "add_to_carts",
    "purchase": "orders",
    "refund": "refunds",
    "units": "units",
}
TREND_WEIGHTS = {"orders": 10.0, "add_to_carts": 3.0, "clicks": 1.0}


class LiveUnavailable(RuntimeError):
    """Bigtable did not answer within the deadline (or failed): callers fall back and say so."""


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True)


def _zero_totals() -> dict[str, float]:
    out: dict[str, float] = dict.fromkeys(_ROOM_COUNTS.values(), 0)
    out.update(dict.fromkeys(_ROOM_MONEY.values(), 0.0))
    return out


@dataclass
class RoomLive:
    stream_id: str
    as_of: str
    exists: bool
    on_air: bool
    info: dict[str, Any]
    totals: dict[str, float]  # entries, viewers_now, orders, units, gmv, net_gmv, funnel counts, ...
    funnel: dict[str, Any]  # counts and unique viewers at each step
    minutes: list[dict[str, Any]]  # per minute of event time: the counters + viewers (level at its end)
    trending: list[dict[str, Any]]  # items by score in the last window, with the previous window and rise
    on_stage: dict[str, Any] | None  # the slot on stage now and its sales so far
    slots: list[dict[str, Any]]  # every slot of the stream with its sales
    sold_out: list[str]
    showcase: dict[str, dict[str, Any]]  # item -> status, price, stock (from showcase_update)
    window: dict[str, Any] = field(default_factory=dict)  # what the counters cover

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ViewerSession:
    stream_id: str
    user_id: str
    events: list[dict[str, Any]]  # newest first: type, item_id, ts, event_id, price, quantity

    def items(self, *types: str) -> list[str]:
        """Distinct item ids of the session, most recent first (optionally of some types only)."""
        out: list[str] = []
        for ev in self.events:
            if (not types or ev["type"] in types) and ev["item_id"] not in out:
                out.append(ev["item_id"])
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LiveReader:
    def __init__(self, table=None, cfg: LiveConfig | None = None, *, timeout_s: float | None = None):
        self.cfg = cfg or LiveConfig()
        self._table = table
        self.timeout_s = self.cfg.read_timeout_s if timeout_s is None else timeout_s

    @property
    def table(self):
        if self._table is None:
            self._table = schema.open_table(self.cfg)
        return self._table

    def _rows(self, query) -> list:
        try:
            return list(self.table.read_rows(query, operation_timeout=self.timeout_s, attempt_timeout=self.timeout_s))
        except Exception as exc:  # DeadlineExceeded, ServiceUnavailable, NotFound (no table), ...
            raise LiveUnavailable(f"bigtable read failed: {type(exc).__name__}: {exc}") from exc

    # -- a room ---------------------------------------------------------------------------------
    def room(
        self,
        stream_id: str,
        *,
        now: float | None = None,
        since_minutes: int | None = None,
        window_minutes: int = 5,
        top: int = 20,
    ) -> RoomLive:
        from google.cloud.bigtable.data import ReadRowsQuery, RowRange
        from google.cloud.bigtable.data import row_filters as rf

        now = time.time() if now is None else now
        now_minute = int(now // 60)
        mprefix = schema.minute_prefix(stream_id)
        start = mprefix if since_minutes is None else schema.minute_key(stream_id, now_minute - since_minutes, 0)
        uprefix = schema.unique_prefix(stream_id)
        query = ReadRowsQuery(
            row_keys=[schema.room_key(stream_id)],
            row_ranges=[
                RowRange(start_key=start, end_key=schema.prefix_end(mprefix)),
                RowRange(start_key=uprefix, end_key=schema.prefix_end(uprefix)),
            ],
            row_filter=rf.FamilyNameRegexFilter(f"^({COUNTERS}|{ITEMS}|{STATE}|{SHOWCASE})$"),
        )
        rows = self._rows(query)
        state: dict[str, bytes] = {}
        showcase_cells: dict[str, bytes] = {}
        minute_c: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        minute_items: dict[int, list[bytes]] = defaultdict(list)  # per-item JSON partials, decoded if needed
        uniques: dict[str, int] = dict.fromkeys(UNIQUE_STEPS, 0)
        for row in rows:
            key = row.row_key.decode()
            kind = key[0]
            for cell in row.cells:
                q = cell.qualifier.decode()
                if cell.family == STATE:
                    state.setdefault(q, cell.value)  # newest version first
                elif cell.family == SHOWCASE:
                    showcase_cells.setdefault(q, cell.value)
                elif kind == "m" and cell.family == ITEMS:
                    minute_items[int(key.split("#")[2])].append(cell.value)
                elif kind == "m":
                    minute_c[int(key.split("#")[2])][q] += _int(cell.value)
                elif kind == "u" and q.startswith("u:"):
                    uniques[q[2:]] = uniques.get(q[2:], 0) + _int(cell.value)
        for minute in minute_items:
            minute_c.setdefault(minute, defaultdict(int))
        return self._room(
            stream_id,
            now,
            now_minute,
            state,
            showcase_cells,
            minute_c,
            minute_items,
            uniques,
            since_minutes,
            window_minutes,
            top,
        )

    def _room(
        self, stream_id, now, now_minute, state, showcase_cells, minute_c, minute_items, uniques, since, window, top
    ):
        info: dict[str, Any] = {}
        if "info" in state:
            doc = orjson.loads(state["info"])
            info = {k: doc.get(k) for k in ("title", "host_id", "host_name", "scheduled_start", "scheduled_end")}
            info["platform"] = doc.get("platform")
            info["started_at"] = iso(doc["ts_ms"])
        ended = orjson.loads(state["ended"]) if "ended" in state else None
        info["ended_at"] = iso(ended["ts_ms"]) if ended else None
        last_ms = orjson.loads(state["last"])["ts_ms"] if "last" in state else None
        info["last_event_at"] = iso(last_ms) if last_ms is not None else None

        totals = _zero_totals()
        slot_sales: dict[str, dict[str, float]] = defaultdict(lambda: {"orders": 0, "units": 0, "gmv": 0.0})
        items_by_minute: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        minutes = []
        level = 0
        for minute in sorted(minute_c):
            counters = minute_c[minute]
            m: dict[str, Any] = _zero_totals()
            for q, v in counters.items():
                if q in _ROOM_COUNTS:
                    m[_ROOM_COUNTS[q]] += v
                elif q in _ROOM_MONEY:
                    m[_ROOM_MONEY[q]] += v / 1000
                elif q.startswith("slot:"):
                    slot_id, _, metric = q[5:].rpartition(":")
                    if metric == "gmv_milli":
                        slot_sales[slot_id]["gmv"] += v / 1000
                    elif metric in ("orders", "units"):
                        slot_sales[slot_id][metric] += v
            for k in totals:
                totals[k] += m[k]
            level = max(0, level + m["entries"] - m["leaves"])
            minutes.append({"minute": iso(minute * 60_000), "viewers": level, **m})
        totals["viewers_now"] = level if since is None else None
        totals["net_gmv"] = totals["gmv"] - totals["refund_amount"]
        totals["buyers"] = uniques.get("buyer", 0)
        totals["unique_viewers"] = uniques.get("viewer", 0)
        funnel = {
            "impressions": totals["impressions"],
            "clicks": totals["clicks"],
            "add_to_carts": totals["add_to_carts"],
            "orders": totals["orders"],
            "unique": dict(uniques),
        }

        slots = slots_from_cells(state)
        slot_docs = []
        for s in slots:
            slot_docs.append(
                {**s.to_dict(), "sales": dict(slot_sales.get(s.slot_id, {"orders": 0, "units": 0, "gmv": 0.0}))}
            )
        on_stage = next((d for d in reversed(slot_docs) if d["ended_at"] is None), None)
        if ended and on_stage is not None:
            on_stage = None  # the stream ended with the slot open

        showcase: dict[str, dict[str, Any]] = {}
        for q, value in showcase_cells.items():
            kind, _, item = q.partition(":")
            doc = orjson.loads(value)
            entry = showcase.setdefault(item, {"status": "available", "price": None, "currency": None, "stock": None})
            if kind == "avail":
                entry["status"] = doc["status"]
                entry["stock"] = doc.get("stock")
            elif kind == "price":
                entry["price"], entry["currency"] = doc["price"], doc.get("currency")
        sold_out = sorted(i for i, e in showcase.items() if e["status"] == "sold_out")

        last_minute = max(minute_c) if minute_c else now_minute
        anchor = min(now_minute, last_minute)
        if ended is not None:  # an ended room's last picture: the windows before its stream_end, not
            anchor = min(anchor, ended["ts_ms"] // 60_000)  # the minute of a refund days later
        for minute, partials in minute_items.items():  # only the trending windows are decoded
            if not anchor - 2 * window < minute <= anchor:
                continue
            for value in partials:
                for item, metrics in orjson.loads(value).items():
                    d = items_by_minute[minute][item]
                    for metric, v in metrics.items():
                        name = "gmv" if metric == "gmv_milli" else _ITEM.get(metric)
                        if name:
                            d[name] = d.get(name, 0) + (v / 1000 if name == "gmv" else v)
        trending = _trending(items_by_minute, anchor, window, top)
        on_air = bool(minute_c or info.get("started_at")) and ended is None
        if last_ms is not None and now * 1000 - last_ms > 30 * 60_000 and "started_at" not in info:
            on_air = False  # a room nobody announced and nothing happened in for 30 minutes
        return RoomLive(
            stream_id=stream_id,
            as_of=iso(now * 1000),
            exists=bool(minute_c or state or showcase_cells),
            on_air=on_air,
            info=info,
            totals=totals,
            funnel=funnel,
            minutes=minutes,
            trending=trending,
            on_stage=on_stage,
            slots=slot_docs,
            sold_out=sold_out,
            showcase=showcase,
            window={
                "since": iso((now_minute - since) * 60_000) if since is not None else None,
                "trend_minutes": window,
                "trend_until": iso((anchor + 1) * 60_000),
            },
        )

    # -- a viewer -------------------------------------------------------------------------------
    def viewer(self, stream_id: str, user_id: str, *, limit: int | None = None) -> ViewerSession:
        from google.cloud.bigtable.data import ReadRowsQuery
        from google.cloud.bigtable.data import row_filters as rf

        limit = limit or self.cfg.session_events
        query = ReadRowsQuery(
            row_keys=[schema.viewer_key(stream_id, user_id)],
            row_filter=rf.RowFilterChain([rf.FamilyNameRegexFilter(f"^{SESSION}$"), rf.CellsColumnLimitFilter(limit)]),
        )
        events = []
        for row in self._rows(query):
            for cell in row.cells:
                t, _, item = cell.qualifier.decode().partition(":")
                doc = orjson.loads(cell.value)
                events.append(
                    {
                        "type": t,
                        "item_id": item,
                        "ts": doc.get("ts") or iso(cell.timestamp_micros // 1000),
                        "ts_ms": cell.timestamp_micros // 1000,
                        "event_id": doc.get("event_id"),
                        "price": doc.get("price"),
                        "quantity": doc.get("quantity"),
                    }
                )
        events.sort(key=lambda e: (e["ts_ms"], e["event_id"] or ""), reverse=True)
        return ViewerSession(stream_id, user_id, events[:limit])

    # -- the rooms ------------------------------------------------------------------------------
    def streams(self, *, limit: int = 500, now: float | None = None) -> list[dict[str, Any]]:
        """Every room row: stream id, title, host, started/ended, last event, on air (newest first)."""
        from google.cloud.bigtable.data import ReadRowsQuery, RowRange
        from google.cloud.bigtable.data import row_filters as rf

        now = time.time() if now is None else now
        query = ReadRowsQuery(
            row_ranges=[RowRange(start_key=b"r#", end_key=b"r$")],
            limit=limit,
            row_filter=rf.RowFilterChain(
                [
                    rf.FamilyNameRegexFilter(f"^{STATE}$"),
                    rf.ColumnQualifierRegexFilter(b"^(info|ended|last)$"),
                    rf.CellsColumnLimitFilter(1),
                ]
            ),
        )
        out = []
        for row in self._rows(query):
            cells = {c.qualifier.decode(): orjson.loads(c.value) for c in row.cells}
            info = cells.get("info", {})
            last = cells.get("last", {}).get("ts_ms")
            ended = cells.get("ended")
            on_air = ended is None and (bool(info) or (last is not None and now * 1000 - last < 30 * 60_000))
            out.append(
                {
                    "stream_id": row.row_key.decode()[2:],
                    "title": info.get("title"),
                    "host_id": info.get("host_id"),
                    "host_name": info.get("host_name"),
                    "started_at": iso(info["ts_ms"]) if info else None,
                    "ended_at": iso(ended["ts_ms"]) if ended else None,
                    "last_event_at": iso(last) if last is not None else None,
                    "on_air": on_air,
                }
            )
        out.sort(key=lambda s: s["last_event_at"] or s["started_at"] or "", reverse=True)
        return out


def _trending(items_by_minute, anchor: int, window: int, top: int) -> list[dict[str, Any]]:
    cur: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    prev: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for minute, items in items_by_minute.items():
        if anchor - window < minute <= anchor:
            target = cur
        elif anchor - 2 * window < minute <= anchor - window:
            target = prev
        else:
            continue
        for item, metrics in items.items():
            for k, v in metrics.items():
                target[item][k] += v

    def score(m) -> float:
        return sum(w * m.get(k, 0) for k, w in TREND_WEIGHTS.items())

    out = []
    for item, m in cur.items():
        s, p = score(m), score(prev.get(item, {}))
        if s <= 0:
            continue
        out.append(
            {
                "item_id": item,
                "score": s,
                "previous_score": p,
                "rise": (s - p) / max(p, 1.0),
                "window": {k: m.get(k, 0) for k in ("impressions", "clicks", "add_to_carts", "orders", "units", "gmv")},
                "previous": {k: prev.get(item, {}).get(k, 0) for k in ("clicks", "add_to_carts", "orders", "gmv")},
            }
        )
    out.sort(key=lambda d: (-d["score"], -d["rise"], d["item_id"]))
    return out[:top]
