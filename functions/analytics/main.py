"""analytics: HTTP GET. KPIs as JSON under /api/... and the dashboard (HTML with inline SVG charts) at
/, /streams/<id>, /quality, /models, read from analytics/ in the store, and the live pages /live, /live/<id>
(+ /api/live..., read from the live layer in Bigtable). Routing, caching and rendering
live in shared.dashboard.app (docs/dashboard.md); this adapter only translates the Flask request,
checks the operator's identity (shared/dashboard/auth.py) and adds the security headers (CSP, nosniff,
Referrer-Policy, frame-ancestors) to every answer, refusals included.
No request body is ever read; a query string over 4 KiB is refused (414) before it is parsed."""

import functions_framework

from shared import http, runtime
from shared.dashboard.app import App
from shared.dashboard.auth import SECURITY_HEADERS, OperatorAuth

_app = runtime.per_instance(lambda: App(runtime.get_store))  # the data load on the first request
_auth = runtime.per_instance(OperatorAuth)
MAX_QUERY_BYTES = 4096


def _send(answer: http.Answer, method: str):
    answer = answer.with_headers(SECURITY_HEADERS)
    return http.to_flask(answer.without_body() if method == "HEAD" else answer)


@functions_framework.http
def analytics(request):
    if len(request.query_string) > MAX_QUERY_BYTES:
        too_long = http.error(
            414,
            "uri_too_long",
            message=f"query over {MAX_QUERY_BYTES} bytes",
            headers={"Cache-Control": "no-store"},
            content_type=http.JSON_UTF8,
        )
        return _send(too_long, request.method)
    args = {k: v for k, v in request.args.items()}
    path = "/" + request.path.strip("/") if request.path.strip("/") else "/"
    refused = _auth.get().check(path, args, request.headers, request.cookies)
    if refused is not None:
        return _send(refused, request.method)
    return _send(_app.get().handle(request.method, request.path, args, request.headers), request.method)
