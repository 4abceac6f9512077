"""One HTTP answer for every function, and the one adapter that sends it.

The logic modules (``shared/ingest.py``, ``shared/serving/recommend.py``, ``shared/dashboard/``) return
an ``Answer`` and never see a web framework, so they are tested in-process; every HTTP function
(``functions/*/main.py``) ends with ``http.to_flask(answer)``, the only place a Flask response is built.

``Answer(status, body, headers)``:

* ``body`` is either ``bytes`` (sent as they are: HTML, a pre-serialised document, ``b""``) or any other
  value, which is a JSON document serialised with orjson when it is sent (``payload``); ``json``
  gives the document back in both cases (tests read it).
* ``headers`` holds every header of the answer, ``Content-Type`` included (the helpers set it). An
  answer without one (a 303, a 304) gets Flask's default ``text/html; charset=utf-8``.

Helpers: ``json_answer`` (a JSON document), ``error`` (``{"error": <reason>, **fields}``, with
``Retry-After`` when ``retry_after`` is given). A new function (e.g. ``functions/live/main.py``) follows
the same pattern: the logic answers an ``Answer``, main.py translates the request and calls
``to_flask`` (docs/deploy.md, "Writing a function").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

JSON = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
HTML_UTF8 = "text/html; charset=utf-8"


@dataclass(slots=True)
class Answer:
    status: int
    body: Any = b""  # bytes: sent as they are; any other value: a JSON document
    headers: Mapping[str, str] = field(default_factory=dict)  # every header, Content-Type included

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def payload(self) -> bytes:
        """The body as it goes on the wire."""
        if isinstance(self.body, (bytes, bytearray, memoryview)):
            return bytes(self.body)
        return orjson.dumps(self.body)

    @property
    def json(self) -> Any:
        """The JSON document of the body (parsed back when the body is bytes)."""
        if isinstance(self.body, (bytes, bytearray, memoryview)):
            return orjson.loads(self.body)
        return self.body

    def with_headers(self, extra: Mapping[str, str]) -> Answer:
        """The same answer with ``extra`` headers added (they win over existing ones)."""
        return replace(self, headers={**self.headers, **extra})

    def without_body(self) -> Answer:
        """The same status and headers, no body (the answer to a HEAD request)."""
        return replace(self, body=b"")


def json_answer(
    status: int,
    value: Any,
    headers: Mapping[str, str] | None = None,
    *,
    content_type: str = JSON,
    non_str_keys: bool = False,
) -> Answer:
    """A JSON document. ``non_str_keys``: the document has int/date keys (serialised at once, with
    orjson's OPT_NON_STR_KEYS, which is slower, hence not the default)."""
    body = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS) if non_str_keys else value
    return Answer(status, body, {"Content-Type": content_type, **(headers or {})})


def error(
    status: int,
    reason: str,
    *,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON,
    **fields: Any,
) -> Answer:
    """``{"error": reason, **fields}``; ``retry_after`` (seconds) adds ``Retry-After``."""
    hdrs = {**(headers or {})}
    if retry_after is not None:
        hdrs["Retry-After"] = str(retry_after)
    return json_answer(status, {"error": reason, **fields}, hdrs, content_type=content_type)


def to_flask(answer: Answer):
    """The Flask (functions-framework) response for ``answer``: same status, headers and bytes."""
    from flask import Response  # here, not at import: the logic modules stay framework-free

    return Response(answer.payload, status=answer.status, headers=answer.headers)
