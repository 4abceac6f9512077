"""ingest: the webhook endpoint (HTTP). Authenticates, validates, publishes to `viewer-events`.

Run locally: ``functions-framework --source functions/ingest/main.py --target ingest --port 8081``
(with the repository root on PYTHONPATH; a deployed bundle carries ``shared/`` beside this file).
"""

import flask
import functions_framework

from shared import runtime
from shared.ingest import Answer, IngestConfig, Ingestor

_ingestor = None


def _get() -> Ingestor:
    global _ingestor
    if _ingestor is None:
        _ingestor = Ingestor(runtime.get_bus(), runtime.get_store(), IngestConfig())
    return _ingestor


@functions_framework.http
def ingest(request: flask.Request):
    ing = _get()
    limit = ing.config.max_body_bytes
    if request.method == "POST" and (request.content_length or 0) > limit:
        answer = Answer(413, {"error": f"body over {limit} bytes"})
    else:
        body = request.stream.read(limit + 1) if request.method == "POST" else b""
        answer = ing.handle(request.method, request.headers, body, content_type=request.content_type or "")
    return flask.Response(answer.json(), status=answer.status, headers=answer.headers, mimetype="application/json")
