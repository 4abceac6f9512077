"""analytics: HTTP GET. KPIs as JSON under /api/... and the dashboard (HTML with inline SVG charts) at
/, /streams/<id>, /quality, /models, read from analytics/ in the store. Routing, caching and rendering
live in shared.dashboard.app (docs/dashboard.md); this adapter only translates the Flask request.
No request body is ever read; a query string over 4 KiB is refused (414) before it is parsed."""
import functions_framework
import orjson
from flask import Response as FlaskResponse

from shared import runtime
from shared.dashboard.app import App

_app = App(runtime.get_store)  # the store (and the data) load on the first request, not at import
MAX_QUERY_BYTES = 4096


@functions_framework.http
def analytics(request):
    if len(request.query_string) > MAX_QUERY_BYTES:
        return FlaskResponse(orjson.dumps({"error": "uri_too_long", "message": f"query over {MAX_QUERY_BYTES} bytes"}),
                             status=414, headers={"Content-Type": "application/json; charset=utf-8",
                                                  "Cache-Control": "no-store"})
    args = {k: v for k, v in request.args.items()}
    res = _app.handle(request.method, request.path, args, request.headers)
    return FlaskResponse(res.body if request.method != "HEAD" else b"", status=res.status, headers=res.headers)
