"""ingest: the webhook endpoint (HTTP). Authenticates, validates, publishes to `viewer-events`.

Run locally: ``functions-framework --source functions/ingest/main.py --target ingest --port 8081``
(with the repository root on PYTHONPATH; a deployed bundle carries ``shared/`` beside this file).

The pattern of every HTTP function: per-instance state in ``runtime.per_instance`` holders (built on
the first request), the logic answers a ``shared.http.Answer``, ``http.to_flask`` sends it.
"""

import flask
import functions_framework

from shared import http, runtime
from shared.ingest import IngestConfig, Ingestor, too_large

_ingestor = runtime.per_instance(lambda: Ingestor(runtime.get_bus(), runtime.get_store(), IngestConfig()))


@functions_framework.http
def ingest(request: flask.Request):
    ing = _ingestor.get()
    limit = ing.config.max_body_bytes
    if request.method == "POST" and (request.content_length or 0) > limit:
        answer = too_large(limit)
    else:
        body = request.stream.read(limit + 1) if request.method == "POST" else b""
        answer = ing.handle(request.method, request.headers, body, content_type=request.content_type or "")
    return http.to_flask(answer)
