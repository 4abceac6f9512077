"""analytics: HTTP GET. KPIs as JSON under /api/... and the dashboard (HTML with inline SVG charts) at
/, /streams/<id>, /quality, /models, read from analytics/ in the store. Routing, caching and rendering
live in shared.dashboard.app (docs/dashboard.md); this adapter only translates the Flask request,
checks the operator's identity (shared/dashboard/auth.py) and adds the security headers (CSP, nosniff,
Referrer-Policy, frame-ancestors) to every answer, refusals included.
No request body is ever read; a query string over 4 KiB is refused (414) before it is parsed."""

import functions_framework
import orjson
from flask import Response as FlaskResponse

from shared import runtime
from shared.dashboard.app import App
from shared.dashboard.auth import SECURITY_HEADERS, OperatorAuth

_app = App(runtime.get_store)  # the store (and the data) load on the first request, not at import
_auth = OperatorAuth()
MAX_QUERY_BYTES = 4096


def _answer(status: int, body: bytes, headers: dict, method: str) -> FlaskResponse:
    return FlaskResponse(body if method != "HEAD" else b"", status=status, headers={**headers, **SECURITY_HEADERS})


@functions_framework.http
def analytics(request):
    if len(request.query_string) > MAX_QUERY_BYTES:
        return _answer(
            414,
            orjson.dumps({"error": "uri_too_long", "message": f"query over {MAX_QUERY_BYTES} bytes"}),
            {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
            request.method,
        )
    args = {k: v for k, v in request.args.items()}
    path = "/" + request.path.strip("/") if request.path.strip("/") else "/"
    refused = _auth.check(path, args, request.headers, request.cookies)
    if refused is not None:
        return _answer(*refused, request.method)
    res = _app.handle(request.method, request.path, args, request.headers)
    return _answer(res.status, res.body, res.headers, request.method)
