"""The live writer: one Pub/Sub message of ingest (NDJSON events of one (type, stream) group) ->
exact, idempotent updates of the live table (docs/live.md, "Exactly once").

Two kinds of writes, nothing else:

* **claims**: per row and chunk of ids (event ids in a minute row, ``<step>:<user>`` flags in a
  unique-viewers row), a ``ReadModifyWriteRow`` appends the chunk's token to one cell per id and
  returns them: the ids whose cell starts with the token are the chunk's (the first claim of an id
  wins, for ever). Then one ``CheckAndMutateRow`` writes the chunk's marker and adds the sums of
  exactly those ids (``AddToCell`` into the ``c`` family) unless the marker is there. The token is a
  hash of the row and the chunk's ids, so every copy of a chunk wins the same ids and the marker lets
  its sums in once. Both calls are atomic single-row operations; a crash between or after them is
  repaired by the redelivery, which repeats both. (Why not one conditional mutation with an "any of
  these ids" qualifier regex: the emulator compiles the regex once per cell of the row, seconds per
  call for a busy minute; docs/live.md.)
* **sets**: state (stream info, slots, showcase) and session cells are written with the event time
  as the cell time, so writing them again is a no-op and the newest event wins on read.

Every step is re-run on a redelivery (each is idempotent on its own), so a crash between steps never
loses the later ones.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.live import rpc, schema
from shared.live.config import LiveConfig
from shared.live.schema import CLAIMS, COUNTERS, ITEMS, SESSION, SHOWCASE, STATE
from shared.live.state import HOST_TYPES, PRODUCT_TYPES, SESSION_TYPES, UNIQUE_STEPS, Slot, slot_for, slots_from_cells
from shared.live.state import ts_ms as parse_ts
from shared.log import get_logger

log = get_logger("live")

_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_VIEWER_TYPES = frozenset(
    (
        "stream_enter",
        "stream_leave",
        "like",
        "comment",
        "share",
        "follow",
        "gift",
        *PRODUCT_TYPES,
    )
)
_HOST = frozenset(HOST_TYPES)


class LiveStoreError(RuntimeError):
    """Bigtable did not complete a write: the message must be redelivered (the function answers 500)."""


@dataclass
class ApplyResult:
    events: int = 0
    counted: int = 0  # viewer events counted now (first delivery of their id)
    duplicates: int = 0  # viewer events whose id was already claimed
    host: int = 0  # host events written (idempotent sets)
    ignored: int = 0  # valid types the live layer does not count (catalog_item, ...)
    too_old: int = 0  # older than the retention: not applied
    rejected: list[dict[str, Any]] = field(default_factory=list)  # malformed lines, with reasons
    streams: list[str] = field(default_factory=list)  # the rooms the message touched (alerts judge them)

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "counted": self.counted,
            "duplicates": self.duplicates,
            "host": self.host,
            "ignored": self.ignored,
            "too_old": self.too_old,
            "rejected": len(self.rejected),
        }


def _num(value: Any, default: float | None = None) -> float | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or abs(value) > 1e12:
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def _check(ev: Any) -> str | None:
    """A light structural check (ingest validated the events against the contract; this guards the
    fields the live layer reads). None when fine, else the reason."""
    if not isinstance(ev, dict):
        return "record: not a JSON object"
    for name in ("event_id", "type", "ts"):
        if not isinstance(ev.get(name), str):
            return f"{name}: missing or not a string"
    if not _ID.match(ev["event_id"]):
        return "event_id: not an id"
    t = ev["type"]
    if t in _VIEWER_TYPES or t in _HOST:
        if not isinstance(ev.get("stream_id"), str) or not _ID.match(ev["stream_id"]):
            return "stream_id: missing or not an id"
    if t in _VIEWER_TYPES and (not isinstance(ev.get("user_id"), str) or not _ID.match(ev["user_id"])):
        return "user_id: missing or not an id"
    needs_item = t in PRODUCT_TYPES or t in ("slot_start", "slot_end", "showcase_update")
    if needs_item and (not isinstance(ev.get("item_id"), str) or not _ID.match(ev["item_id"])):
        return "item_id: missing or not an id"
    if t in ("slot_start", "slot_end") and (not isinstance(ev.get("slot_id"), str) or not _ID.match(ev["slot_id"])):
        return "slot_id: missing or not an id"
    try:
        ev["_ms"] = parse_ts(ev["ts"])
        for name in ("price", "quantity", "count", "gift_value", "stock"):
            _num(ev.get(name))
    except (ValueError, TypeError) as exc:
        return f"record: {exc}"
    if t == "purchase" and ev.get("price") is None:
        return "price: required for a purchase"
    return None


def parse_message(data: bytes) -> tuple[list[dict], list[dict]]:
    """NDJSON -> (checked events, rejected rows {reasons, raw})."""
    good, bad = [], []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad.append({"reasons": [f"record: not valid JSON ({exc})"], "raw": line.decode("utf-8", "replace")})
            continue
        reason = _check(ev)
        if reason:
            raw = {k: v for k, v in ev.items() if k != "_ms"} if isinstance(ev, dict) else ev
            bad.append({"reasons": [reason], "raw": raw})
        else:
            good.append(ev)
    return good, bad


def _milli(value: float) -> int:
    return int(round(value * 1000))


def minute_counters(events: Iterable[dict], slots: list[Slot]) -> dict[str, int]:
    """The sums one minute row keeps for ``events`` (all of one stream and minute). Money in
    thousandths (``*_milli``); GMV is gross (refunds have their own sums), like the batch KPIs."""
    c: dict[str, int] = defaultdict(int)
    for ev in events:
        t = ev["type"]
        c["n:" + t] += 1
        item = ev.get("item_id")
        if t == "like":
            c["likes"] += int(_num(ev.get("count"), 1) or 1)
        elif t == "gift" and ev.get("gift_value") is not None:
            c["gift_milli"] += _milli(_num(ev["gift_value"]) or 0.0)
        if t in PRODUCT_TYPES and item:
            c[f"i:{item}:{t}"] += 1
            q = int(_num(ev.get("quantity"), 1) or 1)
            if t == "add_to_cart":
                c["cart_units"] += q
            elif t == "purchase":
                g = _milli((_num(ev["price"]) or 0.0) * q)
                c["units"] += q
                c["gmv_milli"] += g
                c[f"i:{item}:units"] += q
                c[f"i:{item}:gmv_milli"] += g
                slot = slot_for(slots, item, ev["_ms"])
                if slot is not None:
                    c[f"slot:{slot.slot_id}:orders"] += 1
                    c[f"slot:{slot.slot_id}:units"] += q
                    c[f"slot:{slot.slot_id}:gmv_milli"] += g
            elif t == "refund":
                c["refund_units"] += q
                c["refund_milli"] += _milli((_num(ev.get("price"), 0.0) or 0.0) * q)
    return c


class LiveWriter:
    """Applies messages to the live table. Thread-safe (no state beyond the table handle)."""

    def __init__(
        self, table, cfg: LiveConfig | None = None, clock: Callable[[], float] = time.time, *, workers: int = 8
    ):
        self.table = table
        self.cfg = cfg or LiveConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self._committed: dict[bytes, set[str]] = {}  # unique-viewer flags this instance counted
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="live") if workers > 1 else None

    # -- the one entry point -------------------------------------------------------------------
    def apply_message(
        self, data: bytes, attributes: dict[str, str] | None = None, message_id: str | None = None
    ) -> ApplyResult:
        """Apply one message. ``message_id`` (Pub/Sub's, the same on every delivery) names the
        message's claims; without it the message's bytes do (identical on redelivery)."""
        message_key = message_id.encode() if message_id else hashlib.blake2b(data, digest_size=16).digest()
        events, rejected = parse_message(data)
        res = ApplyResult(events=len(events) + len(rejected), rejected=rejected)
        now_ms = int(self.clock() * 1000)
        oldest = now_ms - self.cfg.retention_s * 1000
        viewer: dict[str, list[dict]] = defaultdict(list)
        host: dict[str, list[dict]] = defaultdict(list)
        seen: set[str] = set()
        for ev in events:
            t = ev["type"]
            if t in _VIEWER_TYPES:
                if ev["_ms"] < oldest:
                    res.too_old += 1
                elif ev["event_id"] in seen:  # the same id twice in one message counts once
                    res.duplicates += 1
                else:
                    seen.add(ev["event_id"])
                    viewer[ev["stream_id"]].append(ev)
            elif t in _HOST:
                host[ev["stream_id"]].append(ev)
            else:
                res.ignored += 1
        res.streams = sorted(set(viewer) | set(host))
        try:
            for stream, evs in host.items():
                res.host += self._apply_host(stream, evs)
            for stream, evs in viewer.items():
                counted = self._apply_viewer(stream, evs, now_ms, message_key)
                res.counted += counted
                res.duplicates += len(evs) - counted
        except LiveStoreError:
            raise
        except Exception as exc:  # grpc / api_core errors, timeouts, MutationsExceptionGroup
            raise LiveStoreError(f"bigtable write failed: {type(exc).__name__}: {exc}") from exc
        return res

    # -- viewer events -------------------------------------------------------------------------
    def _apply_viewer(self, stream: str, events: list[dict], now_ms: int, message_key: bytes) -> int:
        cfg = self.cfg
        slots: list[Slot] = []
        if any(ev["type"] == "purchase" for ev in events):
            slots = self._slots(stream)
        rows: dict[bytes, list[dict]] = defaultdict(list)
        for ev in events:
            minute = ev["_ms"] // 60_000
            rows[schema.minute_key(stream, minute, schema.shard_of(ev["event_id"], cfg.shards))].append(ev)
        claim_us = now_ms * 1000
        # the rows are independent (each step is exact and idempotent by itself): their calls overlap
        jobs = []
        for key, evs in rows.items():
            minute_us = (evs[0]["_ms"] // 60_000) * 60_000_000
            by_id = {ev["event_id"]: ev for ev in evs}
            jobs.append(
                (
                    self._claim,
                    key,
                    list(by_id),
                    lambda ids, by_id=by_id: minute_counters((by_id[x] for x in ids), slots),
                    message_key,
                    claim_us,
                    minute_us,
                )
            )
        jobs += self._unique_jobs(stream, events, claim_us, message_key)
        jobs.append((self._apply_sessions, stream, events))
        results = self._run(jobs)
        return sum(r[0] for r, job in zip(results, jobs) if job[0] == self._claim and job[1].startswith(b"m#"))

    def _run(self, jobs: list[tuple]) -> list:
        """Run (fn, *args) jobs, overlapping their Bigtable calls; the first failure is raised after
        all have finished (nothing is left running behind an answer)."""
        if len(jobs) == 1 or self._pool is None:
            return [fn(*args) for fn, *args in jobs]
        futures = [self._pool.submit(fn, *args) for fn, *args in jobs]
        errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc
        return [f.result() for f in futures]

    def _unique_jobs(self, stream: str, events: list[dict], claim_us: int, message_key: bytes) -> list[tuple]:
        rows: dict[bytes, set[str]] = defaultdict(set)
        for ev in events:
            t = ev["type"]
            key = schema.unique_key(stream, schema.shard_of(ev["user_id"], self.cfg.shards))
            for step, step_type in UNIQUE_STEPS.items():
                if (step_type is None and t != "refund") or t == step_type:
                    rows[key].add(f"{step}:{ev['user_id']}")
        day_us = (claim_us // 86_400_000_000) * 86_400_000_000
        jobs = []
        for key, flags in rows.items():
            with self._lock:  # flags this instance counted (committed) already: no need to claim again
                known = self._committed.get(key, set())
                todo = sorted(f for f in flags if f not in known)
            if todo:
                jobs.append((self._claim_unique, key, todo, message_key, claim_us, day_us))
        return jobs

    def _claim_unique(self, key: bytes, todo: list[str], message_key: bytes, claim_us: int, day_us: int):
        def counters(flags):
            c: dict[str, int] = defaultdict(int)
            for flag in flags:
                c["u:" + flag.split(":", 1)[0]] += 1
            return c

        out = self._claim(key, todo, counters, message_key, claim_us, day_us)
        with self._lock:
            if sum(len(v) for v in self._committed.values()) > 500_000:
                self._committed.clear()  # bounded memory; only costs re-claims
            self._committed.setdefault(key, set()).update(out[1])
        return out

    def _apply_sessions(self, stream: str, events: list[dict]) -> None:
        rows: dict[bytes, list[tuple[str, bytes, bytes, int]]] = defaultdict(list)
        last = max(ev["_ms"] for ev in events)  # the room row exists (and says when it was last active)
        rows[schema.room_key(stream)].append((STATE, b"last", orjson.dumps({"ts_ms": last}), last * 1000))
        for ev in events:
            if ev["type"] not in SESSION_TYPES:
                continue
            value = {"event_id": ev["event_id"], "ts": ev["ts"]}
            for name in ("price", "quantity"):
                if ev.get(name) is not None:
                    value[name] = ev[name]
            rows[schema.viewer_key(stream, ev["user_id"])].append(
                (SESSION, f"{ev['type']}:{ev['item_id']}".encode(), orjson.dumps(value), ev["_ms"] * 1000)
            )
        rpc.set_cells(self.table, rows, self.cfg.timeout_s)

    # -- the claim -----------------------------------------------------------------------------
    def _claim(
        self,
        key: bytes,
        ids: list[str],
        counters: Callable[[list[str]], dict[str, int]],
        message_key: bytes,
        claim_us: int,
        counter_us: int,
    ) -> tuple[int, list[str]]:
        """Count, exactly once, the ids of ``ids`` that no other message claimed first. Returns (ids
        counted by this call, ids this message owns). Two kinds of atomic single-row calls on ``key``
        (module doc, docs/live.md):

        1. ``ReadModifyWriteRow`` (per ``claim_chunk`` ids) appends this message's token to one ``x``
           cell per id and returns the cells: an id whose value starts with the token is this
           message's (the first claim of an id wins; a redelivery appends the same token again and
           owns the same ids).
        2. one ``CheckAndMutateRow``: unless the row has the message's marker ``x:!<token>``, write
           the marker, ``AddToCell`` the room sums of the owned ids and set their per-item sums
           (one JSON cell in ``i``), as one mutation.
        The token is a hash of the row and the message (its Pub/Sub id, else its bytes), so every
        delivery of a message owns the same ids and the marker lets its sums in once."""
        from google.cloud.bigtable.data import row_filters as rf
        from google.cloud.bigtable.data.mutations import SetCell

        token = hashlib.blake2b(key + b"\n" + message_key, digest_size=8).hexdigest().encode()
        marker = b"!" + token
        if len(ids) <= self.cfg.fast_claim:
            # fast path for a few ids (single-event messages): one conditional mutation, "none of these
            # ids in the row" -> write the ids (valued with the token, as the append
            # would), the marker and the sums. Any hit falls back to the append claim below.
            # (no marker in the predicate: a message writes its ids no later than its marker, and a
            # redelivery claims a subset of the first delivery's ids, so absent ids mean no marker)
            ranges = [
                rf.ColumnRangeFilter(CLAIMS, q, q, inclusive_start=True, inclusive_end=True)
                for q in (x.encode() for x in ids)
            ]
            predicate = ranges[0] if len(ranges) == 1 else rf.RowFilterUnion(ranges)
            claim_cells = [SetCell(CLAIMS, x.encode(), token, claim_us) for x in ids]
            hit = self.table.check_and_mutate_row(
                key,
                predicate,
                true_case_mutations=None,
                false_case_mutations=claim_cells + self._sums(marker, token, counters(ids), claim_us, counter_us),
                operation_timeout=self.cfg.timeout_s,
            )
            if not hit:
                return len(ids), list(ids)
        owned: set[str] = set()
        for i in range(0, len(ids), self.cfg.claim_chunk):
            quals = [x.encode() for x in ids[i : i + self.cfg.claim_chunk]]
            cells = rpc.append(self.table, key, CLAIMS, quals, token, self.cfg.timeout_s)
            owned.update(q.decode() for q, v in cells if v[:16] == token)
        mine = [x for x in ids if x in owned]
        if not mine:
            return 0, mine
        mutations = self._sums(marker, token, counters(mine), claim_us, counter_us)
        already = self.table.check_and_mutate_row(
            key,
            rf.ColumnRangeFilter(CLAIMS, marker, marker, inclusive_start=True, inclusive_end=True),
            true_case_mutations=None,
            false_case_mutations=mutations,
            operation_timeout=self.cfg.timeout_s,
        )
        return (0 if already else len(mine)), mine

    @staticmethod
    def _sums(marker: bytes, token: bytes, sums: dict[str, int], claim_us: int, counter_us: int) -> list:
        """The marker, the room sums (``AddToCell``) and the per-item sums (one JSON cell)."""
        from google.cloud.bigtable.data.mutations import AddToCell, SetCell

        mutations: list = [SetCell(CLAIMS, marker, b"", claim_us)]
        items: dict[str, dict[str, int]] = defaultdict(dict)
        for q, v in sums.items():
            if not v:
                continue
            if q.startswith("i:"):  # per item: one JSON cell (few AddToCells keep the mutation cheap)
                item, _, metric = q[2:].rpartition(":")
                items[item][metric] = int(v)
            else:
                mutations.append(AddToCell(COUNTERS, q.encode(), int(v), counter_us))
        if items:
            mutations.append(SetCell(ITEMS, token, orjson.dumps(items), counter_us))
        return mutations

    # -- host events ---------------------------------------------------------------------------
    def _slots(self, stream: str) -> list[Slot]:
        from google.cloud.bigtable.data import row_filters as rf

        row = self.table.read_row(
            schema.room_key(stream),
            row_filter=rf.RowFilterChain(
                [
                    rf.FamilyNameRegexFilter(f"^{STATE}$"),
                    rf.ColumnQualifierRegexFilter(rb"^slot:.*"),
                    rf.CellsColumnLimitFilter(1),
                ]
            ),
            operation_timeout=self.cfg.timeout_s,
        )
        cells = {c.qualifier.decode(): c.value for c in row.cells} if row is not None else {}
        return slots_from_cells(cells)

    def _apply_host(self, stream: str, events: list[dict]) -> int:
        from google.cloud.bigtable.data.mutations import SetCell

        muts = []
        for ev in events:
            t, ms = ev["type"], ev["_ms"]
            us = ms * 1000
            base = {"event_id": ev["event_id"], "ts_ms": ms}
            if t == "stream_start":
                info = {k: ev.get(k) for k in ("host_id", "host_name", "title", "scheduled_start", "scheduled_end")}
                muts.append(SetCell(STATE, b"info", orjson.dumps({**base, **info, "platform": ev.get("platform")}), us))
            elif t == "stream_end":
                muts.append(SetCell(STATE, b"ended", orjson.dumps({**base, "host_id": ev.get("host_id")}), us))
            elif t == "slot_start":
                doc = {**base, "item_id": ev["item_id"]}
                doc.update({k: ev.get(k) for k in ("price", "currency", "host_id")})
                muts.append(SetCell(STATE, f"slot:{ev['slot_id']}:start".encode(), orjson.dumps(doc), us))
            elif t == "slot_end":
                doc = {**base, "item_id": ev["item_id"]}
                muts.append(SetCell(STATE, f"slot:{ev['slot_id']}:end".encode(), orjson.dumps(doc), us))
            elif t == "showcase_update":
                item, change = ev["item_id"], ev.get("change")
                status = None
                if change == "sold_out" or (change == "stock" and ev.get("stock") == 0):
                    status = "sold_out"
                elif change == "add" or (change == "stock" and (ev.get("stock") or 0) > 0):
                    status = "available"
                elif change == "remove":
                    status = "removed"
                if status is not None:
                    doc = {**base, "status": status, "change": change, "stock": ev.get("stock")}
                    muts.append(SetCell(SHOWCASE, f"avail:{item}".encode(), orjson.dumps(doc), us))
                if ev.get("price") is not None:
                    doc = {**base, "price": ev["price"], "currency": ev.get("currency")}
                    muts.append(SetCell(SHOWCASE, f"price:{item}".encode(), orjson.dumps(doc), us))
        if muts:
            self.table.mutate_row(schema.room_key(stream), muts, operation_timeout=self.cfg.timeout_s)
        return len(events)
