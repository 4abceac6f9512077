"""Pure helpers shared by the writer and the reader: event times, slots, showcase status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

PRODUCT_TYPES = ("product_impression", "product_click", "add_to_cart", "purchase", "refund")
SESSION_TYPES = ("product_click", "add_to_cart", "purchase", "refund")  # impressions would crowd them out
HOST_TYPES = ("stream_start", "stream_end", "slot_start", "slot_end", "showcase_update")
# funnel steps counted as unique viewers: step -> the event type (None: any event but a refund)
UNIQUE_STEPS = {
    "viewer": None,
    "impression": "product_impression",
    "click": "product_click",
    "cart": "add_to_cart",
    "buyer": "purchase",
}


def ts_ms(value: str) -> int:
    """RFC 3339 (validated by ingest) -> epoch milliseconds."""
    dt = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso(ms: int | float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Slot:
    slot_id: str
    item_id: str
    start_ms: int
    end_ms: int | None  # None: still on stage
    price: float | None = None
    currency: str | None = None
    host_id: str | None = None

    def covers(self, item_id: str, at_ms: int) -> bool:
        return item_id == self.item_id and self.start_ms <= at_ms and (self.end_ms is None or at_ms < self.end_ms)

    def to_dict(self) -> dict:
        return {
            "slot_id": self.slot_id,
            "item_id": self.item_id,
            "started_at": iso(self.start_ms),
            "ended_at": iso(self.end_ms) if self.end_ms is not None else None,
            "price": self.price,
            "currency": self.currency,
            "host_id": self.host_id,
        }


def slots_from_cells(cells: dict[str, bytes]) -> list[Slot]:
    """``slot:<id>:start`` / ``slot:<id>:end`` state cells -> slots ordered by start. A new slot_start
    ends the previous slot (HOST_EVENTS.md): a slot ends at its slot_end or at the next start."""
    starts: dict[str, dict] = {}
    ends: dict[str, int] = {}
    for qual, value in cells.items():
        if not qual.startswith("slot:"):
            continue
        slot_id, _, edge = qual[5:].rpartition(":")
        doc = orjson.loads(value)
        if edge == "start":
            starts[slot_id] = doc
        elif edge == "end":
            ends[slot_id] = int(doc["ts_ms"])
    ordered = sorted(starts.items(), key=lambda kv: (kv[1]["ts_ms"], kv[0]))
    out = []
    for i, (slot_id, doc) in enumerate(ordered):
        end = ends.get(slot_id)
        if i + 1 < len(ordered):
            nxt = int(ordered[i + 1][1]["ts_ms"])
            end = nxt if end is None else min(end, nxt)
        out.append(
            Slot(
                slot_id,
                doc["item_id"],
                int(doc["ts_ms"]),
                end,
                doc.get("price"),
                doc.get("currency"),
                doc.get("host_id"),
            )
        )
    return out


def slot_for(slots: list[Slot], item_id: str, at_ms: int) -> Slot | None:
    for slot in reversed(slots):
        if slot.covers(item_id, at_ms):
            return slot
    return None
