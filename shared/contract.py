"""The event contract, version 1: one JSON object per viewer action, host action or catalog record.

Every record has a ``type``; the type decides which fields are required (a discriminated union, so
the JSON Schema published in ``schema/events.v1.json`` says exactly what this module accepts, and a
test keeps the two in agreement). Field rules:

* ``event_id``: the sender's idempotency key, 1-128 chars of ``[A-Za-z0-9._:@-]``.
* ``ts``: when the action happened, RFC 3339 with an explicit offset (``...Z`` or ``+08:00``), up to
  microseconds. It is kept as sent; clock skew is corrected in cleaning, never here.
* ``platform``, ``stream_id``, ``user_id``, ``item_id``: identifiers (same alphabet as event_id).
* money: ``price`` >= 0 and finite, ``currency`` an ISO 4217 code (3 capital letters).
* unknown top-level fields are refused (``props`` is the free-form place, <= 32 scalar values).
* ``rec_impression`` (an item of a recommend answer shown to the viewer: ``rec_id``, optional
  ``position``) and the optional ``rec_id`` of ``product_click`` / ``add_to_cart`` / ``purchase`` are the
  recommendation experiments' attribution (docs/metrics.md, "Recommendation experiments").
* host actions (``HOST_ACTIONS``: stream start/end, presentation slot start/end, showcase changes) carry
  a ``stream_id`` and no ``user_id``; ``showcase_update`` has conditional requirements (``price`` when
  ``change`` is ``"price"``, ``stock`` when it is ``"stock"``), checked by a model validator and
  published in the JSON Schema as ``if``/``then`` clauses.

``validate_record(obj)`` returns ``(record, None)`` or ``(None, reasons)`` where each reason names
the field (``"price: Input should be greater than or equal to 0"``). It never raises.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
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
    "rec_impression",
)
# what the host (the streamer's console) sends: a stream's start/end, a presentation slot (讲解) of one
# item between slot_start and slot_end (a new slot_start implicitly ends the previous slot of the stream),
# and showcase changes (sold out = change "sold_out", or "stock" with stock 0; "add" or stock > 0 revert it)
HOST_ACTIONS = ("stream_start", "stream_end", "slot_start", "slot_end", "showcase_update")
ShowcaseChange = Literal["add", "remove", "price", "stock", "sold_out"]
SHOWCASE_CHANGES: tuple[str, ...] = get_args(ShowcaseChange)
CATALOG_TYPE = "catalog_item"
ALL_TYPES = VIEWER_ACTIONS + HOST_ACTIONS + (CATALOG_TYPE,)

_ID = r"^[A-Za-z0-9._:@-]{1,128}$"
# (hours 00-23, offsets below 24 h with minutes 00-59, as RFC 3339 writes them; fromisoformat checks the rest)
_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]([01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


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
# a place in a recommendation list, 1 = first (recommend answers at most 100 items)
Position = Annotated[StrictInt, Field(ge=1, le=100), BeforeValidator(_integral)]
Quantity = Count
Stock = Annotated[StrictInt, Field(ge=0, le=1_000_000_000), BeforeValidator(_integral)]
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
    """``rec_id``: the recommendation the viewer tapped the item in (attribution, docs/metrics.md)."""

    type: Literal["product_click"]
    rec_id: Id | None = None


class AddToCart(_ProductAction):
    type: Literal["add_to_cart"]
    quantity: Quantity | None = None
    rec_id: Id | None = None


class Purchase(_ProductAction):
    type: Literal["purchase"]
    price: Money
    quantity: Quantity | None = None
    order_id: Id | None = None
    rec_id: Id | None = None


class Refund(_ProductAction):
    type: Literal["refund"]
    quantity: Quantity | None = None
    order_id: Id | None = None


class RecImpression(_ViewerAction):
    """The viewer app showed item ``item_id`` at ``position`` of the recommendation ``rec_id`` (the id of
    a recommend answer: shared/serving/experiments.py). One event per item shown."""

    type: Literal["rec_impression"]
    item_id: Id
    rec_id: Id
    position: Position | None = None


class _HostAction(_Record):
    stream_id: Id


class StreamStart(_HostAction):
    """The stream went on air: who hosts it, its title and the schedule it was announced with."""

    type: Literal["stream_start"]
    host_id: Id
    host_name: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    title: Annotated[StrictStr, Field(min_length=1, max_length=500)] | None = None
    scheduled_start: Timestamp | None = None
    scheduled_end: Timestamp | None = None


class StreamEnd(_HostAction):
    type: Literal["stream_end"]
    host_id: Id | None = None


class SlotStart(_HostAction):
    """The host starts presenting one item (a presentation slot); ``price`` is the on-stage price."""

    type: Literal["slot_start"]
    slot_id: Id
    item_id: Id
    host_id: Id | None = None
    price: Money | None = None
    currency: Currency | None = None


class SlotEnd(_HostAction):
    type: Literal["slot_end"]
    slot_id: Id
    item_id: Id
    host_id: Id | None = None


# showcase_update's conditional requirements, in one table read by the validator and the JSON Schema:
# change value -> (the field it requires, that field's JSON type)
_SHOWCASE_REQUIRES = {"price": ("price", "number"), "stock": ("stock", "integer")}


class ShowcaseUpdate(_HostAction):
    """An item of the stream's showcase changed: added, removed, repriced, restocked or sold out."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"change": {"const": change}}, "required": ["change"]},
                    "then": {"required": [fld], "properties": {fld: {"type": jtype}}},
                }
                for change, (fld, jtype) in _SHOWCASE_REQUIRES.items()
            ]
        }
    )

    type: Literal["showcase_update"]
    item_id: Id
    change: ShowcaseChange
    price: Money | None = None
    stock: Stock | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _conditional_fields(self) -> ShowcaseUpdate:
        need = _SHOWCASE_REQUIRES.get(self.change)
        if need and getattr(self, need[0]) is None:
            raise ValueError(f"{need[0]}: Field required when change is {self.change!r}")
        return self


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
    | RecImpression
    | StreamStart
    | StreamEnd
    | SlotStart
    | SlotEnd
    | ShowcaseUpdate
    | CatalogItem,
    Field(discriminator="type"),
]
RECORD_ADAPTER: TypeAdapter = TypeAdapter(Record)
MODEL_BY_TYPE = {m.model_fields["type"].annotation.__args__[0]: m for m in Record.__origin__.__args__}


_NAMED = re.compile(r"^[a-z_]+: ")


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
    if not loc and _NAMED.match(msg):  # a model validator's reason names its own field
        return msg
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
        "description": (
            "One viewer action, host action or catalog record; a webhook body carries one, a JSON array, or NDJSON."
        ),
        **schema,
    }


if __name__ == "__main__":  # python -m shared.contract > schema/events.v1.json (and > shared/contract.schema.json)
    import json
    import sys

    json.dump(json_schema(), sys.stdout, indent=2, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")
