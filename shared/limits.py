"""Bounds checked on raw bytes BEFORE a JSON parser sees them (every HTTP function uses these).

``too_deep(data, max_depth)`` tells whether a JSON text nests objects/arrays deeper than
``max_depth`` without parsing it: every byte but the brackets and quotes is deleted (``bytes.translate``;
with backslash escapes present, string literals are first removed by a C-level regex over the
text), the string literals left are removed, and innermost ``{}`` / ``[]`` pairs are removed
one level per pass (at most ``max_depth + 1`` passes over a string of brackets only). A body with
fewer brackets than the limit is answered by two ``count`` calls. Malformed bracket sequences are
not called "too deep" (the parser refuses them with its own message).

``split_array(data)`` cuts a top-level JSON array into the byte ranges of its elements (strings and
nesting respected, nothing decoded) so that one bad element -- too deep, invalid UTF-8, a number out
of range -- can be refused alone while its neighbours are parsed. It runs only when the fast path
(one ``orjson.loads`` of the whole body) refused the body or the body was too deep, so its Python
loop over brackets costs nothing on well-formed traffic.

Defaults: ``DAIHUO_MAX_JSON_DEPTH`` = 16 levels per event (a valid event needs 2: the object and
``props`` / ``stream_ids``), so orjson's own limits (1024 to parse, 255 to serialise) are never reached.
"""

from __future__ import annotations

import re

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_KEEP = b"[]{}"
_DELETE = bytes(b for b in range(256) if b not in _KEEP)
_DELETE_BUT_QUOTES = bytes(b for b in range(256) if b not in _KEEP + b'"')
_PLAIN_STRING = re.compile(rb'"[^"]*"')
_PAIR = re.compile(rb"\{\}|\[\]")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)


def max_depth_default() -> int:
    from shared.settings import settings

    return settings().max_json_depth


def too_deep(data: bytes, max_depth: int) -> bool:
    """True if the JSON text nests more than ``max_depth`` objects/arrays (checked without parsing)."""
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return False
    if b"\\" in data:  # escapes: strings must be recognised in the full text
        s = _STRING.sub(b"", data).translate(None, _DELETE)
    else:  # no escapes: a string is exactly "[^"]*", recognisable after deleting everything else
        # (quotes alternate open/close: dropping adjacent ones only merges strings that had no
        # bracket between them, or drops a string without brackets)
        s = _PLAIN_STRING.sub(b"", data.translate(None, _DELETE_BUT_QUOTES).replace(b'""', b""))
    for _ in range(max_depth):
        nxt = _PAIR.sub(b"", s)
        if not nxt or nxt == s:  # balanced within the limit, or malformed: the parser decides
            return False
        s = nxt
    return _PAIR.search(s) is not None  # a pair is still nested below max_depth levels


class NotAnArray(ValueError):
    pass


def split_array(data: bytes) -> list[bytes]:
    """The elements of a top-level JSON array as byte slices (stripped). Raises NotAnArray when the
    text is not an array whose brackets and strings are balanced."""
    start = data.find(b"[")
    if start < 0 or data[:start].strip():
        raise NotAnArray("not a JSON array")
    depth, elem_start, out = 0, start + 1, []
    end = None
    for m in _TOKEN.finditer(data, start):
        tok = m.group()
        c = tok[:1]
        if c == b'"':
            continue
        if c in b"[{":
            depth += 1
        elif c in b"]}":
            depth -= 1
            if depth == 0:
                end = m.start()
                break
            if depth < 0:
                raise NotAnArray("unbalanced brackets")
        elif depth == 1:  # a comma between two elements
            out.append(data[elem_start : m.start()].strip())
            elem_start = m.end()
    if end is None:
        raise NotAnArray("the array is not closed")
    if data[end + 1 :].strip():
        raise NotAnArray("data after the array")
    last = data[elem_start:end].strip()
    if last or out:
        out.append(last)
    return out


class BodyRefused(ValueError):
    """A request body refused before parsing: ``status`` 413 (too large) or 400 (too deep / not JSON)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_json_body(content_length: int | None, stream, max_bytes: int, max_depth: int):
    """Read at most ``max_bytes`` + 1 bytes of a request body and decode it as JSON, refusing a body
    that is too large (by its Content-Length, or by what arrives) or too deeply nested before any
    parser runs. Returns the decoded value; raises BodyRefused."""
    import orjson

    if content_length is not None and content_length > max_bytes:
        raise BodyRefused(413, f"body over {max_bytes} bytes")
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BodyRefused(413, f"body over {max_bytes} bytes")
    if too_deep(data, max_depth):
        raise BodyRefused(400, f"body nested deeper than {max_depth} levels")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyRefused(400, f"body is not valid JSON: {exc}") from None
