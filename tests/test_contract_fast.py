"""Ingest's compiled contract checks (shared/contract_fast.py) against the pydantic contract: the fast
path passes only records the contract accepts (it may flag valid ones: pydantic then decides), so
``contract_fast.validate`` gives exactly ``validate_record``'s verdicts and reasons, and the common
valid traffic does take the fast path. Hypothesis-mutated records of every type, hostile values,
arbitrary JSON."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import contract_fast
from shared.contract import ALL_TYPES, MODEL_BY_TYPE, validate_record
from tests import factories
from tests.test_clean_types import _invalid_cases, _valid_records
from tests.test_contract import json_values, mutated_events


def parity(obj) -> bool:
    """Assert the fast path agrees with the contract on ``obj``; return whether it took the fast path."""
    rec, reasons = validate_record(obj)
    fast = contract_fast.check(obj)
    if fast:
        assert reasons is None, (obj, reasons)
    keys, got = contract_fast.validate(obj)
    assert got == reasons, (obj, got, reasons)
    if rec is not None:
        assert keys == (rec.type, getattr(rec, "stream_id", "") or "", rec.platform), obj
    else:
        assert keys is None
    return fast


def test_every_type_is_compiled():
    assert set(contract_fast.CHECKS) == set(ALL_TYPES)
    assert contract_fast.SLOW_TYPES == {}


def test_valid_records_of_every_type_take_the_fast_path():
    for rec in _valid_records():
        assert parity(rec), rec


def test_simulated_traffic_takes_the_fast_path():
    from devtools import simulator

    sim = simulator.simulate(seed=3, n_streams=2, n_users=200, n_items=50, platforms=("douyin",))
    events = [e for e in sim.events if isinstance(e, dict)]
    valid = [e for e in events if validate_record(e)[1] is None]
    assert len(valid) > 1000
    assert all(parity(e) for e in valid)


def test_an_invalid_record_of_every_rule_is_flagged():
    for case in _invalid_cases():
        parity(case)


# values aimed at the compiled checks' own shortcuts: the NUL-joined id/ts regex, the re-anchored
# patterns ($ before a final newline), exact classes (bool is an int in Python), bounds, props limits
edge_strings = st.sampled_from(
    [
        "u-1",
        "a\x00b",
        "\x00",
        "u-1\n",
        "u-1\x00",
        "\x00u-1",
        "a" * 128,
        "a" * 129,
        "",
        "2026-11-27T20:15:03.120Z",
        "2026-11-27T20:15:03.120Z\n",
        "2026-11-27T20:15:03.120Z\x00u-1",
        "2026-11-27T20:15:03.1234567Z",
        "2026-11-27T20:15:03.120+24:00",
        "2026-02-30T20:15:03Z",
        "0000-01-01T00:00:00Z",
        "CNY",
        "CNY\n",
        "price",
        "stock",
        "sold_out",
    ]
)
edge_numbers = st.sampled_from(
    [0, -0.0, 1, 1.0, 2.0, 1.5, -1, 10_000, 10_001, 1e9, 1e9 + 1, 10**9, 10**9 + 1, 10**30, True, False, None]
)
edge_props = st.one_of(
    st.dictionaries(st.text(min_size=63, max_size=66), st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.text(min_size=255, max_size=258), max_size=2),
    st.dictionaries(
        st.text(max_size=3), st.none() | st.booleans() | st.floats(allow_nan=False), min_size=31, max_size=34
    ),
    st.just({"a": {"b": 1}}),
    st.just({"a": [1]}),
    st.just([]),
)
edge_values = st.one_of(edge_strings, edge_numbers, st.lists(edge_strings, max_size=3), edge_props)


@st.composite
def edged_events(draw):
    t = draw(st.sampled_from(ALL_TYPES))
    ev = factories.record(t)
    names = sorted(set(MODEL_BY_TYPE[t].model_fields) | {"bogus"})
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        if draw(st.integers(0, 6)) == 0:
            ev.pop(name, None)
        else:
            ev[name] = draw(edge_values)
    return ev


@pytest.mark.parametrize("t", ALL_TYPES)
def test_every_field_of_every_type_with_every_edge_value(t):
    """Exhaustive: each field of the type set to each edge value (or removed), one at a time."""
    values = [*edge_strings.elements, *edge_numbers.elements, ["u-1"], ["u-1\n"], {"a": 1}, {"a": [1]}, {}]
    for name in sorted(set(MODEL_BY_TYPE[t].model_fields) | {"bogus"}):
        ev = factories.record(t)
        ev.pop(name, None)
        parity(ev)
        for v in values:
            parity({**factories.record(t), name: v})


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated_events())
def test_mutated_records_agree(ev):
    parity(ev)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(edged_events())
def test_edge_valued_records_agree(ev):
    parity(ev)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(json_values)
def test_arbitrary_json_agrees(value):
    parity(value)


def _sample(gen) -> list[tuple[bool, bool]]:
    """(fast path taken, valid) for 400 examples of ``gen``."""
    seen: list[tuple[bool, bool]] = []

    @settings(max_examples=400, database=None, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(gen)
    def collect(ev):
        seen.append((contract_fast.check(ev), validate_record(ev)[1] is None))

    collect()
    return seen


def test_the_mutations_reach_both_outcomes_and_the_fast_path():
    """Guard for the tests above: both generators give accepted and refused records in quantity, and
    most accepted ones take the fast path."""
    for gen, low in ((mutated_events(), 0.15), (edged_events(), 0.05)):
        seen = _sample(gen)
        fast = sum(f for f, _ in seen)
        valid = sum(v for _, v in seen)
        assert low * len(seen) < valid < 0.85 * len(seen), (valid, len(seen))
        assert fast > 0.8 * valid, (fast, valid)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_never_fast(value):
    """JSON cannot carry them, but a caller could: the bounds refuse them, the contract decides."""
    for t, fld in (("purchase", "price"), ("gift", "gift_value"), ("like", "count")):
        parity(factories.record(t, **{fld: value}))


def test_wire_round_trip_of_the_simulator_batch():
    """What ingest sees: decoded NDJSON lines (orjson), not Python-built dicts."""
    sim = factories.batch(50)
    for ev in sim:
        assert parity(orjson.loads(orjson.dumps(ev)))


def test_the_shipped_schema_is_the_contract():
    """contract_fast compiles from the schema shipped in the package (no pydantic at import): it must be
    the models' own schema, and name every type with its model's entry."""
    import json

    from shared import contract, contract_rules

    shipped = contract_rules.shipped_schema()
    assert shipped == json.loads(json.dumps(contract.json_schema())), (
        "run: python -m shared.contract > shared/contract.schema.json"
    )
    assert contract_rules.shipped_type_schemas(shipped) == contract_rules.type_schemas()
    assert contract_rules.shipped_schema_version(shipped) == contract.SCHEMA_VERSION


def test_importing_ingest_builds_no_pydantic_model():
    """A cold ingest instance imports the contract's models only for an event the checks flag."""
    import subprocess
    import sys

    code = "import shared.ingest, sys; print('shared.contract' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
