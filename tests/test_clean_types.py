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
