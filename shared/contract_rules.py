"""The contract's rules as data: what every fast path reads, extracted ONCE from ``shared.contract``'s
published JSON Schema (``contract.json_schema()``, one ``$defs`` entry per model of ``MODEL_BY_TYPE``).

Two fast paths translate these rules, each into its own language, and both fall back to
``shared.contract.validate_record`` (the reference) for whatever they flag or cannot express:

* ``shared.pipeline.contract_sql``: SQL for clean's vectorised DuckDB check;
* ``shared.contract_fast``: compiled Python predicates for ingest's per-event hot path.

What is extracted here, and nowhere else:

* ``type_schemas()``: each event type's model schema (``properties``, ``required``,
  ``additionalProperties``, ``allOf``);
* ``non_null(schema)``: an optional property's non-null branch (pydantic writes ``X | None`` as
  ``anyOf: [X, {"type": "null"}]``) and whether null is allowed;
* ``conditional(clause)``: one ``allOf`` ``if``/``then`` clause (showcase_update's ``price`` when
  ``change`` is ``"price"``) as a ``Conditional``;
* ``ANNOTATIONS``: the keywords that do not affect validity; ``Untranslatable``: raised for a keyword
  or shape a fast path does not express (its type is then always checked by the contract).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the contract's JSON Schema as shipped inside the package (``python -m shared.contract`` writes it, as
#: ``schema/events.v1.json``; tests/test_contract_fast.py keeps both equal to ``contract.json_schema()``):
#: ingest's compiled checks read it, so a cold instance does not build the pydantic models to start
SHIPPED_SCHEMA = Path(__file__).with_name("contract.schema.json")

# JSON Schema keywords that only annotate (no effect on validity)
ANNOTATIONS = frozenset({"title", "description", "default", "examples"})


class Untranslatable(Exception):
    """A schema keyword the fast path does not express: the type's rows always go to the contract."""


def type_schemas() -> dict[str, dict[str, Any]]:
    """Event type -> its model's JSON Schema (the ``$defs`` entry), for every type of the contract."""
    from shared.contract import ALL_TYPES, MODEL_BY_TYPE, json_schema

    defs = json_schema()["$defs"]
    return {t: defs[MODEL_BY_TYPE[t].__name__] for t in ALL_TYPES}


def shipped_schema() -> dict[str, Any]:
    return json.loads(SHIPPED_SCHEMA.read_bytes())


def shipped_type_schemas(schema: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``type_schemas()`` read from ``SHIPPED_SCHEMA`` (its discriminator maps each type to its
    ``$defs`` entry), without importing pydantic or the contract's models."""
    schema = schema or shipped_schema()
    defs = schema["$defs"]
    return {t: defs[ref.rsplit("/", 1)[-1]] for t, ref in schema["discriminator"]["mapping"].items()}


def shipped_schema_version(schema: dict[str, Any] | None = None) -> int:
    """``contract.SCHEMA_VERSION``, the ``const`` of every model's ``schema_version``."""
    schema = schema or shipped_schema()
    (version,) = {d["properties"]["schema_version"]["const"] for d in schema["$defs"].values()}
    return version


def non_null(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the non-null branch, null allowed?) of a property: ``anyOf: [X, {"type": "null"}]`` -> (X, True);
    any other ``anyOf`` is Untranslatable; a schema without ``anyOf`` -> (itself, False)."""
    if "anyOf" in schema:
        rest = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k != "anyOf"}
        branches = [b for b in schema["anyOf"] if b != {"type": "null"}]
        if rest or len(branches) != 1 or len(schema["anyOf"]) != 2:
            raise Untranslatable(f"union {schema['anyOf']!r}")
        return branches[0], True
    return schema, False


@dataclass(frozen=True)
class Conditional:
    """``{"if": {"properties": {X: {"const": V}}, "required": [X]}, "then": {"required": [F, ...],
    "properties": {F: {"type": T}}}}``: when every ``when`` field equals its constant (and every
    ``when_present`` field is present), every ``needs`` field must be present and not null."""

    when: dict[str, Any]
    when_present: tuple[str, ...]
    needs: tuple[str, ...]
    need_types: dict[str, str]  # a type restriction of a needed field (its non-null branch's type)


def conditional(clause: dict[str, Any], props: dict[str, Any]) -> Conditional:
    """Parse one ``allOf`` clause of a model whose properties are ``props``; Untranslatable otherwise."""
    cond, then = clause.get("if", {}), clause.get("then", {})
    if (
        set(clause) != {"if", "then"}
        or set(cond) - {"properties", "required"}
        or set(then) - {"properties", "required"}
    ):
        raise Untranslatable(f"allOf clause {clause!r}")
    when = {}
    for x, sub in cond.get("properties", {}).items():
        if set(sub) != {"const"} or x not in props:
            raise Untranslatable(f"if {x}: {sub!r}")
        when[x] = sub["const"]
    needs = []
    for f in then.get("required", []):
        if f not in props:
            raise Untranslatable(f"then requires {f}")
        needs.append(f)
    need_types = {}
    for f, sub in then.get("properties", {}).items():
        if set(sub) != {"type"} or f not in props:
            raise Untranslatable(f"then {f}: {sub!r}")
        need_types[f] = sub["type"]
        needs.append(f)  # a type restriction (the null branch removed): null is refused
    present = tuple(cond.get("required", []))
    if not (when or present) or not needs:
        raise Untranslatable(f"allOf clause {clause!r}")
    return Conditional(when, present, tuple(dict.fromkeys(needs)), need_types)
