"""analytics: HTTP GET. KPIs as JSON under /api/... and the dashboard (HTML with inline SVG charts) at
/, /streams/<id>, /quality, /models, read from analytics/ in the store. Routing, caching and rendering
live in shared.dashboard.app (docs/dashboard.md); this adapter only translates the Flask request."""
import functions_framework
from flask import Response as FlaskResponse

from shared import runtime
from shared.dashboard.app import App

_app = App(runtime.get_store)  # the store (and the data) load on the first request, not at import


@functions_framework.http
def analytics(request):
    args = {k: v for k, v in request.args.items()}
    res = _app.handle(request.method, request.path, args, request.headers)
    return FlaskResponse(res.body if request.method != "HEAD" else b"", status=res.status, headers=res.headers)
