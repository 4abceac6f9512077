"""The fast path's raw-type check: every value DuckDB's JSON reader would coerce silently (1.5 -> 2,
true -> 1.0, "1" -> 1, 7 -> '7', {} -> '{}') is flagged, re-checked by shared.contract, and either
quarantined with the contract's reason or kept with the contract's value. Hand-made raw lines."""

from __future__ import annotations

import pytest

from shared.contract import validate_record
from shared.pipeline.clean import CleanConfig, clean_tables
from shared.pipeline.config import TimeRules

RULES = TimeRules(max_future_s=300, max_past_s=30 * 86400, late_after_s=3600)
REC = '"received_at":"2026-11-27T20:00:05.000Z"'
CAT = (
    '{"event_id":"c1","type":"catalog_item","ts":"2026-11-27T19:00:00Z","platform":"douyin","item_id":"i1",'
    '"title":"tee","price":10.0,"stream_ids":["s1"],' + REC + "}"
)


def base(typ: str, extra: str, eid: str = "e1") -> str:
    return (
        f'{{"event_id":"{eid}","type":"{typ}","ts":"2026-11-27T20:00:00Z","platform":"douyin",'
        f'"stream_id":"s1","user_id":"u1","item_id":"i1",{extra}{REC}}}'
    )


def run(*lines: str):
    data = "\n".join((CAT,) + lines).encode()
    out = clean_tables([("raw/x.ndjson.gz", data)], CleanConfig(rules=RULES, threads=2), run_id="r-t")
    clean = out["clean"].to_pandas().set_index("event_id")
    q = out["quarantine"].to_pylist()
    return clean, {r["event_id"]: r for r in q if r["event_id"] != "c1"}


CASES = [  # (type, fields as raw JSON, kept?, field name, expected value of that field in clean)
    ("purchase", '"price":10.0,"quantity":1.5,', False, "quantity", None),
    ("purchase", '"price":true,', False, "price", None),
    ("purchase", '"price":10.0,"schema_version":"1",', False, "schema_version", None),
    ("purchase", '"price":"12.5",', False, "price", None),
    ("like", '"count":"3",', False, "count", None),
    ("gift", '"gift_value":[1],', False, "gift_value", None),
    ("purchase", '"price":{},', False, "price", None),
    ("add_to_cart", '"quantity":null,', True, "quantity", 1),  # null = absent: the default 1
    ("purchase", '"price":10.0,"quantity":1.0,', True, "quantity", 1),  # integral float: the contract accepts
    ("purchase", '"price":10.0,"quantity":2e0,', True, "quantity", 2),
    ("purchase", '"price":12,', True, "price", 12.0),  # an int is a valid number
]


@pytest.mark.parametrize("typ,extra,kept,fld,value", CASES)
def test_coerced_number_fields(typ, extra, kept, fld, value):
    line = base(typ, extra)
    clean, q = run(line)
    import orjson

    obj = {k: v for k, v in orjson.loads(line).items() if k != "received_at"}
    rec, reasons = validate_record(obj)
    if kept:
        assert reasons is None and not q
        assert clean.loc["e1", fld] == value
    else:
        assert "e1" not in clean.index
        assert q["e1"]["reasons"] == reasons and q["e1"]["field"] == fld and q["e1"]["reason"] == "schema"
        assert q["e1"]["raw"].rstrip("\n") == line


@pytest.mark.parametrize(
    "line,fld",
    [
        # an int where an id string is expected (the reader would keep '7')
        (
            '{"event_id":"e1","type":"like","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":"s1",'
            '"user_id":7,' + REC + "}",
            "user_id",
        ),
        # an object where a scalar is expected (the reader would keep '{}')
        (
            '{"event_id":"e1","type":"like","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":{},'
            '"user_id":"u1",' + REC + "}",
            "stream_id",
        ),
        # the same, with the key spelled with a \\u escape
        (
            '{"event_id":"e1","type":"like","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":"s1",'
            '"user\\u005fid":7,' + REC + "}",
            "user_id",
        ),
        (
            '{"event_id":"e1","type":"comment","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":"s1",'
            '"user_id":"u1","text":false,' + REC + "}",
            "text",
        ),
        # a nested object inside props (scalars only)
        (
            '{"event_id":"e1","type":"like","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":"s1",'
            '"user_id":"u1","props":{"a":{"b":1}},' + REC + "}",
            "props",
        ),
        (
            '{"event_id":"e1","type":"like","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":"s1",'
            '"user_id":"u1","props":"x",' + REC + "}",
            "props",
        ),
        # a props string longer than the contract's 256 characters
        (
            '{"event_id":"e1","type":"like","ts":"2026-11-27T20:00:00Z","platform":"douyin","stream_id":"s1",'
            '"user_id":"u1","props":{"a":"' + "x" * 300 + '"},' + REC + "}",
            "props",
        ),
    ],
)
def test_coerced_string_fields_and_props(line, fld):
    import orjson

    clean, q = run(line)
    _, reasons = validate_record({k: v for k, v in orjson.loads(line).items() if k != "received_at"})
    assert reasons and "e1" not in clean.index
    assert q["e1"]["reasons"] == reasons and q["e1"]["field"] == fld and q["e1"]["raw"].rstrip("\n") == line


def test_duplicate_key_is_refused():
    # DuckDB would keep the first price (-1), the contract sees the last (10.0): refused, not guessed
    line = base("purchase", '"price":-1.0,"price":10.0,')
    clean, q = run(line)
    assert "e1" not in clean.index
    assert q["e1"]["reason"] == "schema" and q["e1"]["field"] == "price"
    assert q["e1"]["reasons"] == ["price: duplicate key (the record is ambiguous)"]


def test_flagged_but_valid_rows_keep_their_values():
    # long-ish props string (flagged by the conservative check, valid), a \\u escape inside a value
    lines = [
        base("like", '"props":{"note":"' + "y" * 100 + '"},', eid="e1"),
        base("comment", '"text":"caf\\u00e9 \\"hi\\"",', eid="e2"),
        base("purchase", '"price":10.0,"quantity":3.0,', eid="e3"),
    ]
    clean, q = run(*lines)
    assert not q
    assert clean.loc["e1", "props"] == '{"note":"' + "y" * 100 + '"}'
    assert clean.loc["e2", "text"] == 'café "hi"'
    assert clean.loc["e3", "quantity"] == 3 and clean.loc["e3", "price"] == 10.0


# ---------------------------------------------------------------------------------------------------
# Parity: the fast path's SQL is generated from shared.contract (shared/pipeline/contract_sql.py). For
# every type of the contract, a valid record passes the fast path untouched, and on any record (valid,
# mutated, arbitrary JSON) clean's verdict -- fast path, then the contract on what it flags -- is
# validate_record's verdict with the same reasons; a row the fast path lets through is one the contract
# accepts, with the same values.
import os  # noqa: E402
import tempfile  # noqa: E402

import orjson  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from shared.contract import ALL_TYPES, HOST_ACTIONS, VIEWER_ACTIONS  # noqa: E402
from shared.pipeline import clean as clean_mod  # noqa: E402
from shared.pipeline import contract_sql  # noqa: E402
from tests import factories  # noqa: E402
from tests.test_contract import FULL_HOST, json_values, mutated_events  # noqa: E402


def fast_and_final(objs: list) -> list[tuple[str | None, list[str] | None, dict | None]]:
    """Each value as an ingest-stamped NDJSON line through clean's parse + fast path + contract re-check:
    (the fast path's provisional reason, the final reasons or None, the parsed fields when accepted)."""
    lines = []
    for o in objs:  # (a value orjson cannot write never leaves ingest)
        if isinstance(o, dict):
            o = {**o, "received_at": "2026-11-27T20:00:05.000Z"}
        lines.append(orjson.dumps(o))
    cfg = CleanConfig(rules=RULES, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        con = clean_mod._connect(os.path.join(tmp, "w.duckdb"), cfg)
        try:
            clean_mod._ingest_chunks(con, [clean_mod.raw_table(b"\n".join(lines) + b"\n", "raw/x")], cfg)
            clean_mod._slow_path(con)
            # (a row of a non-viewer type keeps its line and is parsed again with the full struct, as clean does)
            rows = con.execute(
                f"SELECT row_id, reason, CASE WHEN line IS NULL OR reason IS NOT NULL THEN CAST(j AS JSON) "
                f"ELSE CAST(try(json_transform(line, '{clean_mod._STRUCT}')) AS JSON) END FROM parsed ORDER BY row_id"
            ).fetchall()
            final = dict(con.execute("SELECT row_id, reasons FROM invalid").fetchall())
        finally:
            con.close()
    assert [r[0] for r in rows] == list(range(len(objs)))
    return [(reason, final.get(rid), orjson.loads(j) if rid not in final else None) for rid, reason, j in rows]


def _same_value(parsed, value) -> bool:
    if isinstance(value, dict):  # props: the JSON object
        return (orjson.loads(parsed) if isinstance(parsed, str) else parsed) == value
    return parsed == value


def check_parity(objs: list) -> list[str | None]:
    got = fast_and_final(objs)
    for o, (fast, final, j) in zip(objs, got, strict=True):
        wire = orjson.loads(orjson.dumps(o))  # what the line says (NaN -> null, as JSON carries it)
        rec, reasons = validate_record(wire)
        assert final == reasons, (o, fast, final, reasons)
        if fast is None:  # let through by the SQL alone: the contract accepts it, with the same values
            assert rec is not None, (o, reasons)
            for k, v in rec.model_dump(exclude_unset=True, exclude_none=True).items():
                assert _same_value(j[k], v), (o, k, j[k], v)
            assert all(j[k] is None for k in j if k not in wire and k != "received_at"), (o, j)
    return [fast for fast, _, _ in got]


def _valid_records() -> list[dict]:
    """Minimal and fuller valid records of every type of the contract."""
    out = [factories.record(t) for t in ALL_TYPES]
    out += [factories.host_event(t, **FULL_HOST[t]) for t in HOST_ACTIONS]
    out += [factories.host_event("showcase_update", change="stock", stock=0), factories.record("like", count=3)]
    out += [
        factories.event("purchase", price=12, quantity=2, currency="USD", order_id="o-1", props={"d": "ios", "n": 1}),
        factories.event("gift", gift_value=5.5, currency="CNY"),
        factories.event("comment", text="好看 👍"),
        factories.event("stream_enter", item_id=None),
        factories.event("rec_impression", rec_id="r1.e.A.x", position=100),
        factories.event("purchase", price=9.9, rec_id="r1.e.B.y", order_id="o-2"),
        factories.event("product_click", rec_id="r1.e.B.y"),
    ]
    return out


def test_the_generated_sql_covers_every_type_of_the_contract():
    assert set(contract_sql.TYPES) == set(ALL_TYPES)
    assert set(contract_sql.SLOW_TYPES) == {"catalog_item"}  # its stream_ids array: always re-checked
    for t in ALL_TYPES:  # every field of every model is parsed with one JSON type
        assert set(contract_sql.ALLOWED_KEYS[t]) - {"received_at"} == set(
            clean_mod.validate_record.__globals__["MODEL_BY_TYPE"][t].model_fields
        )
        assert set(contract_sql.ALLOWED_KEYS[t]) <= set(contract_sql.FIELDS)
    sql = clean_mod._fast_reason_sql()
    for t in HOST_ACTIONS + VIEWER_ACTIONS:
        assert f"'{t}'" in sql


def test_a_valid_record_of_every_type_passes_the_fast_path():
    records = _valid_records()
    fast = check_parity(records)
    for rec, reason in zip(records, fast, strict=True):
        if rec["type"] in contract_sql.SLOW_TYPES:
            assert reason is not None  # re-checked by the contract on purpose (and accepted: check_parity)
        else:
            assert reason is None, rec


# one invalid variant per rule the SQL expresses, for each type that has the rule
def _invalid_cases() -> list[dict]:
    bad = []
    for t in ALL_TYPES:
        ts = contract_sql.TYPES[t]
        base_rec = factories.record(t)
        for f in ts.required:
            if f != "type":
                bad.append({k: v for k, v in base_rec.items() if k != f})
        bad.append({**base_rec, "bogus": 1})
        bad.append({**base_rec, "ts": "2026-02-30T10:00:00Z"})
        bad.append({**base_rec, "event_id": "a b"})
        bad.append({**base_rec, "schema_version": 2})
        bad.append({**base_rec, "props": {"a": [1]}})
        for f in ts.props:
            if f in ("type", "props", "schema_version"):
                continue
            duck = ts.props[f].duck
            bad.append({**base_rec, f: 7 if duck == "VARCHAR" else "7"})  # wrong JSON type
            if duck == "VARCHAR":
                bad.append({**base_rec, f: "x" * 5001})
                bad.append({**base_rec, f: ""})
            elif duck in ("DOUBLE", "BIGINT"):
                bad.append({**base_rec, f: -1})
                bad.append({**base_rec, f: 10**10})
                bad.append({**base_rec, f: 1.5})
                bad.append({**base_rec, f: True})
    bad.append(factories.host_event("showcase_update", change="price"))
    bad.append(factories.host_event("showcase_update", change="stock"))
    bad.append(factories.host_event("showcase_update", change="stock", stock=None))
    bad.append(factories.host_event("showcase_update", change="oops"))
    return bad


def test_an_invalid_record_of_every_rule_is_refused_with_the_contracts_reasons():
    cases = _invalid_cases()
    fast = check_parity(cases)
    refused = [validate_record(c)[1] is not None for c in cases]
    assert sum(refused) > 0.8 * len(cases)  # (a few variants are valid: e.g. an empty optional string)
    for c, reason, r in zip(cases, fast, refused, strict=True):
        if r:
            assert reason is not None, c  # the fast path flagged every refused record


def _writable(v) -> bool:
    try:
        orjson.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


# (no shrinking: each example is a DuckDB run; the assertion message names the record)
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(mutated_events(), min_size=40, max_size=80), st.lists(json_values.filter(_writable), max_size=5))
def test_fast_path_and_contract_agree_on_mutated_records(events, values):
    check_parity([e for e in events if _writable(e)] + values)


@pytest.mark.parametrize(
    "ts",
    [
        "2026-11-27T24:00:00Z",  # hour 24: DuckDB's cast reads it as the next midnight
        "2026-11-27T23:59:59+24:00",  # offsets of 24 h and more
        "2026-11-27T23:59:59+23:60",
        "0000-11-27T23:59:59Z",  # year 0: 1 BC for DuckDB
        "2026-11-27t20:15:03z",  # lower case: valid, read upper-cased
        "2026-11-27T23:59:59-23:59",
        "0001-01-01T00:00:00+01:00",
        "2026-02-29T00:00:00Z",
        "2024-02-29T00:00:00.123456Z",
    ],
)
def test_timestamp_edges_agree(ts):
    for t in ("like", "stream_start"):
        check_parity([factories.record(t, ts=ts), factories.host_event("stream_start", scheduled_end=ts)])
