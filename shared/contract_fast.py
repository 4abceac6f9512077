"""The event contract as compiled Python checks, DERIVED at import time from ``shared.contract``'s JSON
Schema (through ``shared.contract_rules``, like the clean step's SQL in ``shared.pipeline.contract_sql``),
read from the copy shipped in the package (``contract_rules.SHIPPED_SCHEMA``, kept equal to the models by
tests/test_contract_fast.py): importing this module builds no pydantic model (ingest's cold start).

Ingest checks every event with ``check(obj)``; only an event it flags is validated by pydantic
(``shared.contract.validate_record``, the reference), so verdicts and reasons are the contract's by
construction: ``check`` may flag a valid event (then pydantic accepts it, a little slower) but must
never pass an invalid one. ``tests/test_contract_fast.py`` proves it with hypothesis-mutated records
of every type, and that the simulator's valid traffic passes the fast path (so it is a fast path).

How a type's schema becomes a check: each type gets one generated Python function (``exec`` of
source built from the schema, so the hot path is straight-line code with no per-keyword dispatch):

* keys: a subset of the model's ``properties`` (``additionalProperties: false``), every ``required``
  one present;
* each present value: its JSON type tested on the exact Python class orjson produces (``str``, ``int``,
  ``float``, ``bool``, ``None``, ``dict``, ``list``; ``bool`` is never a number), then the keywords
  ``pattern`` (re-anchored: a schema's ``$`` is the end of the text, Python's ``\\Z``), ``format:
  date-time`` (a real instant, ``datetime.fromisoformat``), ``minLength`` / ``maxLength``, ``enum``,
  ``const``, ``minimum`` / ``maximum`` (exclusive too; a NaN fails them), ``maxProperties``,
  ``propertyNames``, ``additionalProperties`` (a schema), ``items``, ``minItems`` / ``maxItems``,
  ``anyOf``; null where the property is optional (``non_null``);
* the model's ``allOf`` ``if``/``then`` clauses (``contract_rules.conditional``).

Deliberately stricter than the contract where that is cheaper or simpler: an ``integer`` must be an
``int`` (the contract also takes ``2.0``), a ``const`` must have the constant's own class (the contract
takes ``true`` for ``1``). A type with a keyword not listed above is SLOW: always validated by pydantic.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from shared.contract_rules import ANNOTATIONS, Untranslatable, conditional, non_null, shipped_type_schemas

_MISSING = object()


def _real_instant(value: str) -> bool:
    """``format: date-time`` beyond its pattern: a real date and time (no month 13, no 24:00)."""
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


_FORMATS = {"date-time": _real_instant}
_CLASSES = {
    "string": "str",
    "integer": "int",
    "number": "(int, float)",
    "boolean": "bool",
    "null": "type(None)",
    "object": "dict",
    "array": "list",
}
_STRING_KEYS = {"pattern", "format", "minLength", "maxLength"}
_NUMBER_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_OBJECT_KEYS = {"maxProperties", "minProperties", "propertyNames", "additionalProperties"}
_ARRAY_KEYS = {"items", "minItems", "maxItems"}


def _anchored(pattern: str) -> str:
    """A JSON Schema pattern (searched anywhere, ``$`` = end of text) as a Python pattern for ``search``
    with the same meaning: a final unescaped ``$`` becomes ``\\Z`` (Python's ``$`` also matches before a
    final newline)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    if "$" in pattern.replace("\\$", ""):
        raise Untranslatable(f"pattern {pattern!r}: '$' inside")
    return pattern


def _inner(pattern: str) -> str:
    """``^X$`` -> ``X`` when searching ``^X$`` is the same as fullmatching ``X``: no ``|`` outside
    parentheses or a class, no other anchor; else Untranslatable."""
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")):
        raise Untranslatable(f"pattern {pattern!r} not anchored at both ends")
    x = pattern[1:-1]
    depth, i, in_class = 0, 0, False
    while i < len(x):
        c = x[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if x[i + 1 : i + 2] == "]":  # a literal ] first in a class
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c in "^$" or (c == "|" and depth == 0):
            raise Untranslatable(f"pattern {pattern!r}: {c!r} at the top level")
        i += 1
    return x


def _joinable(sub: dict[str, Any]) -> bool:
    """A required string whose only value keywords are ``pattern`` (+ ``format``), of the ``^X$`` form."""
    if set(sub) - ANNOTATIONS - {"type", "pattern", "format"} or sub.get("type") != "string" or "pattern" not in sub:
        return False
    if sub.get("format", "date-time") not in _FORMATS:
        return False
    try:
        _inner(sub["pattern"])
    except Untranslatable:
        return False
    return True


class _Compiler:
    """Schema -> Python expression source over a variable; constants go into ``self.ns``."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_MISSING": _MISSING}
        self.helpers: list[str] = []
        self.patterns: dict[str, str] = {}
        self.objects: dict[str, str] = {}

    def const(self, value: Any, stem: str = "_k") -> str:
        for name, v in self.ns.items():
            if v is value or (type(v) is type(value) and not callable(v) and v == value):
                return name
        name = f"{stem}{len(self.ns)}"
        self.ns[name] = value
        return name

    def expr(self, s: dict[str, Any], v: str) -> str:
        """Source of a boolean expression: the value named ``v`` satisfies the schema ``s``."""
        keys = set(s) - ANNOTATIONS
        if "anyOf" in s:
            if keys - {"anyOf"}:
                raise Untranslatable(f"anyOf beside {sorted(keys)}")
            return "(" + " or ".join(self.expr(b, v) for b in s["anyOf"]) + ")"
        if not keys:
            return "True"
        t = s.get("type")
        if t not in _CLASSES:
            raise Untranslatable(f"type {t!r}")
        allowed = {"type", "enum", "const"} | {
            "string": _STRING_KEYS,
            "integer": _NUMBER_KEYS,
            "number": _NUMBER_KEYS,
            "object": _OBJECT_KEYS,
            "array": _ARRAY_KEYS,
        }.get(t, set())
        if keys - allowed:
            raise Untranslatable(f"keywords {sorted(keys - allowed)} on {t}")
        cls = _CLASSES[t]
        parts = [f"{v}.__class__ is {cls}" if not cls.startswith("(") else f"{v}.__class__ in {cls}"]
        if "const" in s:
            c = s["const"]
            parts.append(f"{v} == {self.const(c)}")
        if "enum" in s:
            parts.append(f"{v} in {self.const(frozenset(s['enum']))}")
        if "pattern" in s:
            parts.append(f"{self._pattern(s['pattern'])}({v}) is not None")
        if "minLength" in s:
            parts.append(f"len({v}) >= {int(s['minLength'])}")
        if "maxLength" in s:
            parts.append(f"len({v}) <= {int(s['maxLength'])}")
        for k, op in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">"), ("exclusiveMaximum", "<")):
            if k in s:
                parts.append(f"{v} {op} {self.const(s[k])}")
        if "format" in s:
            if s["format"] not in _FORMATS:
                raise Untranslatable(f"format {s['format']!r}")
            parts.append(f"{self.const(_FORMATS[s['format']], '_fmt')}({v})")
        if t == "object":
            parts.append(f"{self._object_helper(s)}({v})")
        if t == "array":
            if "minItems" in s:
                parts.append(f"len({v}) >= {int(s['minItems'])}")
            if "maxItems" in s:
                parts.append(f"len({v}) <= {int(s['maxItems'])}")
            if "items" in s:
                parts.append(f"all({self.expr(s['items'], '_x')} for _x in {v})")
        return "(" + " and ".join(parts) + ")"

    def _pattern(self, pattern: str) -> str:
        if pattern not in self.patterns:
            self.patterns[pattern] = self.const(re.compile(_anchored(pattern)).search, "_re")
        return self.patterns[pattern]

    def _object_helper(self, s: dict[str, Any]) -> str:
        key = repr(sorted(s.items()))
        if key in self.objects:
            return self.objects[key]
        name = self.objects[key] = f"_obj{len(self.objects)}"
        lines = [f"def {name}(o):"]
        if "maxProperties" in s:
            lines.append(f"    if len(o) > {int(s['maxProperties'])}: return False")
        if "minProperties" in s:
            lines.append(f"    if len(o) < {int(s['minProperties'])}: return False")
        names = s.get("propertyNames", {})
        values = s.get("additionalProperties", {})
        if values is False or values is True:
            raise Untranslatable("additionalProperties: boolean on a nested object")
        if names or values:
            lines.append("    for _n, _v in o.items():")
            lines.append(f"        if not {self.expr({'type': 'string', **names}, '_n')}: return False")
            lines.append(f"        if not {self.expr(values, '_v')}: return False")
        lines.append("    return True")
        self.helpers.append("\n".join(lines))
        return name

    def type_check(self, t: str, schema: dict[str, Any]) -> tuple[str, str]:
        """Source of ``def _check_<t>(o) -> bool`` for one model schema."""
        known = ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "allOf"}
        if set(schema) - known or schema.get("additionalProperties") is not False:
            raise Untranslatable(f"model keywords {sorted(set(schema) - known)}")
        props = schema["properties"]
        required = set(schema.get("required", ()))
        name = "_check_" + re.sub(r"\W", "_", t)
        lines = [f"def {name}(o):", f"    if not {self.const(frozenset(props))}.issuperset(o): return False"]
        lines.append("    g = o.get")
        # the required plain-pattern strings (ids, ts) are matched by ONE regex over their values joined
        # with NUL: exactly n-1 NULs in the joined text means no value holds one, so the joined
        # pattern matches if and only if every value matches its own (see _inner)
        joined = [f for f, sub in props.items() if f in required and _joinable(sub)]
        if len(joined) > 1:
            rx = "\x00".join(f"(?:{_inner(props[f]['pattern'])})" for f in joined)
            lines.append("    try:")
            lines.append(f"        j = '\\x00'.join(({', '.join(f'o[{f!r}]' for f in joined)},))")
            lines.append("    except (KeyError, TypeError):")
            lines.append("        return False")
            lines.append(
                f"    if j.count('\\x00') != {len(joined) - 1} or {self.const(re.compile(rx).fullmatch, '_re')}(j) is None:"
                " return False"
            )
        else:
            joined = []
        for f, sub in props.items():
            base, nullable = non_null(sub)
            if f == "type" and f in required and set(base) - ANNOTATIONS == {"type", "const"} and base["const"] == t:
                continue  # the discriminator: check() chose this function by it
            if f in joined:  # present, a string, its pattern matched: only a format may be left
                if "format" not in base:
                    continue
                lines.append(f"    if not {self.const(_FORMATS[base['format']], '_fmt')}(o[{f!r}]): return False")
                continue
            test = self.expr(base, "v")
            if nullable:
                test = f"(v is None or {test})"
            if f in required:
                lines.append(f"    v = g({f!r}, _MISSING)")
                lines.append(f"    if v is _MISSING or not {test}: return False")
            else:
                lines.append(f"    v = g({f!r}, _MISSING)")
                lines.append(f"    if v is not _MISSING and not {test}: return False")
        for clause in schema.get("allOf", []):
            c = conditional(clause, props)
            when = [f"g({x!r}, _MISSING) == {self.const(val)}" for x, val in c.when.items()]
            when += [f"{x!r} in o" for x in c.when_present]
            # a needed field's own check ran above; here it must only be present and not null
            need = " or ".join(f"g({f!r}) is None" for f in c.needs)
            lines.append(f"    if {' and '.join(when)} and ({need}): return False")
        lines.append("    return True")
        return name, "\n".join(lines)


def _compile() -> tuple[dict[str, Any], dict[str, str], str]:
    comp = _Compiler()
    funcs: dict[str, str] = {}
    slow: dict[str, str] = {}
    for t, schema in shipped_type_schemas().items():
        try:
            name, src = comp.type_check(t, schema)
        except Untranslatable as exc:
            slow[t] = str(exc)
            continue
        comp.helpers.append(src)
        funcs[t] = name
    source = "\n\n".join(comp.helpers) + "\n"
    ns = dict(comp.ns)
    exec(compile(source, "<shared.contract_fast>", "exec"), ns)  # (our own schema, never input)
    return {t: ns[name] for t, name in funcs.items()}, slow, source


CHECKS, SLOW_TYPES, SOURCE = _compile()
"""Per type: the compiled check; the types always validated by pydantic (and why); the generated source."""


def check(obj: Any) -> bool:
    """True when ``obj`` (a decoded JSON value) certainly satisfies the contract; False means "ask
    ``validate_record``" (it may still be valid). Never raises on a decoded JSON value."""
    if obj.__class__ is not dict:
        return False
    t = obj.get("type")
    if t.__class__ is not str:
        return False
    f = CHECKS.get(t)
    return f is not None and f(obj)


def validate(obj: Any) -> tuple[tuple[str, str, str] | None, list[str] | None]:
    """``validate_record`` with the fast path first: ``((type, stream_id, platform), None)`` for a valid
    record (``stream_id`` "" for a type without one), ``(None, reasons)`` with the contract's reasons."""
    if check(obj):
        return (obj["type"], obj.get("stream_id") or "", obj["platform"]), None
    from shared.contract import validate_record  # the reference, only for what check() flagged

    record, reasons = validate_record(obj)
    if record is None:
        return None, reasons
    return (record.type, getattr(record, "stream_id", "") or "", record.platform), None
