"""The analytics function's router: (method, path, query, headers) -> ``shared.http.Answer``. No web framework here,
so it is tested in-process and served by any adapter (functions/analytics/main.py uses Flask's request).

Caching (the batch pages; the live routes are `no-store`): every answer for the same data version has the same ETag (the data version: a hash of the
clean manifest's generation, the models pointer's generation and the render version); with
``Cache-Control: private, max-age=300`` (operator data: never a shared cache) a browser reuses it for 5 minutes and then revalidates
with ``If-None-Match`` (-> 304, no body). The instance keeps the loaded tables and rendered pages in
memory and looks at the manifest's generation at most every ``DAIHUO_DASHBOARD_CHECK_S`` seconds.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from shared.dashboard import experiments, hosts, pages, queries
from shared.dashboard.data import DataSource
from shared.dashboard.live import LiveRoomUnknown, LiveView
from shared.http import HTML_UTF8, JSON_UTF8, Answer, error, json_answer
from shared.log import get_logger
from shared.settings import settings

log = get_logger("analytics")

_SID = r"([A-Za-z0-9._:@%-]{1,200})"
# (pattern, kind, allowed query parameters)
_LIST_PARAMS = {"sort", "order", "limit", "offset", "platform", "from", "to"}
ROUTES: list[tuple[re.Pattern, str, set[str]]] = [
    (re.compile(r"^/api/streams$"), "api_streams", _LIST_PARAMS),
    (re.compile(rf"^/api/streams/{_SID}$"), "api_stream", set()),
    (re.compile(rf"^/api/streams/{_SID}/timeseries$"), "api_timeseries", {"grain", "bucket"}),
    (re.compile(rf"^/api/streams/{_SID}/funnel$"), "api_funnel", set()),
    (re.compile(rf"^/api/streams/{_SID}/products$"), "api_products", {"sort", "limit", "offset"}),
    (re.compile(rf"^/api/streams/{_SID}/audience$"), "api_audience", set()),
    (re.compile(rf"^/api/streams/{_SID}/slots$"), "api_slots", {"sort", "limit", "offset"}),
    (re.compile(r"^/api/hosts$"), "api_hosts", {"sort", "order", "limit", "offset", "platform"}),
    (re.compile(rf"^/api/hosts/{_SID}$"), "api_host", set()),
    (re.compile(rf"^/api/hosts/{_SID}/cohorts$"), "api_host_cohorts", {"grain"}),
    (re.compile(r"^/api/quality$"), "api_quality", set()),
    (re.compile(r"^/api/models$"), "api_models", set()),
    (re.compile(r"^/api/experiments$"), "api_experiments", set()),
    (re.compile(r"^/$"), "page_overview", {"platform", "from", "to", "sort", "order"}),
    (re.compile(rf"^/streams/{_SID}$"), "page_stream", {"bucket"}),
    (re.compile(r"^/hosts$"), "page_hosts", set()),
    (re.compile(rf"^/hosts/{_SID}$"), "page_host", {"grain"}),
    (re.compile(r"^/quality$"), "page_quality", set()),
    (re.compile(r"^/models$"), "page_models", set()),
    (re.compile(r"^/experiments$"), "page_experiments", set()),
    (re.compile(r"^/api/live$"), "api_live_streams", set()),
    (re.compile(rf"^/api/live/{_SID}$"), "api_live_room", set()),
    (re.compile(r"^/live$"), "page_live_index", set()),
    (re.compile(rf"^/live/{_SID}$"), "page_live", set()),
    (re.compile(r"^/assets/live\.js$"), "asset_live_js", set()),
    (re.compile(r"^/api/alerts$"), "api_alerts", {"rule", "limit"}),
    (re.compile(r"^/alerts$"), "page_alerts", {"rule"}),
    (re.compile(r"^/healthz$"), "health", set()),
]
HOST_KINDS = {"api_host", "api_host_cohorts", "page_host"}  # the path id is a host id
LIVE_KINDS = {"api_live_streams", "api_live_room", "page_live_index", "page_live", "asset_live_js"}
ALERT_KINDS = {"api_alerts", "page_alerts"}  # read from alerts/ at each request (no-store)
STATIC = Path(__file__).parent / "static"
NO_STORE = {"Cache-Control": "no-store", "Vary": "Accept-Encoding, Authorization, Cookie"}


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Answer:
    return json_answer(status, obj, headers, content_type=JSON_UTF8, non_str_keys=True)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    tags = [t.strip() for t in header.split(",")]
    bare = etag.strip('"')
    return any(t.removeprefix("W/").strip('"') == bare for t in tags)


class App:
    def __init__(
        self,
        store_factory: Callable[[], Any],
        *,
        check_every_s: float | None = None,
        max_age_s: int | None = None,
        root: str | None = None,
        page_cache: int = 64,
        live_reader: Callable[[], Any] | None = None,
        live_cache_s: float = 1.0,
    ):
        self._store_factory = store_factory
        self.live = LiveView(live_reader or _default_live_reader, cache_s=live_cache_s)
        self._check_every_s = check_every_s
        self._source: DataSource | None = None
        self._lock = threading.Lock()
        env = settings()
        self.max_age_s = env.dashboard_max_age if max_age_s is None else max_age_s
        self.root = (env.dashboard_root if root is None else root).rstrip("/")
        self._pages: OrderedDict[tuple, bytes] = OrderedDict()
        self._page_cache = page_cache

    @property
    def source(self) -> DataSource:
        if self._source is None:
            with self._lock:
                if self._source is None:
                    self._source = DataSource(self._store_factory(), self._check_every_s)
        return self._source

    # ------------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, args: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> Answer:
        args = dict(args or {})
        headers = headers or {}
        path = "/" + (path or "/").strip("/") if (path or "/").strip("/") else "/"
        api = path.startswith("/api/") or path == "/api"
        if method not in ("GET", "HEAD"):
            return self._error(
                405,
                "method_not_allowed",
                f"{method} is not allowed; use GET",
                api,
                None,
                extra_headers={"Allow": "GET, HEAD"},
            )
        for pattern, kind, allowed in ROUTES:  # noqa: B007 (kept after the loop)
            m = pattern.match(path)
            if m:
                break
        else:
            return self._error(404, "not_found", f"no such resource: {path}", api, None)
        unknown = sorted(set(args) - allowed)
        if unknown:
            return self._error(
                400, "bad_parameter", f"unknown parameter {unknown[0]!r}", api, None, parameter=unknown[0]
            )
        if kind == "health":
            return _json(200, {"status": "ok"}, {"Cache-Control": "no-store"})
        sid = unquote(m.group(1)) if m.groups() else None
        if kind in LIVE_KINDS:
            return self._live(kind, sid, api)
        if kind in ALERT_KINDS:
            return self._alerts(kind, args, api)
        snap = self.source.snapshot()
        etag = f'"{snap.version}"'
        cache = {
            "Cache-Control": f"private, max-age={self.max_age_s}",
            "ETag": etag,
            "Vary": "Accept-Encoding, Authorization, Cookie",
        }
        if sid is not None and kind in HOST_KINDS:
            if not hosts.has_host(snap, sid):
                return self._error(404, "unknown_host", f"unknown host {sid!r}", api, snap, host_id=sid)
        elif sid is not None and not snap.has_stream(sid):
            return self._error(404, "unknown_stream", f"unknown stream {sid!r}", api, snap, stream_id=sid)
        if _etag_matches(headers.get("If-None-Match") or headers.get("if-none-match"), etag):
            return Answer(304, b"", cache)
        try:
            if api:
                return _json(200, self._api(kind, snap, sid, args), cache)
            key = (snap.version, path, tuple(sorted(args.items())))
            body = self._pages.get(key)
            if body is None:
                body = self._page(kind, snap, sid, args).encode("utf-8")
                with self._lock:
                    self._pages[key] = body
                    while len(self._pages) > self._page_cache:
                        self._pages.popitem(last=False)
            return Answer(200, body, {"Content-Type": HTML_UTF8, **cache})
        except queries.BadParameter as exc:
            return self._error(400, "bad_parameter", exc.message, api, snap, parameter=exc.parameter)
        except queries.UnknownStream as exc:
            return self._error(404, "unknown_stream", str(exc), api, snap, stream_id=exc.stream_id)
        except hosts.UnknownHost as exc:
            return self._error(404, "unknown_host", str(exc), api, snap, host_id=exc.host_id)

    def _live(self, kind: str, sid: str | None, api: bool) -> Answer:
        """The live routes: never cached (no-store), no ETag; read from Bigtable through ``self.live``."""
        if kind == "asset_live_js":
            body = (STATIC / "live.js").read_bytes()
            return Answer(
                200,
                body,
                {
                    "Content-Type": "text/javascript; charset=utf-8",
                    "Cache-Control": f"private, max-age={self.max_age_s}",
                },
            )
        snap = self.source.snapshot()  # catalog titles; cheap (cached, checked every few seconds)
        if kind == "api_live_streams":
            return _json(200, self.live.streams(), NO_STORE)
        if kind == "page_live_index":
            body = pages.live_index_page(snap, self.live.streams(), self.root)
            return Answer(200, body.encode("utf-8"), {"Content-Type": HTML_UTF8, **NO_STORE})
        assert sid is not None
        try:
            doc = self.live.room(sid, snap.catalog)
        except LiveRoomUnknown as exc:
            return self._error(404, "unknown_stream", str(exc), api, snap, stream_id=sid)
        if kind == "api_live_room":
            return _json(200, doc, NO_STORE)
        body = pages.live_page(snap, sid, doc, self.root)
        return Answer(200, body.encode("utf-8"), {"Content-Type": HTML_UTF8, **NO_STORE})

    def _alerts(self, kind: str, args: dict, api: bool) -> Answer:
        """The recent alerts (shared/dashboard/alerts.py): never cached, like the live routes."""
        from shared.dashboard import alerts as alert_view

        snap = self.source.snapshot()
        try:
            doc = alert_view.list_alerts(self.source.store, args)
        except queries.BadParameter as exc:
            return self._error(400, "bad_parameter", exc.message, api, snap, parameter=exc.parameter)
        if kind == "api_alerts":
            return _json(200, doc, NO_STORE)
        body = pages.alerts_page(snap, doc, args.get("rule"), self.root)
        return Answer(200, body.encode("utf-8"), {"Content-Type": HTML_UTF8, **NO_STORE})

    def _api(self, kind: str, snap, sid: str | None, args: dict) -> dict:
        if kind == "api_streams":
            return queries.list_streams(snap, args)
        if kind == "api_stream":
            return queries.stream_kpis(snap, sid)
        if kind == "api_timeseries":
            return queries.timeseries(snap, sid, args)
        if kind == "api_funnel":
            return queries.funnel(snap, sid)
        if kind == "api_products":
            return queries.products(snap, sid, args)
        if kind == "api_audience":
            return hosts.stream_audience(snap, sid)
        if kind == "api_slots":
            return hosts.stream_slots(snap, sid, args)
        if kind == "api_hosts":
            return hosts.list_hosts(snap, args)
        if kind == "api_host":
            return hosts.host_detail(snap, sid)
        if kind == "api_host_cohorts":
            return hosts.host_cohorts(snap, sid, args)
        if kind == "api_quality":
            return queries.quality(snap)
        if kind == "api_models":
            return queries.models(snap)
        if kind == "api_experiments":
            return experiments.list_experiments(snap)
        raise AssertionError(kind)

    def _page(self, kind: str, snap, sid: str | None, args: dict) -> str:
        if kind == "page_overview":
            return pages.overview_page(snap, args, self.root)
        if kind == "page_stream":
            return pages.stream_page(snap, sid, args, self.root)
        if kind == "page_hosts":
            return hosts.hosts_page(snap, args, self.root)
        if kind == "page_host":
            return hosts.host_page(snap, sid, args, self.root)
        if kind == "page_quality":
            return pages.quality_page(snap, self.root)
        if kind == "page_models":
            return pages.models_page(snap, self.root)
        if kind == "page_experiments":
            return experiments.experiments_page(snap, self.root)
        raise AssertionError(kind)

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        api: bool,
        snap,
        *,
        extra_headers: dict[str, str] | None = None,
        **fields,
    ) -> Answer:
        hdrs = {"Cache-Control": "no-store", **(extra_headers or {})}
        if api or snap is None and status == 405:
            return error(status, code, message=message, headers=hdrs, content_type=JSON_UTF8, **fields)
        from shared.dashboard.data import empty_snapshot

        title = {400: "Bad request", 404: "Not found", 405: "Method not allowed"}.get(status, "Error")
        html = pages.error_page(snap or empty_snapshot(""), status, title, message, self.root)
        return Answer(status, html.encode("utf-8"), {"Content-Type": HTML_UTF8, **hdrs})


LIVE_READ_TIMEOUT_S = 5.0  # a page poll may wait longer than recommend (DAIHUO_LIVE_READ_TIMEOUT_S, 1 s)


def _default_live_reader():
    """The dashboard's reader: a whole room (every minute row of the stream) can take over a second on
    a loaded Bigtable; the page polls again only after an answer, so a slow read delays, not piles up."""
    from shared.live.reader import LiveReader

    return LiveReader(timeout_s=LIVE_READ_TIMEOUT_S)
