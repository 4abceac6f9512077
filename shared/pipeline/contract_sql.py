"""The event contract's SQL form, DERIVED at import time from ``shared.contract`` (never restated).

The clean step checks most rows with a vectorised DuckDB fast path and re-validates only the rows it
flags with ``shared.contract.validate_record`` (the reference). Everything the fast path knows about
the contract comes from here, generated from the published JSON Schema (``contract.json_schema()``: one
``$defs`` entry per model of ``MODEL_BY_TYPE``):

* ``FIELDS``: every top-level field of every type with the DuckDB type the JSON reader gives it
  (``string`` -> VARCHAR, ``number`` -> DOUBLE, ``integer`` -> BIGINT, ``object`` -> JSON, arrays of
  them -> ``T[]``), plus ``received_at`` (stamped by ingest). A field name keeps one JSON type across
  types (one parse struct): a contract that breaks this fails at import.
* ``ALLOWED_KEYS`` / ``REQUIRED`` per type: the model's properties / ``required``.
* ``value_conds()``: one SQL check per (field, constraint) -- ``pattern``, ``format: date-time`` (the
  pattern plus a real timestamp cast), ``minLength`` / ``maxLength``, ``enum`` / ``const``,
  ``minimum`` / ``maximum`` (exclusive too), the free-form ``props`` object; and the model's
  ``allOf`` ``if``/``then`` clauses (conditional requirements, e.g. showcase_update's ``price`` when
  ``change`` is ``"price"``).
* ``STR_FIELDS`` / ``NUM_FIELDS`` / ``INT_FIELDS``: the raw JSON types the reader would coerce silently
  (``raw_type_re()``).
* ``SLOW_TYPES``: the types with a schema keyword this module does not translate (``catalog_item``:
  its ``stream_ids`` array): their rows are always re-validated by the contract. Correctness never
  depends on the translation being complete -- only speed does; ``tests/test_clean_types.py`` proves
  the fast path agrees with ``validate_record`` for every type.

Adding an event type (or a field) is an edit of ``shared/contract.py``: this module, the clean SQL and
the JSON Schema follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.contract import ALL_TYPES
from shared.contract_rules import ANNOTATIONS as _ANNOTATIONS
from shared.contract_rules import Untranslatable, conditional, non_null, type_schemas

_DUCK = {"string": "VARCHAR", "number": "DOUBLE", "integer": "BIGINT", "object": "JSON", "boolean": "BOOLEAN"}
EXTRA_FIELDS = {"received_at": "VARCHAR"}  # not in the contract: stamped by ingest on every accepted event


def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise Untranslatable(f"literal {v!r}")


@dataclass(frozen=True)
class Prop:
    """One property of one model: its DuckDB type, its value checks (SQL true for a valid non-null value,
    over the placeholder ``{c}``; with a provisional reason) and, if some keyword is not translated, why."""

    duck: str
    checks: tuple[tuple[str, str], ...]
    slow: str | None = None
    fmt: str | None = None  # the JSON Schema ``format`` (``date-time``)


def _base(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property (``anyOf: [X, {"type": "null"}]``)."""
    return non_null(schema)[0]


def _free_form(s: dict[str, Any]) -> str:
    """``props``: an object of scalars (<= maxProperties keys of <= propertyNames.maxLength chars, strings
    <= maxLength). Conservative text checks on its JSON: any nested bracket, any string literal longer
    than the shorter length bound, more colons than maxProperties -> the contract decides."""
    if set(s) - _ANNOTATIONS - {"type", "additionalProperties", "maxProperties", "propertyNames"}:
        raise Untranslatable(f"object keywords {sorted(s)}")
    values = s.get("additionalProperties", {})
    lengths = [s.get("propertyNames", {}).get("maxLength")]
    for b in values.get("anyOf", [values]):
        if b.get("type") not in ("string", "integer", "number", "boolean", "null"):
            raise Untranslatable(f"props value {b!r}")
        if set(b) - _ANNOTATIONS - {"type", "maxLength"}:
            raise Untranslatable(f"props value {b!r}")
        if b.get("type") == "string":
            lengths.append(b.get("maxLength"))
    if None in lengths or "maxProperties" not in s:
        raise Untranslatable("props without bounds")
    longest = '"(\\\\.|[^"\\\\]){%d,}' % (min(lengths) + 1)  # a string literal over the bound
    return (
        "starts_with({c}, '{') AND NOT regexp_matches({c}, '^.+[\\[{]|" + longest + "') "
        "AND length({c}) - length(replace({c}, ':', '')) <= " + str(int(s["maxProperties"]))
    )


def timestamp_sql(c: str) -> str:
    """SQL: the TIMESTAMPTZ of an RFC 3339 string column ``c`` (NULL if it is none); lower-case ``t`` / ``z``
    (which the contract accepts and DuckDB's cast does not) are read upper-cased."""
    return f"coalesce(try_cast({c} AS TIMESTAMPTZ), try_cast(upper({c}) AS TIMESTAMPTZ))"


def _checks(t: str, s: dict[str, Any]) -> list[tuple[str, str]]:
    checks: list[tuple[str, str]] = []
    for k in sorted(set(s) - _ANNOTATIONS - {"type"}):
        v = s[k]
        if k == "pattern" and t == "string":
            checks.append((f"regexp_full_match({{c}}, {_lit(v)})", "'schema'"))
        elif k == "format" and v == "date-time" and t == "string":
            # a real instant (the pattern fixes the shape; DuckDB's cast, like fromisoformat, refuses
            # 2026-02-30 or 23:60; unlike it, the cast reads year 0000 as 1 BC)
            checks.append((f"NOT starts_with({{c}}, '0000') AND {timestamp_sql('{c}')} IS NOT NULL", "'schema'"))
        elif k == "minLength" and t == "string":
            checks.append((f"length({{c}}) >= {int(v)}", "'schema'"))
        elif k == "maxLength" and t == "string":
            checks.append((f"length({{c}}) <= {int(v)}", "'schema'"))
        elif k == "enum":
            checks.append((f"list_contains([{', '.join(_lit(x) for x in v)}], {{c}})", "'schema'"))
        elif k == "const":
            checks.append((f"{{c}} = {_lit(v)}", "'schema'"))
        elif k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") and t in ("number", "integer"):
            op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[k]
            checks.append((f"{{c}} {op} {_lit(v)}", "'impossible_value'"))
        else:
            raise Untranslatable(f"keyword {k}={v!r}")
    # the time check after the pattern (the cast is the dearer test)
    return sorted(checks, key=lambda x: "try_cast" in x[0])


def _prop(schema: dict[str, Any]) -> Prop:
    try:
        s = _base(schema)
    except Untranslatable as exc:
        return Prop("JSON", (), str(exc))
    t = s.get("type")
    if t == "array":
        item = s.get("items", {})
        duck = _DUCK.get(item.get("type"), "JSON") + "[]"
        # the elements' raw types and patterns are not checked in SQL
        return Prop(duck, (), "an array field")
    if t not in _DUCK:
        return Prop("JSON", (), f"type {t!r}")
    try:
        if t == "object":
            return Prop("JSON", ((_free_form(s), "'schema'"),))
        return Prop(_DUCK[t], tuple(_checks(t, s)), fmt=s.get("format"))
    except Untranslatable as exc:
        return Prop(_DUCK[t], (), str(exc), fmt=s.get("format"))


def _conditional(clause: dict[str, Any], props: dict[str, Prop]) -> str:
    """One ``allOf`` clause (parsed by ``contract_rules.conditional``) -> SQL that is true when it is violated."""
    c = conditional(clause, props)
    for f, jtype in c.need_types.items():
        # a type restriction only (the null branch removed): already what the field's own check says
        if _DUCK.get(jtype) != props[f].duck:
            raise Untranslatable(f"then {f}: {jtype!r}")
    tests = [f'j."{x}" = {_lit(v)}' for x, v in c.when.items()] + [f'j."{x}" IS NOT NULL' for x in c.when_present]
    need = [f'j."{f}" IS NULL' for f in c.needs]
    return "(" + " AND ".join(tests) + ") AND (" + " OR ".join(need) + ")"


@dataclass(frozen=True)
class TypeSQL:
    """What the fast path knows about one type."""

    props: dict[str, Prop]
    required: tuple[str, ...]
    conditionals: tuple[str, ...]
    slow: str | None  # why the type is always re-validated, or None


def _type_sql(t: str, schema: dict[str, Any]) -> TypeSQL:
    props = {name: _prop(sub) for name, sub in schema["properties"].items()}
    slow = next((f"{name}: {p.slow}" for name, p in props.items() if p.slow), None)
    conditionals = []
    if schema.get("additionalProperties") is not False:
        slow = slow or "additional properties allowed"
    for clause in schema.get("allOf", []):
        try:
            conditionals.append(_conditional(clause, props))
        except Untranslatable as exc:
            slow = slow or str(exc)
    known = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "allOf"}
    if set(schema) - known:
        slow = slow or f"model keywords {sorted(set(schema) - known)}"
    return TypeSQL(props, tuple(schema.get("required", ())), tuple(conditionals), slow)


def _derive() -> dict[str, TypeSQL]:
    return {t: _type_sql(t, schema) for t, schema in type_schemas().items()}


TYPES: dict[str, TypeSQL] = _derive()
SLOW_TYPES: tuple[str, ...] = tuple(t for t, ts in TYPES.items() if ts.slow)


def _fields() -> dict[str, str]:
    out: dict[str, str] = {}
    for t, ts in TYPES.items():
        for name, p in ts.props.items():
            if out.setdefault(name, p.duck) != p.duck:
                raise TypeError(f"field {name!r} has two JSON types in the contract ({out[name]}, {p.duck} in {t})")
    return {**out, **EXTRA_FIELDS}


FIELDS: dict[str, str] = _fields()
ALLOWED_KEYS: dict[str, list[str]] = {t: list(ts.props) + list(EXTRA_FIELDS) for t, ts in TYPES.items()}
REQUIRED: dict[str, tuple[str, ...]] = {t: ts.required for t, ts in TYPES.items()}
# fields that are null after a failed cast (the JSON value had another type): see clean's _TYPED check
TYPED_FIELDS = tuple(f for f, d in FIELDS.items() if d not in ("VARCHAR", "JSON"))
STR_FIELDS = tuple(f for f, d in FIELDS.items() if d == "VARCHAR" and f not in EXTRA_FIELDS)
NUM_FIELDS = tuple(f for f, d in FIELDS.items() if d in ("DOUBLE", "BIGINT"))
INT_FIELDS = tuple(f for f, d in FIELDS.items() if d == "BIGINT")


def types_with(field: str, among: tuple[str, ...] = ALL_TYPES) -> tuple[str, ...]:
    """The types (of ``among``) whose records may carry ``field``."""
    return tuple(t for t in among if field in TYPES[t].props)


def type_in(types: tuple[str, ...] | list[str]) -> str:
    """SQL: ``j.type`` is one of ``types`` (written as the shorter of the set and its complement)."""
    types = tuple(types)
    rest = tuple(t for t in ALL_TYPES if t not in types)
    if len(rest) < len(types):  # (a row whose type is not in the contract never gets this far)
        return "true" if not rest else f"j.type NOT IN ({', '.join(_lit(t) for t in rest)})"
    return f"j.type = {_lit(types[0])}" if len(types) == 1 else f"j.type IN ({', '.join(_lit(t) for t in types)})"


def required_conds() -> list[tuple[str, str]]:
    """One condition per field: required by some types and NULL (fields required by every type first)."""
    by_field: dict[str, list[str]] = {}
    for t in ALL_TYPES:
        for f in REQUIRED[t]:
            if f != "type":  # (the type itself: the first check of the fast path)
                by_field.setdefault(f, []).append(t)
    out = []
    for f, ts in sorted(by_field.items(), key=lambda kv: -len(kv[1])):
        where = type_in(ts)
        out.append((f'j."{f}" IS NULL' + ("" if where == "true" else f" AND {where}"), "'schema'"))
    return out


def value_conds() -> list[tuple[str, str]]:
    """One condition per field (per group of types sharing its checks): present and failing a check. A
    field checked alike in every type carrying it needs no type test (the allowed-keys check ran before)."""
    out = []
    for f in FIELDS:
        having = types_with(f)
        if f == "type" or not having:
            continue
        by_checks: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for t in having:
            if TYPES[t].props[f].checks:
                by_checks.setdefault(TYPES[t].props[f].checks, []).append(t)
        for checks, ts in by_checks.items():
            c = f'j."{f}"'
            cond = f"{c} IS NOT NULL AND NOT (" + " AND ".join(sql.replace("{c}", c) for sql, _ in checks) + ")"
            if len(ts) != len(having):
                cond = f"{type_in(ts)} AND {cond}"
            reason = "'impossible_value'" if any(r == "'impossible_value'" for _, r in checks) else "'schema'"
            out.append((cond, reason))
    for t, ts in TYPES.items():
        for v in ts.conditionals:
            out.append((f"j.type = {_lit(t)} AND {v}", "'schema'"))
    return out


def raw_type_re() -> str:
    """A raw JSON value whose type differs from the contract's, which the JSON reader would coerce
    silently (``"quantity": 1.5`` -> 2, ``"price": true`` -> 1.0, ``"schema_version": "1"`` -> 1,
    ``"user_id": 7`` -> '7', ``"stream_id": {}`` -> '{}'). Alternatives: a string field holding anything
    but a string; a number field anything but a number; an integer field a number written with a
    fraction or exponent (1.0 is accepted by the contract and read as 1; 1.5 is refused)."""
    return "|".join(
        [
            r'"(' + "|".join(STR_FIELDS) + r')"\s*:\s*[^"\s]',
            r'"(' + "|".join(NUM_FIELDS) + r')"\s*:\s*[^-0-9\s]',
            r'"(' + "|".join(INT_FIELDS) + r')"\s*:\s*-?[0-9]+[.eE]',
        ]
    )
