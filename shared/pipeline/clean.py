"""clean: raw/ NDJSON (.gz, or plain from the Pub/Sub Cloud Storage subscription) -> clean/ Parquet (typed, one row per event_id, UTC), quarantine/, the
dedupe index, the catalog table, a data-quality report and the analytics tables; committed by
advancing ``state/clean-manifest.json`` with a generation precondition.

Engine: DuckDB (in-process, C++, vectorised, multi-threaded), fed with Arrow.
* Raw objects are decompressed one at a time and turned into an Arrow string array of lines without a
  Python loop (newline offsets found with numpy, ``StringArray.from_buffers``), then parsed ONCE by
  DuckDB's JSON reader (``json_transform`` behind a ``json_valid`` guard, never ``try()``) in the same
  statement that validates them.
* Everything lives in one in-memory DuckDB database with ``memory_limit`` and a spill directory:
  dedupe (narrow: only repeated ids are windowed; anti-join against the stored index), aggregation and
  the parsed rows themselves spill to disk, so a day larger than memory still cleans. ``clean`` is a
  table computed once from the parsed rows (read by dates, stats, COPY and analytics).
* Output is written by DuckDB ``COPY`` to Parquet, with the Arrow schema stored as ``ARROW:schema`` so
  pyarrow reads the final types (dictionary ids, UTC timestamps) exactly as before.
The pure core is :func:`clean_tables` (Arrow in, Arrow out), used by the tests directly; the run
(:func:`run_clean`) adds storage and the manifest around it.

Validation: a vectorised fast path checks JSON validity, known top-level keys, required fields per type,
the patterns, lengths, enums, value ranges and conditional requirements of every field -- all GENERATED
from ``shared.contract``'s models by ``shared.pipeline.contract_sql`` (nothing of the contract is restated
here); every row it flags is re-validated with ``shared.contract.validate_record`` (the reference), which
decides and gives the exact reasons. The reader coerces silently (``"quantity": 1.5`` -> 2, ``"price":
true`` -> 1.0, ``"user_id": 7`` -> ``'7'``), so the fast path also flags every row whose RAW JSON types
differ from the contract's (``_RAW_TYPE_RE``: one regex pass over the line), duplicate keys, suspect
``props`` and every record of a type with a rule the SQL does not express (``catalog_item``): the
contract then quarantines them with its own reasons, or accepts them (``1.0`` as a quantity is read as 1).
Clock skew: the rule of ``shared.pipeline.skew`` (its SQL form), the one archive applies in Python.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shared import layout
from shared.contract import ALL_TYPES, CATALOG_TYPE, HOST_ACTIONS, VIEWER_ACTIONS, validate_record
from shared.layout import MANIFEST, load_manifest  # noqa: F401  (re-exported: readers and tests)
from shared.log import get_logger
from shared.pipeline import contract_sql
from shared.pipeline.config import TimeRules
from shared.pipeline.skew import skew_sql
from shared.runtime import faults
from shared.settings import settings

log = get_logger("clean")


# -- the contract's fields, as DuckDB's JSON reader should type them: derived from shared.contract --
# (shared/pipeline/contract_sql.py generates them from the contract's JSON Schema; nothing is restated here)
_FIELDS = contract_sql.FIELDS
_STRUCT = "{" + ",".join(f'"{k}":"{v}"' for k, v in _FIELDS.items()) + "}"
_VIEWER = VIEWER_ACTIONS
# ``parsed`` (the run's largest table) keeps only the fields of viewer events (+ received_at); a row of
# another type (host action, catalog record: few) keeps its line and is parsed again with ``_STRUCT``
_KEPT = {f: d for f, d in _FIELDS.items() if f in contract_sql.EXTRA_FIELDS or contract_sql.types_with(f, _VIEWER)}
_KEEP = "struct_pack(" + ", ".join(f'"{f}" := j."{f}"' for f in _KEPT) + ")"
_IS_VIEWER = f"j.type IN {_VIEWER}"
_ALLOWED_KEYS = contract_sql.ALLOWED_KEYS  # top-level keys each type may carry (+ received_at, stamped by ingest)
_TYPED = contract_sql.TYPED_FIELDS  # null after a bad cast
# a raw JSON value whose type differs from the contract's, which the JSON reader would coerce silently:
# flagged, so that shared.contract decides (see contract_sql.raw_type_re); plus a key spelled with \u
# escapes ("user\u005fid" is the key user_id, invisible to the patterns above).
_RAW_TYPE_RE = contract_sql.raw_type_re()
_ESCAPED_KEY_RE = r'\\u[0-9A-Fa-f]{4}[A-Za-z0-9_\\]*"\s*:'  # (only run on lines containing a backslash-u)
# the count of known fields with a non-null value (see _fast_conds)
# (in two parts: ``nn_o`` counts the fields no viewer event may carry -- a viewer row's allowed-keys check
# is then ``nn_o = 0`` plus its few viewer fields -- and ``nn = nn_v + nn_o``)
_NN_V = "(" + " + ".join(f'CAST(j."{f}" IS NOT NULL AS INTEGER)' for f in _FIELDS if f in _KEPT) + ")"
_NN_OTHER = "(" + " + ".join(f'CAST(j."{f}" IS NOT NULL AS INTEGER)' for f in _FIELDS if f not in _KEPT) + ")"
# types whose clean rows default a missing currency / quantity (the types whose records may carry them)
_WITH_CURRENCY = contract_sql.types_with("currency", VIEWER_ACTIONS)
_WITH_QUANTITY = contract_sql.types_with("quantity", VIEWER_ACTIONS)
_ts = contract_sql.timestamp_sql  # an RFC 3339 string -> TIMESTAMPTZ, as the contract reads it

# -- output schemas ---------------------------------------------------------------------------
_DICT = pa.dictionary(pa.int32(), pa.string())
_UTC = pa.timestamp("us", tz="UTC")
CLEAN_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("type", _DICT),
        ("ts", _UTC),
        ("received_at", _UTC),
        ("platform", _DICT),
        ("stream_id", _DICT),
        ("user_id", _DICT),
        ("item_id", _DICT),
        ("price", pa.float64()),
        ("currency", _DICT),
        ("quantity", pa.int32()),
        ("order_id", pa.string()),
        ("count", pa.int32()),
        ("gift_value", pa.float64()),
        ("text", pa.string()),
        ("props", pa.string()),
        ("ts_sent", pa.string()),
        ("ts_corrected", pa.bool_()),
        ("late", pa.bool_()),
        ("run_id", _DICT),
        # recommendation experiments (rec_impression; the rec_id of a click / cart / purchase)
        ("rec_id", pa.string()),
        ("position", pa.int32()),
    ]
)
CATALOG_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("category", _DICT),
        ("price", pa.float64()),
        ("currency", _DICT),
        ("stream_ids", pa.list_(pa.string())),
        ("platform", _DICT),
        ("ts", _UTC),
        ("event_id", pa.string()),
        ("run_id", _DICT),
    ]
)


def _host_columns() -> tuple[list[str], dict[str, str], pa.Schema]:
    """clean_host's columns, derived from the host models of the contract: the common ones, then every
    field a host action may carry (in the contract's order), then the props / ts / run columns."""
    lead = ["event_id", "type", "ts", "received_at", "platform", "stream_id"]
    tail = ["currency", "props", "ts_sent", "ts_corrected", "late", "run_id"]
    ordered = dict.fromkeys(f for t in HOST_ACTIONS for f in contract_sql.TYPES[t].props)
    fields = [f for f in ordered if f not in lead + tail]
    fields = [f for f in fields if f != "schema_version"]
    select, types = {}, {}
    for f in fields:
        props = [contract_sql.TYPES[t].props[f] for t in contract_sql.types_with(f, HOST_ACTIONS)]
        if any(p.fmt == "date-time" for p in props):
            select[f], types[f] = _ts(f'j."{f}"'), _UTC
        else:
            types[f] = {"DOUBLE": pa.float64(), "BIGINT": pa.int64()}.get(props[0].duck, pa.string())
    schema = pa.schema(
        [("event_id", pa.string()), ("type", _DICT), ("ts", _UTC), ("received_at", _UTC), ("platform", _DICT)]
        + [("stream_id", _DICT)]
        + [(f, types[f]) for f in fields]
        + [("currency", _DICT), ("props", pa.string()), ("ts_sent", pa.string())]
        + [("ts_corrected", pa.bool_()), ("late", pa.bool_()), ("run_id", _DICT)]
    )
    return fields, select, schema


# the host actions' clean table (one row per host event_id): see docs/storage.md
_HOST_FIELDS, _HOST_SELECT, HOST_SCHEMA = _host_columns()


#: ``(store, run_id, analytics table -> key) -> key | None``: pre-renders charts before the commit (commit_run)
ChartsHook = Callable[[Any, str, dict[str, str]], "str | None"]


@dataclass(frozen=True)
class CleanConfig:
    rules: TimeRules = field(default_factory=TimeRules)
    default_currency: str = field(default_factory=lambda: settings().default_currency)
    max_objects: int = field(default_factory=lambda: settings().clean_max_objects)
    chunk_bytes: int = field(default_factory=lambda: settings().clean_chunk_bytes)
    memory_limit: str = field(default_factory=lambda: settings().clean_memory_limit)
    threads: int = field(default_factory=lambda: settings().clean_threads or os.cpu_count() or 2)
    # a purchase/click of an item no catalog_item named yet: "keep" (default: the catalog is often late;
    # the row is clean, counted in GMV, and titles attach when the catalog arrives, since readers join
    # the catalog at read time) or "quarantine" (the old rule: reason unknown_item, raw = the row as parsed)
    unknown_items: str = field(default_factory=lambda: settings().clean_unknown_items)

    @property
    def require_catalog(self) -> bool:
        return self.unknown_items == "quarantine"

    max_session_s: float = field(default_factory=lambda: settings().max_session_s)
    strict: bool = False  # re-validate EVERY row with shared.contract (slow; tests)
    tmp_dir: str | None = field(default_factory=lambda: settings().tmp)
    # the dedupe index and the manifest's done list remember this many days (shared/pipeline/retention.py)
    lookback_days: int = field(default_factory=lambda: settings().dedupe_lookback_days)
    topic: str = field(default_factory=lambda: settings().cleaned_topic)


# ================================================================================== raw -> Arrow
def lines_array(data: bytes) -> pa.StringArray:
    """NDJSON bytes -> an Arrow string array, one element per line, built without a Python loop."""
    if not data:
        return pa.array([], pa.string())
    if not data.endswith(b"\n"):
        data += b"\n"
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    ends = nl  # exclusive end of each line (the newline itself is dropped)
    starts = np.concatenate([[0], nl[:-1] + 1])
    keep = ends > starts  # skip empty lines
    if len(data) < 2**31 and keep.all():
        offsets = np.concatenate([[0], nl + 1]).astype(np.int32)  # lines keep their "\n": JSON whitespace
        return pa.StringArray.from_buffers(len(nl), pa.py_buffer(offsets), pa.py_buffer(data))
    starts, ends = starts[keep], ends[keep]
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    idx = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    body = np.frombuffer(data, dtype=np.uint8)[idx]
    return pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(offsets), pa.py_buffer(body.tobytes())).cast(
        pa.string()
    )


def raw_table(data: bytes, source: str, row0: int = 0) -> pa.Table:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    arr = lines_array(data)
    n = len(arr)
    # the source key dictionary-encoded (one int32 per row): a plain string column copied the key into
    # every row (~0.45 s per 800k lines, on the prefetch thread competing with DuckDB's)
    return pa.table(
        {
            "row_id": pa.array(np.arange(row0, row0 + n, dtype=np.int64)),
            "line": arr,
            "src": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(n, dtype=np.int32)), pa.array([source], pa.string())
            ),
        }
    )


# ============================================================================== the DuckDB core
def _connect(path: str, cfg: CleanConfig) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB database whose blocks spill to ``<dir of path>/spill`` beyond ``memory_limit``.
    (In-memory rather than a database file: no WAL / checkpoint writes of the intermediate tables, which
    cost ~40% of the run; data larger than ``memory_limit`` still goes to disk, through the spill files.)"""
    con = duckdb.connect(":memory:")
    tmp = os.path.join(os.path.dirname(path), "spill")
    con.execute(f"SET memory_limit='{cfg.memory_limit}'")
    con.execute(f"SET threads={int(cfg.threads)}")
    con.execute(f"SET temp_directory='{tmp}'")
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET TimeZone='UTC'")
    return con


def _fast_conds() -> list[tuple[str, str]]:
    """(SQL condition, provisional reason) pairs of the vectorised fast path, in priority order."""
    # allowed keys per type: one regex over the keys joined by a unit separator (~4x cheaper than
    # list_has_all); a key containing the separator itself is caught by the separator count
    ks = "array_to_string(k, chr(31))"
    # ``nn`` (a column, see _parse_sql): the count of known fields with a non-null value, all distinct keys
    # of the line. When the line has exactly that many keys (``len(k) = nn``: nearly every line), its keys
    # ARE those fields: no duplicate key, no null-valued key, no unknown key -- so the allowed-keys check is
    # "no field outside the type's set is non-null" and the list checks below (keys regex,
    # ``list_distinct``) only run for the other lines.
    nn = "nn"

    def keys_re(keys: list[str]) -> str:
        alt = "|".join(keys)
        return f"'^({alt})(\x1f({alt}))*$'"

    allowed = " ".join(f"WHEN '{t}' THEN regexp_full_match({ks}, {keys_re(keys)})" for t, keys in _ALLOWED_KEYS.items())
    allowed = (
        f"(len(k) = length({ks}) - length(replace({ks}, chr(31), '')) + 1) AND CASE j.type {allowed} ELSE false END"
    )

    def nulls(t: str, keys: list[str]) -> str:
        out = [f for f in _FIELDS if f not in keys]
        if t in _VIEWER:  # every non-viewer field is outside: one test of their count (``nn_o``)
            out = [f for f in out if f in _KEPT]
            return " AND ".join(["nn_o = 0"] + [f'j."{f}" IS NULL' for f in out])
        return " AND ".join(f'j."{f}" IS NULL' for f in out) or "true"

    outside = " ".join(f"WHEN '{t}' THEN {nulls(t, keys)}" for t, keys in _ALLOWED_KEYS.items())
    allowed = f"CASE WHEN len(k) = {nn} THEN (CASE j.type {outside} ELSE false END) ELSE ({allowed}) END"
    conds = [
        ("j IS NULL", "'unparseable'"),
        ("NOT list_contains(" + str(list(ALL_TYPES)) + ", j.type)", "'schema'"),
        (f"NOT ({allowed})", "'schema'"),
        # required fields per type, then every field's checks (patterns, lengths, ranges, enums, RFC 3339
        # + a real timestamp) and the conditional requirements -- all generated from the contract
        *contract_sql.required_conds(),
        *contract_sql.value_conds(),
        (
            f"len(k) <> {nn} AND (" + " OR ".join(f"(j.{f} IS NULL AND list_contains(k, '{f}'))" for f in _TYPED) + ")",
            "'schema'",
        ),
        # raw JSON types the reader would coerce silently (one regex pass over the line, see _RAW_TYPE_RE)
        (
            f"regexp_matches(line, '{_RAW_TYPE_RE}') OR (contains(line, '\\u') AND regexp_matches(line, '{_ESCAPED_KEY_RE}'))",
            "'schema'",
        ),
        # duplicate keys: DuckDB keeps the first value, the contract (orjson) the last -- see _slow_path
        (f"len(k) <> {nn} AND len(list_distinct(k)) <> len(k)", "'schema'"),
    ]
    if contract_sql.SLOW_TYPES:  # types with a rule the SQL does not express (catalog_item): always re-checked
        conds.append((contract_sql.type_in(contract_sql.SLOW_TYPES), "'schema'"))
    return conds


def _fast_reason_sql() -> str:
    """SQL CASE giving NULL (row looks valid) or a provisional reason (re-checked by the contract)."""
    return "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in _fast_conds()) + " ELSE NULL END"


def _parse_sql(guarded: bool) -> str:
    """Parse + validate one chunk in one statement (one JSON parse per line, plus ``json_keys``).

    ``guarded``: the JSON functions only see lines ``json_valid`` accepts (a cheap validating scan)
    instead of being wrapped in ``try()`` -- ``try()`` re-runs the whole vector row by row after the
    first error, which made parsing ~8x slower. If a chunk still raises, it is re-run with ``try()``.
    """
    if guarded:
        j = f"CASE WHEN json_valid(line) THEN json_transform(line, '{_STRUCT}') END"
        k = "CASE WHEN json_valid(line) THEN json_keys(line) END"
    else:
        j, k = f"try(json_transform(line, '{_STRUCT}'))", "try(json_keys(line))"
    return f"""
INSERT INTO parsed
SELECT row_id, {_KEEP} AS j, reason,
       CASE WHEN reason IS NOT NULL OR $strict OR NOT coalesce({_IS_VIEWER}, false) THEN line END AS line
FROM (SELECT row_id, line, j, {_fast_reason_sql()} AS reason
      FROM (SELECT *, nn_v + nn_o AS nn
            FROM (SELECT *, {_NN_V} AS nn_v, {_NN_OTHER} AS nn_o
                  FROM (SELECT row_id, line, {j} AS j, {k} AS k FROM chunk))))
"""


_PARSE_SQL = _parse_sql(True)
_PARSE_SQL_TRY = _parse_sql(False)

_REASON_CATEGORY = {"record": "unparseable"}
_RANGE_FIELDS = set(contract_sql.NUM_FIELDS)  # a reason "greater than / less than" on these: impossible_value


def _categorise(reasons: list[str]) -> tuple[str, str]:
    first = reasons[0]
    fld = first.split(":", 1)[0].split(".")[0]
    if fld == "record" and ("JSON" in first or "expected a JSON object" in first):
        return "unparseable", "record"
    if fld in _RANGE_FIELDS and ("greater than" in first or "less than" in first):
        return "impossible_value", fld
    return "schema", fld


def _duplicate_key(line: str) -> str | None:
    """The first key present twice in an object of a JSON line (only called for rows the contract accepts)."""
    import json

    found: list[str] = []

    def pairs(items):
        if not found:
            seen = set()
            for k, _ in items:
                if k in seen:
                    found.append(k)
                    break
                seen.add(k)
        return dict(items)

    try:
        json.loads(line, object_pairs_hook=pairs)
    except ValueError:
        return None
    return found[0] if found else None


def _slow_path(con: duckdb.DuckDBPyConnection, strict: bool = False) -> None:
    """Re-validate every flagged row (``strict``: every row) with shared.contract: exact reasons, or un-flag it."""
    rows = con.execute(
        "SELECT row_id, line FROM parsed WHERE reason IS NOT NULL OR (line IS NOT NULL AND $strict)",
        {"strict": bool(strict)},
    ).fetchall()
    verdicts = []
    for row_id, line in rows:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            verdicts.append((row_id, "unparseable", "record", [f"record: not valid JSON ({exc})"]))
            continue
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k != "received_at"}
        rec, reasons = validate_record(obj)
        if reasons is None and (dup := _duplicate_key(line)):
            # the contract saw the last value of the key, the rows keep DuckDB's first: refuse both
            reasons = [f"{dup}: duplicate key (the record is ambiguous)"]
        if reasons is None:
            verdicts.append((row_id, None, None, None))
        else:
            cat, fld = _categorise(reasons)
            verdicts.append((row_id, cat, fld, reasons))
    # via Arrow: executemany() would run one INSERT per row (seconds per thousand rows)
    v = pa.table(
        {
            "row_id": pa.array([x[0] for x in verdicts], pa.int64()),
            "reason": pa.array([x[1] for x in verdicts], pa.string()),
            "field": pa.array([x[2] for x in verdicts], pa.string()),
            "reasons": pa.array([x[3] for x in verdicts], pa.list_(pa.string())),
        }
    )
    con.register("verdicts_arrow", v)
    con.execute("CREATE OR REPLACE TEMP TABLE verdicts AS SELECT * FROM verdicts_arrow")
    con.unregister("verdicts_arrow")
    # no UPDATE of the big table (it rewrote ``parsed``): the final verdict of a row is its contract
    # verdict if it has one, else the fast path's NULL -- see _VALID
    con.execute("""CREATE OR REPLACE TEMP TABLE unflagged AS
                   SELECT row_id FROM verdicts v WHERE v.reason IS NULL""")
    con.execute("""CREATE OR REPLACE TEMP TABLE invalid AS
                   SELECT p.row_id, (SELECT s.src FROM sources s WHERE p.row_id BETWEEN s.r0 AND s.r1) AS src,
                          v.reason, v.field, v.reasons, p.line, p.j
                   FROM parsed p JOIN verdicts v USING (row_id) WHERE v.reason IS NOT NULL""")


# rows the contract accepts (fast path clean, or flagged and then accepted by shared.contract)
_VALID = "(reason IS NULL OR row_id IN (SELECT row_id FROM unflagged)) AND row_id NOT IN (SELECT row_id FROM invalid)"


def _ingest_chunks(con, chunks: Iterable[pa.Table], cfg: CleanConfig) -> int:
    # the source object of a row is kept as row-id ranges, not repeated on every row
    con.execute("CREATE TABLE sources (src VARCHAR, r0 BIGINT, r1 BIGINT)")
    con.execute(
        f"""CREATE TABLE parsed (row_id BIGINT, j STRUCT({
            ", ".join(f'"{k}" {v}' for k, v in _KEPT.items())
        }), reason VARCHAR, line VARCHAR)"""
    )
    n = 0
    for chunk in chunks:
        con.register("chunk", chunk)
        con.execute("INSERT INTO sources SELECT src, min(row_id), max(row_id) FROM chunk GROUP BY src")
        try:
            con.execute(_PARSE_SQL, {"strict": bool(cfg.strict)})
        except duckdb.Error:  # a line json_valid accepts but the transform rejects: per-row try()
            con.execute(_PARSE_SQL_TRY, {"strict": bool(cfg.strict)})
        con.unregister("chunk")
        n += chunk.num_rows
    return n


def clean_core(con, run_id: str, cfg: CleanConfig, *, seen_paths: list[str], catalog_paths: list[str]) -> dict:
    """Everything after parsing, as DuckDB tables: ``clean``, ``quarantine``, ``catalog_new``,
    ``dedupe_new``; returns the report counters."""
    _slow_path(con, cfg.strict)
    corrected, late = skew_sql("lag_s", cfg.rules)  # the skew rule (shared/pipeline/skew.py)
    cur = cfg.default_currency.replace("'", "")
    # the catalog: catalog_item rows of this run (latest per item) + all committed catalog parts
    con.execute(f"""CREATE TABLE catalog_new AS
        SELECT j.item_id AS item_id, j.title AS title, j.description AS description, j.category AS category,
               j.price AS price, coalesce(j.currency, '{cur}') AS currency, j.stream_ids AS stream_ids,
               j.platform AS platform, {_ts("j.ts")} AS ts, j.event_id AS event_id,
               '{run_id}' AS run_id
        FROM (SELECT row_id, json_transform(line, '{_STRUCT}') AS j FROM parsed
              WHERE {_VALID} AND j.type = '{CATALOG_TYPE}')
        QUALIFY row_number() OVER (PARTITION BY j.item_id ORDER BY {_ts("j.ts")} DESC, row_id DESC) = 1""")
    known = "SELECT item_id FROM catalog_new"
    if catalog_paths:
        known += f" UNION SELECT item_id FROM read_parquet({catalog_paths!r})"
    con.execute(f"CREATE TEMP TABLE known_items AS {known}")
    # Valid viewer events stay in ``parsed``; the rows to drop are found on narrow projections and the
    # typed, time-normalised clean table is built by ONE statement (no wide intermediate copies).
    # Host actions (no viewer) are deduplicated with the viewer events (one event_id space, the same
    # index) and go to their own table, ``clean_host``.
    events = f"{_VALID} AND j.type <> '{CATALOG_TYPE}'"
    viewer = f"{_VALID} AND {_IS_VIEWER}"
    host = f"{_VALID} AND j.type IN {HOST_ACTIONS}"
    # dedupe within the run: only event_ids occurring more than once are windowed (first copy = earliest
    # received_at, then row order)
    con.execute(f"""CREATE TEMP TABLE dup_losers AS
        SELECT row_id FROM (
            SELECT row_id, row_number() OVER (PARTITION BY event_id
                                              ORDER BY received_at NULLS LAST, row_id) AS rn
            FROM (SELECT row_id, j.event_id AS event_id, try_cast(j.received_at AS TIMESTAMPTZ) AS received_at
                  FROM parsed WHERE {events} AND j.event_id IN (
                      SELECT j.event_id FROM parsed WHERE {events} GROUP BY 1 HAVING count(*) > 1)))
        WHERE rn > 1""")
    # ... then against every committed id (the dedupe index)
    if seen_paths:
        con.execute(f"""CREATE TEMP TABLE seen_rows AS
            SELECT p.row_id FROM (SELECT row_id, j.event_id AS event_id FROM parsed WHERE {events}) p
            SEMI JOIN read_parquet({seen_paths!r}) s ON p.event_id = s.event_id
            WHERE p.row_id NOT IN (SELECT row_id FROM dup_losers)""")
    else:
        con.execute("CREATE TEMP TABLE seen_rows (row_id BIGINT)")
    # impossible values of valid-looking rows: purchases of items never seen in a catalog
    if cfg.require_catalog:
        con.execute(f"""CREATE TEMP TABLE unknown_rows AS
            SELECT row_id FROM parsed WHERE {viewer} AND j.type = 'purchase'
              AND j.item_id NOT IN (SELECT item_id FROM known_items)
              AND row_id NOT IN (SELECT row_id FROM dup_losers) AND row_id NOT IN (SELECT row_id FROM seen_rows)""")
    else:
        con.execute("CREATE TEMP TABLE unknown_rows (row_id BIGINT)")
    # the typed rows are computed ONCE into a table: the view was re-evaluated by every reader (dates,
    # stats, each clean/ COPY, analytics: ~5 evaluations of the anti-joins and timestamp casts)
    dropped = """row_id NOT IN (SELECT row_id FROM dup_losers UNION ALL SELECT row_id FROM seen_rows
                                UNION ALL SELECT row_id FROM unknown_rows)"""

    def timed(rows: str) -> str:
        """rows (row_id, j) -> + ts_parsed, received_at, lag_s, ts_corrected, late (the skew rule)."""
        return f"""WITH t AS (
            SELECT row_id, j, {_ts("j.ts")} AS ts_parsed, try_cast(j.received_at AS TIMESTAMPTZ) AS received_at
            FROM ({rows})),
        l AS (SELECT *, epoch(received_at) - epoch(ts_parsed) AS lag_s FROM t),
        f AS (SELECT *, {corrected} AS ts_corrected, {late} AS late FROM l)"""

    con.execute(f"""CREATE TEMP VIEW clean_v AS
        {timed(f"SELECT row_id, j FROM parsed WHERE {viewer} AND {dropped}")}
        SELECT j.event_id AS event_id, j.type AS type,
               CASE WHEN ts_corrected THEN received_at ELSE ts_parsed END AS ts, received_at,
               j.platform AS platform, j.stream_id AS stream_id, j.user_id AS user_id, j.item_id AS item_id,
               j.price AS price,
               CASE WHEN j.currency IS NOT NULL THEN j.currency
                    WHEN j.type IN {_WITH_CURRENCY} THEN '{cur}' END AS currency,
               CAST(CASE WHEN j.quantity IS NOT NULL THEN j.quantity
                         WHEN j.type IN {_WITH_QUANTITY} THEN 1 END AS INTEGER) AS quantity,
               j.order_id AS order_id,
               CAST(CASE WHEN j.type = 'like' THEN coalesce(j.count, 1) ELSE j.count END AS INTEGER) AS count,
               j.gift_value AS gift_value, j.text AS text, CAST(j.props AS VARCHAR) AS props, j.ts AS ts_sent,
               ts_corrected, late, '{run_id}' AS run_id, j.rec_id AS rec_id, CAST(j.position AS INTEGER) AS position
        FROM f""")
    con.execute("CREATE TEMP TABLE clean AS SELECT * FROM clean_v")
    # host actions: re-parsed from their lines (``parsed`` keeps viewer fields only), the same time rules
    hsel = ", ".join(_HOST_SELECT.get(f, f'j."{f}"') + f' AS "{f}"' for f in _HOST_FIELDS)
    con.execute(f"""CREATE TEMP TABLE clean_host AS
        {timed(f"SELECT row_id, json_transform(line, '{_STRUCT}') AS j FROM parsed WHERE {host} AND {dropped}")}
        SELECT j.event_id AS event_id, j.type AS type,
               CASE WHEN ts_corrected THEN received_at ELSE ts_parsed END AS ts, received_at,
               j.platform AS platform, j.stream_id AS stream_id, {hsel},
               CASE WHEN j.currency IS NOT NULL THEN j.currency WHEN j.price IS NOT NULL THEN '{cur}' END AS currency,
               CAST(j.props AS VARCHAR) AS props, j.ts AS ts_sent, ts_corrected, late, '{run_id}' AS run_id
        FROM f""")
    # (unique per run already)
    con.execute("CREATE TEMP VIEW dedupe_new AS SELECT event_id FROM clean UNION ALL SELECT event_id FROM clean_host")
    # quarantine: invalid rows with the contract's reasons + purchases of unknown items
    con.execute("""CREATE TABLE quarantine AS
        SELECT row_id, src, reason, field, reasons, CAST(line AS VARCHAR) AS raw,
               try(j.event_id) AS event_id, try(j.received_at) AS received_at
        FROM invalid
        UNION ALL
        SELECT p.row_id, (SELECT s.src FROM sources s WHERE p.row_id BETWEEN s.r0 AND s.r1), 'unknown_item', 'item_id',
               ['item_id: ' || p.j.item_id || ' is not in the catalog seen so far'],
               coalesce(CAST(p.line AS VARCHAR), CAST(to_json(p.j) AS VARCHAR)), p.j.event_id, p.j.received_at
        FROM parsed p WHERE p.row_id IN (SELECT row_id FROM unknown_rows)""")
    stats = con.execute(f"""SELECT
        (SELECT count(*) FROM parsed),
        (SELECT count(*) FROM parsed WHERE {_VALID} AND j.type = '{CATALOG_TYPE}'),
        (SELECT count(*) FROM dup_losers),
        (SELECT count(*) FROM seen_rows),
        (SELECT count(*) FROM catalog_new)""").fetchone()
    host_rows = con.execute("SELECT count(*) FROM clean_host").fetchone()[0]
    stats = (
        *stats[:4],
        *con.execute("SELECT count(*), count(*) FILTER (late), count(*) FILTER (ts_corrected) FROM clean").fetchone(),
        stats[4],
    )
    # clean purchases of items no catalog named (yet): kept and counted, not lost (unknown_items="keep")
    uncatalogued = con.execute("""SELECT count(*) FROM clean WHERE type = 'purchase' AND item_id IS NOT NULL
                                  AND CAST(item_id AS VARCHAR) NOT IN (SELECT item_id FROM known_items)""").fetchone()[
        0
    ]
    by_reason = dict(con.execute("SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 1").fetchall())
    by_field = dict(
        con.execute(
            "SELECT reason || ':' || coalesce(field, '?'), count(*) FROM quarantine GROUP BY 1 ORDER BY 1"
        ).fetchall()
    )
    # the parsed rows (the run's largest table) are not read again: free their memory for the COPYs and
    # the analytics (the ``clean_v`` view over them is never queried after ``clean`` was built)
    con.execute("DROP VIEW clean_v")
    con.execute("DROP TABLE parsed")
    return {
        "rows_in": stats[0],
        "catalog_rows": stats[1],
        "duplicates_in_run": stats[2],
        "duplicates_seen_before": stats[3],
        "duplicates": stats[2] + stats[3],
        "rows_out": stats[4],
        "host_rows": host_rows,
        "late": stats[5],
        "ts_corrected": stats[6],
        "catalog_items": stats[7],
        "uncatalogued_purchases": uncatalogued,
        "dropped": sum(by_reason.values()),
        "dropped_by_reason": by_reason,
        "dropped_by_field": by_field,
    }


# ================================================================================ Arrow outputs
def write_parquet(con, sql: str, path: str, schema: pa.Schema, params=None, batch_rows: int = 1 << 20) -> int:
    """Write a query's result to a Parquet file with ``schema``: DuckDB ``COPY`` (streams, spills, multi-
    threaded; no Arrow round trip), with the Arrow schema stored as ``ARROW:schema`` metadata so pyarrow
    reads the same types as before (dictionary ids, int32, UTC timestamps). ``params``: ``$name`` values
    inlined as SQL literals (COPY takes no parameters)."""
    for k, v in (params or {}).items():
        sql = sql.replace(f"${k}", _literal(v))
    # (the CASE keeps nullable columns OPTIONAL: DuckDB writes a column without NULLs as REQUIRED, which
    # pyarrow would read as ``not null`` -- another schema than the pyarrow-written files)
    cols = ", ".join(
        (
            f'CASE WHEN "{f.name}" IS NULL THEN NULL ELSE CAST("{f.name}" AS {_duck_type(f.type)}) END'
            if f.nullable
            else f'CAST("{f.name}" AS {_duck_type(f.type)})'
        )
        + f' AS "{f.name}"'
        for f in schema
    )
    meta = base64.b64encode(schema.serialize().to_pybytes()).decode()
    con.execute(f"""COPY (SELECT {cols} FROM ({sql})) TO '{path}'
                    (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{'ARROW:schema': '{meta}'}})""")
    return pq.ParquetFile(path).metadata.num_rows


def _literal(v) -> str:
    from datetime import datetime

    if isinstance(v, datetime):
        return f"TIMESTAMPTZ '{v.isoformat()}'"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t) or pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    return {
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.float64(): "DOUBLE",
        pa.bool_(): "BOOLEAN",
        _UTC: "TIMESTAMPTZ",
    }[t]


def clean_tables(
    raw: Iterable[tuple[str, bytes]],
    cfg: CleanConfig | None = None,
    *,
    run_id: str = "r-local",
    seen_event_ids: Iterable[str] = (),
    catalog: pa.Table | None = None,
) -> dict[str, Any]:
    """The pure core for in-memory use and tests: raw objects (key, bytes) in, Arrow tables out.

    Returns ``{"clean": Table, "host": Table, "quarantine": Table, "catalog": Table, "report": dict}``.
    """
    cfg = cfg or CleanConfig()
    tmp = tempfile.mkdtemp(prefix="daihuo-clean-", dir=cfg.tmp_dir)
    try:
        seen_paths, catalog_paths = [], []
        ids = list(seen_event_ids)
        if ids:
            pq.write_table(pa.table({"event_id": pa.array(ids, pa.string())}), os.path.join(tmp, "seen.parquet"))
            seen_paths.append(os.path.join(tmp, "seen.parquet"))
        if catalog is not None and catalog.num_rows:
            pq.write_table(catalog, os.path.join(tmp, "catalog.parquet"))
            catalog_paths.append(os.path.join(tmp, "catalog.parquet"))
        con = _connect(os.path.join(tmp, "work.duckdb"), cfg)
        try:
            _ingest_chunks(con, _chunks(((k, (lambda b=b: b)) for k, b in raw), cfg), cfg)
            report = clean_core(con, run_id, cfg, seen_paths=seen_paths, catalog_paths=catalog_paths)
            out = {}
            for name, sql, schema in (
                ("clean", "SELECT * FROM clean ORDER BY ts, event_id", CLEAN_SCHEMA),
                ("catalog", "SELECT * FROM catalog_new ORDER BY item_id", CATALOG_SCHEMA),
                ("host", "SELECT * FROM clean_host ORDER BY ts, event_id", HOST_SCHEMA),
            ):
                p = os.path.join(tmp, f"{name}.parquet")
                write_parquet(con, sql, p, schema)
                out[name] = pq.read_table(p)
            out["quarantine"] = con.sql("SELECT * FROM quarantine ORDER BY row_id").to_arrow_table()
            out["report"] = report
            return out
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _chunks(objects: Iterable[tuple[str, Any]], cfg: CleanConfig) -> Iterable[pa.Table]:
    """Group raw objects into Arrow tables of about ``chunk_bytes`` of NDJSON each."""
    buf, size, row0 = [], 0, 0
    for key, fetch in objects:
        t = raw_table(fetch(), key, row0)
        row0 += t.num_rows
        buf.append(t)
        size += t.column("line").nbytes
        if size >= cfg.chunk_bytes:
            yield pa.concat_tables(buf)
            buf, size = [], 0
    if buf:
        yield pa.concat_tables(buf)


def _prefetch(chunks: Iterable[pa.Table]) -> Iterable[pa.Table]:
    """Build the next chunk (fetch, gunzip, split lines: mostly GIL-free) in a background thread while
    DuckDB parses the current one; at most one chunk waits (memory: one more ``chunk_bytes``)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def produce():
        try:
            for c in chunks:
                if stop.is_set():
                    return
                q.put(c)
            q.put(end)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)

    th = threading.Thread(target=produce, name="clean-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            th.join(timeout=0.05)


# ===================================================================================== the run
def _local(store, key: str, tmp: str) -> str:
    """A filesystem path holding the object: the file itself on the local backend, else a download."""
    return store.local_path(key, os.path.join(tmp, "dl"))


def _put_file(store, key: str, path: str, content_type: str) -> None:
    with open(path, "rb") as f:
        store.put(key, f.read(), content_type=content_type)


def run_clean(
    store, bus=None, cfg: CleanConfig | None = None, *, now: float | None = None, charts: ChartsHook | None = None
) -> dict[str, Any]:
    """One clean run: pending raw objects -> clean/, quarantine/, catalog/, state/dedupe/, analytics/,
    reports/clean/; commit by swapping the manifest (generation precondition); publish the summary.
    ``charts``: see :func:`commit_run` (the clean function gives the dashboard's pre-renderer).

    Returns the summary; ``status`` is ``committed``, ``noop`` (nothing pending) or ``conflict``
    (another run committed first: this one's objects are unreferenced and ignored by readers).
    Fault points (tests, ``shared.runtime.faults``): ``clean:write_clean`` / ``clean:write_all``
    crash before the manifest moves, ``clean:commit`` after it moved but before publishing.
    """
    cfg = cfg or CleanConfig()
    t0 = time.monotonic()
    now = time.time() if now is None else now
    plan = plan_run(store, bus, cfg, now)
    if plan is None:
        return {"status": "noop", "pending": 0}
    manifest, pending, run_id, ref = plan.manifest, plan.pending, plan.run_id, plan.ref
    tmp = tempfile.mkdtemp(prefix="daihuo-clean-", dir=cfg.tmp_dir)
    try:
        con = _connect(os.path.join(tmp, "work.duckdb"), cfg)
        try:
            written: dict[str, Any] = {"clean": [], "quarantine": [], "clean_files": [], "host_files": []}
            _ingest_chunks(con, _prefetch(_chunks(((k, (lambda k=k: store.get(k))) for k in pending), cfg)), cfg)
            # the index as this run's commit will leave it: parts beyond the look-back are not consulted
            seen = [_local(store, k, tmp) for k in plan.live_dedupe]
            cats = [_local(store, k, tmp) for k in manifest["catalog"]]
            report = clean_core(con, run_id, cfg, seen_paths=seen, catalog_paths=cats)
            # rows accepted whose sent ts is older than the look-back: the index no longer covers them,
            # so a duplicate among them would have been accepted (counted, docs/pipeline.md step 6)
            report["beyond_lookback"] = con.execute(
                "SELECT count(*) FROM clean WHERE coalesce(try_cast(ts_sent AS TIMESTAMPTZ), ts) < to_timestamp($c)",
                {"c": ref - cfg.lookback_days * 86400.0},
            ).fetchone()[0]
            # clean/ per event date (UTC)
            # one pass for the dates and the streams each date file holds
            dates = con.execute("""SELECT strftime(ts, '%Y-%m-%d') AS d, min(date_trunc('day', ts)),
                                          list(DISTINCT CAST(stream_id AS VARCHAR) ORDER BY CAST(stream_id AS VARCHAR))
                                   FROM clean GROUP BY 1 ORDER BY 1""").fetchall()
            for d, day, streams in dates:
                key = layout.clean_key(d, run_id)
                p = os.path.join(tmp, f"clean-{d}.parquet")
                # rows in arrival order (a sort by stream/ts of the whole run cost as much as the parse)
                write_parquet(
                    con, "SELECT * FROM clean WHERE ts >= $d AND ts < $d + INTERVAL 1 DAY", p, CLEAN_SCHEMA, {"d": day}
                )
                _put_file(store, key, p, "application/vnd.apache.parquet")
                written["clean"].append(key)
                written["clean_files"].append({"key": key, "streams": [x for x in streams if x is not None]})
            # clean_host/ per event date: the host actions (few rows)
            hdates = con.execute("""SELECT strftime(ts, '%Y-%m-%d') AS d, min(date_trunc('day', ts)),
                                           list(DISTINCT CAST(stream_id AS VARCHAR) ORDER BY CAST(stream_id AS VARCHAR))
                                    FROM clean_host GROUP BY 1 ORDER BY 1""").fetchall()
            for d, day, streams in hdates:
                key = layout.clean_host_key(d, run_id)  # listed in the manifest's host_files
                p = os.path.join(tmp, f"host-{d}.parquet")
                write_parquet(
                    con,
                    "SELECT * FROM clean_host WHERE ts >= $d AND ts < $d + INTERVAL 1 DAY",
                    p,
                    HOST_SCHEMA,
                    {"d": day},
                )
                _put_file(store, key, p, "application/vnd.apache.parquet")
                written["host_files"].append({"key": key, "streams": [x for x in streams if x is not None]})
            faults.point("clean:write_clean", store, "after writing clean/, before the manifest moved")
            # quarantine/ per received date
            qrows = con.execute("""SELECT coalesce(substr(received_at, 1, 10), strftime(now(), '%Y-%m-%d')) AS d,
                                          reason, field, reasons, raw, event_id, src, received_at
                                   FROM quarantine ORDER BY row_id""").fetchall()
            by_day: dict[str, list[bytes]] = {}
            for d, reason, fld, reasons, raw, eid, src, rec in qrows:
                by_day.setdefault(d, []).append(quarantine_line(reason, fld, reasons, raw, eid, src, rec, run_id))
            for d, rows in sorted(by_day.items()):
                key = layout.quarantine_key(d, run_id)
                store.put(key, gzip.compress(b"\n".join(rows) + b"\n", mtime=0), content_type="application/gzip")
                written["quarantine"].append(key)
            # dedupe index part and catalog part
            dkey = layout.dedupe_key(run_id)
            p = os.path.join(tmp, "dedupe.parquet")
            write_parquet(con, "SELECT event_id FROM dedupe_new", p, pa.schema([("event_id", pa.string())]))
            _put_file(store, dkey, p, "application/vnd.apache.parquet")
            ckey = None
            if report["catalog_items"]:
                ckey = layout.catalog_key(run_id)
                p = os.path.join(tmp, "catalog.parquet")
                write_parquet(con, "SELECT * FROM catalog_new ORDER BY item_id", p, CATALOG_SCHEMA)
                _put_file(store, ckey, p, "application/vnd.apache.parquet")
            # analytics: recompute the affected streams from ALL their committed clean data + this run's
            analytics_keys = _write_analytics(con, store, manifest, written, run_id, cfg, tmp)
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return commit_run(
        store, bus, cfg, plan, written, report, dkey=dkey, ckey=ckey, analytics=analytics_keys, t0=t0, charts=charts
    )


def quarantine_line(reason, fld, reasons, raw, eid, src, received_at, run_id: str) -> bytes:
    """One quarantine/ NDJSON row (both engines write them with this)."""
    if reason == "unknown_item" and raw and raw.startswith("{") and '":null' in raw.replace(" ", ""):
        # an unflagged row keeps no line: its parsed fields, without the absent ones, are its raw
        raw = orjson.dumps({k: v for k, v in orjson.loads(raw).items() if v is not None}).decode()
    return orjson.dumps(
        {
            "reason": reason,
            "field": fld,
            "reasons": reasons,
            "event_id": eid,
            "raw": raw,
            "received_at": received_at,
            "source": src,
            "run_id": run_id,
            "stage": "clean",
        }
    )


@dataclass
class RunPlan:
    """What a clean run works on, whichever engine runs it: the manifest read (and its generation), the
    pending raw objects (and the backlog behind them), the run id, the look-back reference time and
    the dedupe index parts the run consults (those its commit will keep)."""

    manifest: dict
    gen: Any
    pending: list[str]
    pending_all: list[str]
    run_id: str
    ref: float
    now: float
    live_dedupe: list[str]


def plan_run(store, bus, cfg: CleanConfig, now: float) -> RunPlan | None:
    """Read the manifest (republishing unpublished runs), list the pending raw objects; None if none."""
    from shared.pipeline import retention

    manifest, gen = load_manifest(store)
    if bus is not None:
        _republish(store, bus, cfg, manifest)
    done = set(manifest["done"])
    # partitions older than the look-back are forgotten by ``done`` (compaction): never pending again.
    # The look-back counts back from the newest raw partition (archive never writes one beyond the
    # wall clock), not the wall clock alone: a store that got no data for a while forgets nothing.
    raw_keys = [k for k in store.list(layout.RAW) if layout.is_raw_object(k)]
    ref = retention.reference_time(raw_keys, now)
    old = retention.cutoff_date(ref, cfg.lookback_days)
    pending_all = [k for k in raw_keys if k not in done and not retention.too_old(k, old)]
    pending = pending_all[: cfg.max_objects]
    if not pending:
        return None
    run_id = "r-" + hashlib.sha256(f"{gen}|{manifest['seq']}|".encode() + "\n".join(pending).encode()).hexdigest()[:20]
    # the index as this run's commit will leave it: parts beyond the look-back are not consulted
    live = set(retention.compact(manifest, now, cfg.lookback_days, ref=ref)[0]["dedupe"])
    return RunPlan(manifest, gen, pending, pending_all, run_id, ref, now, [k for k in manifest["dedupe"] if k in live])


def commit_run(
    store,
    bus,
    cfg: CleanConfig,
    plan: RunPlan,
    written: dict,
    report: dict,
    *,
    dkey: str,
    ckey,
    analytics,
    t0,
    charts: ChartsHook | None = None,
) -> dict[str, Any]:
    """Write the run's report, then commit: the manifest moves only if nobody moved it since ``plan``
    read it (generation precondition); compact, publish. Both engines (DuckDB here, Beam:
    pipelines/beam/clean.py) end with this call, so a run commits the same way whichever ran it.

    ``charts(store, run_id, analytics keys)`` (optional) writes the dashboard's pre-rendered charts and
    returns their key, which the manifest then names (``Manifest.charts``); without it, or when it fails
    (logged, the run still commits), the manifest names none and the dashboard renders on request."""
    from shared.adapters.storage import PreconditionFailed
    from shared.pipeline import retention

    manifest, gen, pending, run_id, ref, now = plan.manifest, plan.gen, plan.pending, plan.run_id, plan.ref, plan.now
    analytics_keys = analytics
    charts_key = None
    if charts is not None:
        try:
            charts_key = charts(store, run_id, analytics_keys)
        except Exception as exc:  # the charts are an optimisation: the page renders them on request
            log.warning("charts not pre-rendered", extra={"run_id": run_id, "error": f"{type(exc).__name__}: {exc}"})
    report_key = layout.clean_report_key(run_id)
    summary = {
        "run_id": run_id,
        "status": "committed",
        "raw_objects": pending,
        "backlog": len(plan.pending_all) - len(pending),
        "clean": written["clean"],
        "quarantine": written["quarantine"],
        "catalog": ckey,
        "dedupe": dkey,
        "analytics": analytics_keys,
        "report": report_key,
        **report,
        "seconds": round(time.monotonic() - t0, 3),
    }
    store.put(report_key, orjson.dumps(summary, option=orjson.OPT_INDENT_2), content_type="application/json")
    faults.point("clean:write_all", store, "after writing every object, before the manifest moved")
    # commit: the manifest moves only if nobody else moved it since we read it
    new = dict(manifest)
    new["seq"] = manifest["seq"] + 1
    new["done"] = manifest["done"] + pending
    new["clean_files"] = manifest["clean_files"] + written["clean_files"]
    if written["host_files"] or "host_files" in manifest:
        new["host_files"] = manifest.get("host_files", []) + written["host_files"]
    new["dedupe"] = manifest["dedupe"] + [dkey]
    new["catalog"] = manifest["catalog"] + ([ckey] if ckey else [])
    new["analytics"] = analytics_keys
    new.pop("charts", None)  # the previous run's were drawn from the previous tables
    if charts_key:
        new["charts"] = charts_key
    new["runs"] = manifest["runs"] + [
        {
            "run_id": run_id,
            "report": report_key,
            "published": False,
            "raw_objects": len(pending),
            "rows_out": report["rows_out"],
            "at": retention._iso(now),
        }
    ]
    new, compaction = retention.compact(new, now, cfg.lookback_days, ref=ref)
    try:
        layout.commit_manifest(store, new, gen)
    except PreconditionFailed:
        log.warning("clean run lost the manifest race; nothing committed", extra={"run_id": run_id})
        return {"status": "conflict", "run_id": run_id}
    for k in compaction["dedupe_dropped"]:  # no longer named by the manifest: nobody reads them
        try:
            store.delete(k)
        except Exception as exc:  # the bucket's lifecycle rule removes a leftover
            log.warning("could not delete a compacted dedupe part", extra={"key": k, "error": str(exc)})
    summary["compaction"] = {k: (len(v) if isinstance(v, list) else v) for k, v in compaction.items()}
    log.info(
        "clean run committed",
        extra={
            k: v
            for k, v in summary.items()
            if k
            in ("run_id", "rows_in", "rows_out", "dropped", "duplicates", "late", "ts_corrected", "seconds", "backlog")
        },
    )
    faults.point("clean:commit", store, "after the commit, before publishing")
    if bus is not None:
        _publish(store, bus, cfg, run_id, summary)
    return summary


def _publish(store, bus, cfg: CleanConfig, run_id: str, summary: dict) -> None:
    """Publish the run's summary on ``events-cleaned``, then mark the run published in the manifest.
    A failure leaves it unmarked: the next run republishes it (at least once)."""
    msg = {
        k: summary.get(k)
        for k in (
            "run_id",
            "clean",
            "quarantine",
            "catalog",
            "analytics",
            "report",
            "rows_in",
            "rows_out",
            "dropped",
            "duplicates",
            "late",
            "ts_corrected",
        )
    }
    bus.publish(cfg.topic, orjson.dumps(msg), run_id=run_id)

    def mark(m):
        for r in m["runs"]:
            if r["run_id"] == run_id:
                r["published"] = True
        return m

    layout.update_manifest(store, mark)


def _republish(store, bus, cfg: CleanConfig, manifest: dict) -> None:
    for r in manifest["runs"]:
        if not r.get("published"):
            try:
                _publish(store, bus, cfg, r["run_id"], orjson.loads(store.get(r["report"])))
            except Exception as exc:  # keep cleaning; it stays unpublished and is retried next time
                log.error("republish failed", extra={"run_id": r["run_id"], "error": str(exc)})


def _write_analytics(con, store, manifest, written, run_id, cfg, tmp) -> dict[str, str]:
    from shared.pipeline import kpi_tables
    from shared.pipeline.analytics import analytics_sql

    derived_tables, derived_inputs = kpi_tables.DERIVED_TABLES, kpi_tables.DERIVED_INPUTS

    # the streams of this run's viewer events and host actions (a late stream_end alone re-reads its stream)
    affected = [
        s
        for (s,) in con.execute(
            "SELECT DISTINCT CAST(stream_id AS VARCHAR) FROM clean "
            "UNION SELECT DISTINCT CAST(stream_id AS VARCHAR) FROM clean_host"
        ).fetchall()
    ]
    old = manifest.get("analytics") or {}
    if old and any(not old.get(n) for n in layout.ANALYTICS_TABLES if n not in derived_tables):
        # a table this store has never had (a newer version added it): backfill it once, every stream
        everything = manifest["clean_files"] + (manifest.get("host_files") or [])
        affected = sorted(set(affected) | {s for f in everything for s in f["streams"]})
    con.execute("CREATE TEMP TABLE affected AS SELECT unnest(?::VARCHAR[]) AS stream_id", [affected])

    def source(table: str, listed: list[dict], schema: pa.Schema) -> str:
        """This run's rows + the committed files that hold an affected stream."""
        paths = [_local(store, f["key"], tmp) for f in listed if set(f["streams"]) & set(affected)]
        if not paths:
            return f"SELECT * FROM {table}"
        cols = ", ".join(f.name for f in schema)
        return (
            f"SELECT {cols} FROM {table} UNION ALL SELECT {cols} FROM read_parquet({paths!r}) "
            f"WHERE CAST(stream_id AS VARCHAR) IN (SELECT stream_id FROM affected)"
        )

    con.execute(f"CREATE OR REPLACE TEMP VIEW a_source AS {source('clean', manifest['clean_files'], CLEAN_SCHEMA)}")
    hsrc = source("clean_host", manifest.get("host_files", []), HOST_SCHEMA)
    con.execute(f"CREATE OR REPLACE TEMP VIEW a_host_source AS {hsrc}")
    analytics_sql(con, "a_source", cfg.max_session_s, host_source="a_host_source")
    kpi_tables.stream_tables_sql(con, "a_source", "a_host_source")
    out = {}

    def put(name: str, sql: str) -> None:
        p = os.path.join(tmp, f"a-{name}.parquet")
        con.execute(f"COPY ({sql} ORDER BY ALL) TO '{p}' (FORMAT parquet, COMPRESSION zstd)")
        key = layout.analytics_key(name, run_id)
        _put_file(store, key, p, "application/vnd.apache.parquet")
        out[name] = key

    # per-stream tables: the affected streams' new rows + the other streams' rows as committed
    for name in layout.ANALYTICS_TABLES:
        if name in derived_tables:
            continue
        sql = f"SELECT * FROM a_{name}"
        if old.get(name):
            prev = _local(store, old[name], tmp)
            sql = (
                f"SELECT * FROM a_{name} UNION ALL BY NAME SELECT * FROM read_parquet('{prev}') "
                f"WHERE stream_id NOT IN (SELECT stream_id FROM affected)"
            )
        if name in derived_inputs:  # the whole table, read again by the cross-stream ones
            con.execute(f"CREATE OR REPLACE TEMP TABLE m_{name} AS {sql}")
            sql = f"SELECT * FROM m_{name}"
        put(name, sql)
    # cross-stream tables (new vs returning, hosts, cohorts): recomputed from the merged tables
    kpi_tables.derived_sql(con, settings().dashboard_tz)  # hosts, cohorts, experiments: every stream
    for name in derived_tables:
        put(name, f"SELECT * FROM a_{name}")
    return out


def read_clean(store, manifest: dict | None = None) -> pa.Table:
    """Every committed clean row (the manifest's clean files), as one Arrow table. For tests / small data."""
    manifest = manifest or load_manifest(store)[0]
    import io

    tables = [pq.read_table(io.BytesIO(store.get(f["key"]))) for f in manifest["clean_files"]]
    return pa.concat_tables(tables, promote_options="permissive") if tables else CLEAN_SCHEMA.empty_table()


def read_analytics(store, name: str, manifest: dict | None = None) -> pa.Table:
    import io

    manifest = manifest or load_manifest(store)[0]
    return pq.read_table(io.BytesIO(store.get(manifest["analytics"][name])))
