"""One raw line -> its verdict and typed row, as the DuckDB clean step gives them, in plain Python.

The rules are not restated: validity is ``shared.contract`` (``shared.contract_fast.check`` first, the
compiled checks derived from the contract's JSON Schema; every line it does not pass goes to
``shared.contract.validate_record``, the reference, which gives the reasons), the reason's category is
``shared.pipeline.clean._categorise``, a duplicate key is ``clean._duplicate_key``, the clock-skew rule is
``shared.pipeline.skew.skew_flags`` (the function archive calls), the defaults are the types that
``contract_sql.types_with`` names, the column sets are ``clean.CLEAN_SCHEMA`` / ``HOST_SCHEMA`` /
``CATALOG_SCHEMA``. What this module adds is only how DuckDB's JSON reader *types* an accepted value
(a JSON number in a DOUBLE field is a float, ``1.0`` in a BIGINT field is 1, ``props`` is its minified
JSON text), so that the rows are the DuckDB path's row for row (``tests/test_beam_clean.py``).

Nothing here imports apache_beam: the functions are plain and the Beam job (``pipelines.beam.clean``)
maps them over a PCollection.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared import contract_fast
from shared.contract import CATALOG_TYPE, HOST_ACTIONS, VIEWER_ACTIONS, validate_record
from shared.pipeline import clean as dclean
from shared.pipeline import contract_sql
from shared.pipeline.config import TimeRules
from shared.pipeline.skew import skew_flags

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIELDS = contract_sql.FIELDS  # field -> the DuckDB type clean's reader gives it
_WITH_CURRENCY = frozenset(contract_sql.types_with("currency", VIEWER_ACTIONS))
_WITH_QUANTITY = frozenset(contract_sql.types_with("quantity", VIEWER_ACTIONS))
_VIEWER = frozenset(VIEWER_ACTIONS)
_HOST = frozenset(HOST_ACTIONS)
_HOST_FIELDS = dclean._HOST_FIELDS
_HOST_TS = frozenset(dclean._HOST_SELECT)  # host fields read as timestamps (date-time fields)
_KEPT = list(dclean._KEPT)  # the fields DuckDB's ``parsed`` keeps of a viewer row (an unknown item's raw)
_KEY_COLON = re.compile(rb'"\s*:')


@dataclass(frozen=True)
class Params:
    """What the per-line rules read of the clean configuration (plain values: picklable by Beam)."""

    max_future_s: float
    max_past_s: float
    late_after_s: float
    default_currency: str
    run_id: str

    @classmethod
    def of(cls, cfg: dclean.CleanConfig, run_id: str) -> Params:
        r = cfg.rules
        return cls(r.max_future_s, r.max_past_s, r.late_after_s, cfg.default_currency.replace("'", ""), run_id)

    @property
    def rules(self) -> TimeRules:
        return TimeRules(max_future_s=self.max_future_s, max_past_s=self.max_past_s, late_after_s=self.late_after_s)


# ------------------------------------------------------------------------------------------ lines
def split_lines(data: bytes) -> list[str]:
    """A raw object's lines exactly as ``clean.lines_array`` cuts them: gunzip, empty lines skipped; every
    line keeps its "\\n" unless the object has an empty line (then none does) -- the quarantine's ``raw``
    and the contract's JSON error positions see the same text."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if not data:
        return []
    if not data.endswith(b"\n"):
        data += b"\n"
    parts = data.split(b"\n")[:-1]
    if len(data) < 2**31 and all(parts):
        return [p.decode("utf-8", "replace") + "\n" for p in parts]
    return [p.decode("utf-8", "replace") for p in parts if p]


# ------------------------------------------------------------------------------------------ values
def ts_us(value: Any, upper: bool = True) -> int | None:
    """An RFC 3339 string -> microseconds since the epoch (DuckDB's TIMESTAMPTZ cast; ``upper``: lower-case
    t / z read upper-cased, as ``contract_sql.timestamp_sql`` does), None if it is none."""
    if not isinstance(value, str):
        return None
    if upper:
        value = value.upper()
    elif "t" in value or "z" in value:
        return None  # DuckDB's plain cast refuses them
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # (the session time zone is UTC)
    return (dt - _EPOCH) // _US


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def _varchar(v: Any) -> str | None:
    """A JSON value as DuckDB's reader types it in a VARCHAR field (the quarantine's event_id / received_at)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return orjson.dumps(v).decode()


def _typed(field: str, v: Any) -> Any:
    """An accepted value as DuckDB's JSON reader gives it (DOUBLE -> float, BIGINT -> int, JSON -> text)."""
    if v is None:
        return None
    d = _FIELDS[field]
    if d == "DOUBLE":
        return float(v)
    if d == "BIGINT":
        return int(v)
    if d == "JSON":
        return orjson.dumps(v).decode()
    return v


def _keys(o: Any) -> int:
    """The keys of every object inside a decoded JSON value."""
    n = 0
    if o.__class__ is dict:
        n = len(o)
        vals = o.values()
    elif o.__class__ is list:
        vals = o
    else:
        return 0
    for v in vals:
        if v.__class__ is dict or v.__class__ is list:
            n += _keys(v)
    return n


def _maybe_duplicate_key(line: str, obj: Any) -> bool:
    """False only when the line certainly has no duplicate key: every key of the text (each is followed by
    ``":``, maybe with blanks between) survived decoding. Sound: a duplicate drops a key, so the text then
    has more ``":`` than the decoded value has keys."""
    marks = line.count('":')
    if '" ' in line or '"\t' in line or '"\r' in line or '"\n' in line[:-1]:
        marks = len(_KEY_COLON.findall(line.encode()))
    return marks != _keys(obj)


# ------------------------------------------------------------------------------------------ verdicts
def judge(line: str, src: str, order: tuple[int, int], p: Params) -> tuple[str, dict[str, Any]]:
    """(kind, row): kind ``bad`` (a quarantine row), ``catalog`` (a catalog record), ``viewer`` or ``host``
    (an accepted event, not yet deduplicated). ``order`` = (raw object index, line index): the DuckDB
    path's row_id order (dedupe ties, quarantine order, the latest catalog record)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return "bad", _bad("unparseable", "record", [f"record: not valid JSON ({exc})"], line, None, None, src, order)
    o = {k: v for k, v in obj.items() if k != "received_at"} if isinstance(obj, dict) else obj
    reasons = None
    if not contract_fast.check(o):
        _, reasons = validate_record(o)
    if reasons is None and _maybe_duplicate_key(line, obj) and (dup := dclean._duplicate_key(line)):
        # the contract saw the last value of the key, DuckDB's reader the first: refused (as clean does)
        reasons = [f"{dup}: duplicate key (the record is ambiguous)"]
    if reasons is not None:
        cat, fld = dclean._categorise(reasons)
        is_obj = isinstance(obj, dict)
        eid = _varchar(obj.get("event_id")) if is_obj else None
        rec = _varchar(obj.get("received_at")) if is_obj else None
        return "bad", _bad(cat, fld, reasons, line, eid, rec, src, order)
    t = obj["type"]
    if t == CATALOG_TYPE:
        return "catalog", {
            "item_id": obj["item_id"],
            "title": obj.get("title"),
            "description": obj.get("description"),
            "category": obj.get("category"),
            "price": _typed("price", obj.get("price")),
            "currency": obj.get("currency") if obj.get("currency") is not None else p.default_currency,
            "stream_ids": obj.get("stream_ids"),
            "platform": obj.get("platform"),
            "ts": ts_us(obj["ts"]),
            "event_id": obj["event_id"],
            "run_id": p.run_id,
            "_order": order,
        }
    received = obj.get("received_at")
    rec_us = ts_us(received, upper=False) if isinstance(received, str) else ts_us(_varchar(received), upper=False)
    sent_us = ts_us(obj["ts"])
    corrected = late = False
    if rec_us is not None and sent_us is not None:
        corrected, late = skew_flags(rec_us / 1e6 - sent_us / 1e6, p.rules)
    row: dict[str, Any] = {
        "event_id": obj["event_id"],
        "type": t,
        "ts": rec_us if corrected else sent_us,
        "received_at": rec_us,
        "platform": obj["platform"],
        "stream_id": obj.get("stream_id"),
    }
    if t in _VIEWER:
        cur = obj.get("currency")
        qty = obj.get("quantity")
        cnt = obj.get("count")
        row.update(
            user_id=obj.get("user_id"),
            item_id=obj.get("item_id"),
            price=_typed("price", obj.get("price")),
            currency=cur if cur is not None else (p.default_currency if t in _WITH_CURRENCY else None),
            quantity=int(qty) if qty is not None else (1 if t in _WITH_QUANTITY else None),
            order_id=obj.get("order_id"),
            count=int(cnt) if cnt is not None else (1 if t == "like" else None),
            gift_value=_typed("gift_value", obj.get("gift_value")),
            text=obj.get("text"),
            props=_typed("props", obj.get("props")),
            ts_sent=obj["ts"],
            ts_corrected=bool(corrected),
            late=bool(late),
            run_id=p.run_id,
            rec_id=obj.get("rec_id"),
            position=_typed("position", obj.get("position")),
        )
        if t == "purchase":
            # an unknown item's quarantine raw: the line if DuckDB's fast path kept it, else its parsed fields
            row["_raw"] = line if not contract_fast.check(o) else _parsed_raw(obj)
            row["_src"] = src
            row["_received_raw"] = _varchar(received)
        kind = "viewer"
    else:
        for f in _HOST_FIELDS:
            v = obj.get(f)
            row[f] = ts_us(v) if f in _HOST_TS else _typed(f, v)
        cur = obj.get("currency")
        row.update(
            currency=cur if cur is not None else (p.default_currency if obj.get("price") is not None else None),
            props=_typed("props", obj.get("props")),
            ts_sent=obj["ts"],
            ts_corrected=bool(corrected),
            late=bool(late),
            run_id=p.run_id,
        )
        kind = "host"
    row["_order"] = order
    return kind, row


def _parsed_raw(obj: dict[str, Any]) -> str:
    """``to_json(j)`` of DuckDB's parsed viewer struct (its kept fields, typed), as text."""
    out = {}
    for f in _KEPT:
        v = obj.get(f)
        if v is not None and _FIELDS[f] == "DOUBLE":
            v = float(v)
        elif v is not None and _FIELDS[f] == "BIGINT":
            v = int(v)
        elif f == "received_at":
            v = _varchar(v)
        out[f] = v
    return orjson.dumps(out).decode()


def _bad(reason, fld, reasons, raw, eid, rec, src, order) -> dict[str, Any]:
    return {
        "reason": reason,
        "field": fld,
        "reasons": reasons,
        "raw": raw,
        "event_id": eid,
        "received_at": rec,
        "source": src,
        "_order": order,
    }


def unknown_item(row: dict[str, Any]) -> dict[str, Any]:
    """The quarantine row of a purchase of an item no catalog named (``unknown_items="quarantine"``)."""
    return _bad(
        "unknown_item",
        "item_id",
        [f"item_id: {row['item_id']} is not in the catalog seen so far"],
        row["_raw"],
        row["event_id"],
        row["_received_raw"],
        row["_src"],
        row["_order"],
    )


_PRIVATE = ("_order", "_raw", "_src", "_received_raw")


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The row without the job's private fields (``_order``, ``_raw``...), in place."""
    for k in _PRIVATE:
        row.pop(k, None)
    return row


def is_host(kind: str) -> bool:
    return kind == "host"


HOST_TYPES = _HOST
