"""The event contract, version 1: one JSON object per viewer action or catalog record.

Every record has a ``type``; the type decides which fields are required (a discriminated union, so
the JSON Schema published in ``schema/events.v1.json`` says exactly what this module accepts, and a
test keeps the two in agreement). Field rules:

* ``event_id``: the sender's idempotency key, 1-128 chars of ``[A-Za-z0-9._:@-]``.
* ``ts``: when the action happened, RFC 3339 with an explicit offset (``...Z`` or ``+08:00``), up to
  microseconds. It is kept as sent; clock skew is corrected in cleaning, never here.
* ``platform``, ``stream_id``, ``user_id``, ``item_id``: identifiers (same alphabet as event_id).
* money: ``price`` >= 0 and finite, ``currency`` an ISO 4217 code (3 capital letters).
* unknown top-level fields are refused (``props`` is the free-form place, <= 32 scalar values).

``validate_record(obj)`` returns ``(record, None)`` or ``(None, reasons)`` where each reason names
the field (``"price: Input should be greater than or equal to 0"``). It never raises.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.functional_validators import AfterValidator, BeforeValidator

SCHEMA_VERSION = 1

VIEWER_ACTIONS = (
    "stream_enter",
    "stream_leave",
    "like",
    "comment",
    "share",
    "follow",
    "gift",
    "product_impression",
    "product_click",
    "add_to_cart",
    "purchase",
    "refund",
)
CATALOG_TYPE = "catalog_item"
ALL_TYPES = VIEWER_ACTIONS + (CATALOG_TYPE,)

_ID = r"^[A-Za-z0-9._:@-]{1,128}$"
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"


_RFC3339_RE = re.compile(_RFC3339)


def _rfc3339(value: str) -> str:
    # The pattern fixes the shape; fromisoformat rejects impossible dates/times (month 13, 24:00).
    if not _RFC3339_RE.match(value):
        raise ValueError("expected an RFC 3339 date-time with offset, e.g. 2026-11-27T20:15:03.120Z")
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError as exc:
        raise ValueError(f"not a real date-time ({exc})") from None
    return value


Id = Annotated[StrictStr, Field(pattern=_ID)]
Timestamp = Annotated[
    StrictStr, Field(json_schema_extra={"pattern": _RFC3339, "format": "date-time"}), AfterValidator(_rfc3339)
]
Money = Annotated[StrictFloat, Field(ge=0, le=1e9, allow_inf_nan=False)]
Currency = Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")]


def _integral(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer (same number as 1); accept it as such, refuse 1.5 and "1".
    return int(value) if isinstance(value, float) and value.is_integer() else value


Count = Annotated[StrictInt, Field(ge=1, le=10_000), BeforeValidator(_integral)]
Quantity = Count
PropValue = Annotated[StrictStr, Field(max_length=256)] | StrictInt | StrictFloat | bool | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    ts: Timestamp
    platform: Id
    schema_version: Literal[1] = 1
    props: Annotated[dict[Annotated[str, Field(max_length=64)], PropValue], Field(max_length=32)] | None = None


class _ViewerAction(_Record):
    stream_id: Id
    user_id: Id
    item_id: Id | None = None


class StreamEnter(_ViewerAction):
    type: Literal["stream_enter"]


class StreamLeave(_ViewerAction):
    type: Literal["stream_leave"]


class Like(_ViewerAction):
    type: Literal["like"]
    count: Count | None = None


class Comment(_ViewerAction):
    type: Literal["comment"]
    text: Annotated[StrictStr, Field(max_length=2000)] | None = None


class Share(_ViewerAction):
    type: Literal["share"]


class Follow(_ViewerAction):
    type: Literal["follow"]


class Gift(_ViewerAction):
    type: Literal["gift"]
    gift_value: Money | None = None
    currency: Currency | None = None


class _ProductAction(_ViewerAction):
    item_id: Id
    price: Money | None = None
    currency: Currency | None = None


class ProductImpression(_ProductAction):
    type: Literal["product_impression"]


class ProductClick(_ProductAction):
    type: Literal["product_click"]


class AddToCart(_ProductAction):
    type: Literal["add_to_cart"]
    quantity: Quantity | None = None


class Purchase(_ProductAction):
    type: Literal["purchase"]
    price: Money
    quantity: Quantity | None = None
    order_id: Id | None = None


class Refund(_ProductAction):
    type: Literal["refund"]
    quantity: Quantity | None = None
    order_id: Id | None = None


class CatalogItem(_Record):
    """A product record: what a stream's showcase sells. ``stream_ids`` lists the showcases."""

    type: Literal["catalog_item"]
    item_id: Id
    title: Annotated[StrictStr, Field(min_length=1, max_length=500)]
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    category: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    price: Money
    currency: Currency | None = None
    stream_ids: Annotated[list[Id], Field(max_length=1000)] | None = None


Record = Annotated[
    StreamEnter
    | StreamLeave
    | Like
    | Comment
    | Share
    | Follow
    | Gift
    | ProductImpression
    | ProductClick
    | AddToCart
    | Purchase
    | Refund
    | CatalogItem,
    Field(discriminator="type"),
]
RECORD_ADAPTER: TypeAdapter = TypeAdapter(Record)
MODEL_BY_TYPE = {m.model_fields["type"].annotation.__args__[0]: m for m in Record.__origin__.__args__}


def _reason(err: dict[str, Any]) -> str:
    loc = err.get("loc", ())
    # Drop the union tag pydantic puts first ("purchase", "price") -> "price".
    if loc and loc[0] in MODEL_BY_TYPE:
        loc = loc[1:]
    where = ".".join(str(p) for p in loc) or "record"
    if err.get("type") == "union_tag_invalid":
        return f"type: unknown type {err.get('input', {}).get('type')!r}; expected one of {', '.join(ALL_TYPES)}"
    if err.get("type") == "union_tag_not_found":
        return "type: field required"
    if err.get("type") == "extra_forbidden":
        return f"{where}: unknown field (put free-form data in props)"
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{where}: {msg}"


def validate_record(obj: Any) -> tuple[BaseModel | None, list[str] | None]:
    """Validate one decoded JSON value. Returns (record, None) or (None, [reason, ...])."""
    if not isinstance(obj, dict):
        return None, [f"record: expected a JSON object, got {type(obj).__name__}"]
    try:
        return RECORD_ADAPTER.validate_python(obj), None
    except ValidationError as exc:
        reasons = [_reason(e) for e in exc.errors(include_url=False, include_context=False)]
        return None, reasons or ["record: invalid"]
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: never crash on hostile input
        return None, [f"record: {type(exc).__name__}"]


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record, as published in schema/events.v1.json."""
    schema = RECORD_ADAPTER.json_schema(mode="validation", ref_template="#/$defs/{model}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://daihuo.dev/schema/events.v1.json",
        "title": f"Daihuo event contract v{SCHEMA_VERSION}",
        "description": "One viewer action or catalog record; a webhook body carries one, a JSON array, or NDJSON.",
        **schema,
    }


if __name__ == "__main__":  # python -m shared.contract > schema/events.v1.json
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")
