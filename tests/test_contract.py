"""The event contract: hand-made cases, the published JSON Schema agreeing with the validator, and
property-based tests (hypothesis): no input crashes the validator; every rejection names a reason."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared.contract import (
    ALL_TYPES,
    CATALOG_TYPE,
    HOST_ACTIONS,
    MODEL_BY_TYPE,
    SHOWCASE_CHANGES,
    VIEWER_ACTIONS,
    json_schema,
    validate_record,
)
from tests import factories

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "events.v1.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def schema_valid(obj) -> bool:
    return VALIDATOR.is_valid(obj)


def test_published_schema_is_the_generated_one():
    assert SCHEMA == json.loads(json.dumps(json_schema())), "run: python -m shared.contract > schema/events.v1.json"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_type_has_a_model():
    assert set(MODEL_BY_TYPE) == set(ALL_TYPES)


def test_type_sets_partition_the_contract():
    assert set(VIEWER_ACTIONS) | set(HOST_ACTIONS) | {CATALOG_TYPE} == set(ALL_TYPES)
    assert len(VIEWER_ACTIONS) + len(HOST_ACTIONS) + 1 == len(ALL_TYPES)
    assert HOST_ACTIONS == ("stream_start", "stream_end", "slot_start", "slot_end", "showcase_update")


def test_valid_event_of_each_type():
    for t in ALL_TYPES:
        ev = factories.record(t)
        record, reasons = validate_record(ev)
        assert reasons is None, (t, reasons)
        assert record.type == t
        assert schema_valid(ev)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda e: e.update(price=-1), "price: Input should be greater than or equal to 0"),
        (lambda e: e.update(price="12"), "price: Input should be a valid number"),
        (lambda e: e.update(price=True), "price: Input should be a valid number"),
        (lambda e: e.update(price=float("inf")), "price: Input should be a finite number"),
        (lambda e: e.update(quantity=0), "quantity: Input should be greater than or equal to 1"),
        (lambda e: e.update(quantity=1.5), "quantity: Input should be a valid integer"),
        (lambda e: e.update(currency="cny"), "currency: String should match pattern '^[A-Z]{3}$'"),
        (lambda e: e.pop("item_id"), "item_id: Field required"),
        (lambda e: e.pop("price"), "price: Field required"),
        (
            lambda e: e.update(ts="2026-11-27 20:15:03"),
            "ts: Value error, expected an RFC 3339 date-time with offset, e.g. 2026-11-27T20:15:03.120Z",
        ),
        (
            lambda e: e.update(ts="2026-11-27T20:15:03"),
            "ts: Value error, expected an RFC 3339 date-time with offset, e.g. 2026-11-27T20:15:03.120Z",
        ),
        (
            lambda e: e.update(ts="2026-02-30T20:15:03Z"),
            "ts: Value error, not a real date-time (day is out of range for month)",
        ),
        (lambda e: e.update(user_id="u 1"), "user_id: String should match pattern '^[A-Za-z0-9._:@-]{1,128}$'"),
        (lambda e: e.update(coupon="X"), "coupon: unknown field (put free-form data in props)"),
        (lambda e: e.update(props={"a": {"nested": 1}}), None),
    ],
)
def test_each_bad_field_is_named(mutate, reason):
    ev = factories.event("purchase")
    mutate(ev)
    record, reasons = validate_record(ev)
    assert record is None
    if reason is None:
        assert reasons and all(r.startswith("props.a") for r in reasons)
    else:
        assert reason.replace("Value error, ", "") in reasons
    assert not schema_valid(ev)


def test_recommendation_attribution_fields():
    # rec_impression: one item of a recommend answer shown; rec_id required, position 1..100
    ok = factories.event("rec_impression", rec_id="r1.exp1.A.abcDEF_-123", position=3)
    assert validate_record(ok)[1] is None and schema_valid(ok)
    for bad, reason in (
        ({"position": 0}, "position: Input should be greater than or equal to 1"),
        ({"position": 101}, "position: Input should be less than or equal to 100"),
        ({"rec_id": "r 1"}, "rec_id: String should match pattern '^[A-Za-z0-9._:@-]{1,128}$'"),
    ):
        ev = {**ok, **bad}
        assert reason in validate_record(ev)[1] and not schema_valid(ev)
    ev = {k: v for k, v in ok.items() if k != "rec_id"}
    assert "rec_id: Field required" in validate_record(ev)[1]
    ev = {k: v for k, v in ok.items() if k != "item_id"}
    assert "item_id: Field required" in validate_record(ev)[1]
    # the optional rec_id of the actions it may lead to; no other type carries one
    for t in ("product_click", "add_to_cart", "purchase"):
        ev = factories.event(t, rec_id="r1.exp1.A.abcDEF_-123")
        assert validate_record(ev)[1] is None and schema_valid(ev)
    ev = factories.event("like", rec_id="r1.exp1.A.abcDEF_-123")
    assert validate_record(ev)[1] == ["rec_id: unknown field (put free-form data in props)"]


FULL_HOST = {
    "stream_start": {
        "host_id": "h-7",
        "host_name": "李佳 Li",
        "title": "双十二 预热专场",
        "scheduled_start": "2026-11-27T20:00:00+08:00",
        "scheduled_end": "2026-11-27T23:00:00+08:00",
    },
    "stream_end": {"host_id": "h-7"},
    "slot_start": {"slot_id": "slot-3", "item_id": "sku-9", "host_id": "h-7", "price": 9.9, "currency": "CNY"},
    "slot_end": {"slot_id": "slot-3", "item_id": "sku-9", "host_id": "h-7"},
    "showcase_update": {"item_id": "sku-9", "change": "price", "price": 19.9, "currency": "CNY"},
}


@pytest.mark.parametrize("t", HOST_ACTIONS)
def test_host_events_minimal_and_full(t):
    for ev in (factories.host_event(t), factories.host_event(t, **FULL_HOST[t])):
        record, reasons = validate_record(ev)
        assert reasons is None, (ev, reasons)
        assert record.type == t and record.stream_id == ev["stream_id"]
        assert schema_valid(ev)
    # host events have no viewer: a user_id is an unknown field, the stream is required
    assert validate_record(factories.host_event(t, user_id="u-1"))[1] == [
        "user_id: unknown field (put free-form data in props)"
    ]
    ev = factories.host_event(t)
    del ev["stream_id"]
    assert validate_record(ev)[1] == ["stream_id: Field required"]
    assert not schema_valid(ev)


@pytest.mark.parametrize("change", SHOWCASE_CHANGES)
def test_every_showcase_change_is_accepted_with_what_it_needs(change):
    extra = {"price": {"price": 5.0}, "stock": {"stock": 0}}.get(change, {})
    ev = factories.host_event("showcase_update", change=change, **extra)
    assert validate_record(ev)[1] is None and schema_valid(ev)


ID_PATTERN = "String should match pattern '^[A-Za-z0-9._:@-]{1,128}$'"


@pytest.mark.parametrize(
    "t, change, reason",
    [
        ("stream_start", {"host_id": None}, "host_id: Input should be a valid string"),
        ("stream_start", {"host_id": "h 1"}, f"host_id: {ID_PATTERN}"),
        ("stream_start", {"host_name": ""}, "host_name: String should have at least 1 character"),
        ("stream_start", {"host_name": "x" * 201}, "host_name: String should have at most 200 characters"),
        ("stream_start", {"title": ""}, "title: String should have at least 1 character"),
        ("stream_start", {"title": "x" * 501}, "title: String should have at most 500 characters"),
        (
            "stream_start",
            {"scheduled_start": "2026-11-27 20:00"},
            "scheduled_start: expected an RFC 3339 date-time with offset, e.g. 2026-11-27T20:15:03.120Z",
        ),
        (
            "stream_start",
            {"scheduled_end": "2026-11-31T20:00:00Z"},
            "scheduled_end: not a real date-time (day is out of range for month)",
        ),
        ("stream_end", {"host_id": 7}, "host_id: Input should be a valid string"),
        ("stream_end", {"item_id": "sku-1"}, "item_id: unknown field (put free-form data in props)"),
        ("slot_start", {"slot_id": None}, "slot_id: Input should be a valid string"),
        ("slot_start", {"item_id": "a b"}, f"item_id: {ID_PATTERN}"),
        ("slot_start", {"price": -1}, "price: Input should be greater than or equal to 0"),
        ("slot_start", {"currency": "rmb"}, "currency: String should match pattern '^[A-Z]{3}$'"),
        ("slot_end", {"price": 1.0}, "price: unknown field (put free-form data in props)"),
        (
            "showcase_update",
            {"change": "restock"},
            "change: Input should be 'add', 'remove', 'price', 'stock' or 'sold_out'",
        ),
        ("showcase_update", {"change": "price"}, "price: Field required when change is 'price'"),
        ("showcase_update", {"change": "price", "price": None}, "price: Field required when change is 'price'"),
        ("showcase_update", {"change": "stock"}, "stock: Field required when change is 'stock'"),
        ("showcase_update", {"change": "stock", "stock": -1}, "stock: Input should be greater than or equal to 0"),
        ("showcase_update", {"change": "stock", "stock": 2.5}, "stock: Input should be a valid integer"),
        ("showcase_update", {"change": "stock", "stock": "3"}, "stock: Input should be a valid integer"),
        ("showcase_update", {"change": "price", "price": True}, "price: Input should be a valid number"),
    ],
)
def test_each_bad_host_field_is_named(t, change, reason):
    ev = factories.host_event(t, **change)
    record, reasons = validate_record(ev)
    assert record is None
    assert reasons == [reason]
    assert not schema_valid(ev)


def test_host_required_fields_are_named():
    for t, fields in factories._HOST_REQUIRED.items():
        for f in fields:
            ev = factories.host_event(t)
            del ev[f]
            assert validate_record(ev)[1] == [f"{f}: Field required"], (t, f)
            assert not schema_valid(ev)
    # the stock 1.0 is the integer 1 (as in JSON Schema); a stock with another change is allowed
    rec, reasons = validate_record(factories.host_event("showcase_update", change="stock", stock=1.0))
    assert reasons is None and rec.stock == 1 and isinstance(rec.stock, int)
    assert validate_record(factories.host_event("showcase_update", change="add", stock=5, price=3.0))[1] is None


def test_unknown_and_missing_type():
    assert validate_record(factories.event("superchat"))[1][0].startswith("type: unknown type 'superchat'")
    ev = factories.event("like")
    del ev["type"]
    assert validate_record(ev)[1] == ["type: field required"]
    assert validate_record([ev])[1] == ["record: expected a JSON object, got list"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_crashes_and_rejections_have_reasons(value):
    record, reasons = validate_record(value)
    assert (record is None) != (reasons is None)
    if reasons is not None:
        assert reasons and all(isinstance(r, str) and ": " in r for r in reasons)


# Valid events of every type with 0-2 fields changed to plausible or implausible values (or removed):
# the validator and the published JSON Schema must agree on every one of them.
ids = st.sampled_from(["u-1", "sku-9", "s:42", "a" * 128, "a" * 129, "", "u 1", "用户", 7, None])
stamps = st.sampled_from(
    [
        "2026-11-27T20:15:03.120Z",
        "2026-11-27T20:15:03+08:00",
        "2026-11-27t20:15:03z",
        "2026-11-27T20:15:03",
        "2026-13-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "2026-11-27T24:00:00Z",
        "20261127T201503Z",
        1795810503,
        None,
    ]
)
money = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 10**10),
    st.booleans(),
    st.sampled_from(["1.0", None]),
)
changes = {
    "event_id": ids,
    "ts": stamps,
    "platform": ids,
    "stream_id": ids,
    "user_id": ids,
    "item_id": ids,
    "type": st.sampled_from(ALL_TYPES + ("superchat", 3)),
    "price": money,
    "gift_value": money,
    "quantity": st.one_of(st.integers(-2, 20_000), st.floats(0, 5)),
    "currency": st.sampled_from(["CNY", "usd", "EURO", None]),
    "title": st.text(max_size=3),
    "description": st.text(max_size=3) | st.none(),
    "category": st.text(max_size=3),
    "stream_ids": st.lists(ids, max_size=3),
    "count": st.integers(-1, 3),
    "text": st.text(max_size=5),
    "order_id": ids,
    "props": st.dictionaries(
        st.text(max_size=3), st.integers() | st.text(max_size=3) | st.lists(st.none()), max_size=3
    ),
    "schema_version": st.sampled_from([1, 2, "1"]),
    "host_id": ids,
    "slot_id": ids,
    "host_name": st.text(max_size=3) | st.none(),
    "scheduled_start": stamps,
    "change": st.sampled_from(SHOWCASE_CHANGES + ("restock", None)),
    "stock": st.one_of(st.integers(-2, 5), st.floats(0, 3), st.none(), st.just("1")),
    "bogus": st.just(1),
}


@st.composite
def mutated_events(draw):
    t = draw(st.sampled_from(ALL_TYPES))
    ev = factories.record(t)
    for name in draw(st.lists(st.sampled_from(sorted(changes)), max_size=2, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            ev.pop(name, None)
        else:
            ev[name] = draw(changes[name])
    return ev


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_validator_and_published_schema_agree(ev):
    # Records arrive as JSON, which has no NaN or infinity; JSON Schema cannot say "finite" (NaN
    # passes every comparison), so the two are compared on what JSON can carry.
    try:
        json.dumps(ev, allow_nan=False)
    except ValueError:
        assume(False)
    record, reasons = validate_record(ev)
    assert (reasons is None) == schema_valid(ev), (ev, reasons, [e.message for e in VALIDATOR.iter_errors(ev)][:3])


def test_agreement_sample_holds_valid_and_invalid_events():
    """Guard for the test above: its generator must produce both outcomes in quantity."""
    outcomes: list[bool] = []

    @settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutated_events())
    def collect(ev):
        outcomes.append(validate_record(ev)[1] is None)

    collect()
    assert 0.15 < sum(outcomes) / len(outcomes) < 0.85, sum(outcomes) / len(outcomes)
