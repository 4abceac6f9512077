"""HTML pages: the queries' results + server-rendered SVG charts in Jinja2 templates (UTF-8); the overview's
charts come pre-rendered from the clean run when they match (shared/dashboard/prerender.py)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import pandas as pd

from shared.dashboard import charts, prerender, queries
from shared.settings import settings

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=False,
)


def fmt_pct(v) -> str:
    return "–" if v is None or isinstance(v, jinja2.Undefined) else f"{v * 100:.1f}%"


def fmt_num(v, digits: int = 0) -> str:
    if v is None or isinstance(v, jinja2.Undefined):
        return "–"
    return f"{v:,.{digits}f}"


def tz_name() -> str:
    """The zone the pages show times in (``DAIHUO_DASHBOARD_TZ``, default Asia/Shanghai)."""
    return settings().dashboard_tz


def local_time(value, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO 8601 instant (or Timestamp) -> wall-clock text in the dashboard's zone; '' for none."""
    if value is None or isinstance(value, jinja2.Undefined) or value == "":
        return ""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        return str(value)
    if pd.isna(ts):
        return ""
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
    return ts.tz_convert(ZoneInfo(tz_name())).strftime(fmt)


def tz_label() -> str:
    """``Asia/Shanghai (UTC+08:00)``: the zone and its offset now."""
    off = pd.Timestamp.now(tz=ZoneInfo(tz_name())).strftime("%z")
    return f"{tz_name()} (UTC{off[:3]}:{off[3:]})"


_env.globals.update(fmt_pct=fmt_pct, fmt_num=fmt_num, tz_label=tz_label)
_env.filters["local"] = local_time


def _render(template: str, snap, root: str, **ctx) -> str:
    return _env.get_template(template).render(root=root, version=snap.version, run_id=snap.run_id, tz=tz_name(), **ctx)


def to_local_axis(series: pd.DataFrame, col: str = "t") -> pd.DataFrame:
    """Shift a UTC time column so that the charts (Vega's utc scale) print the dashboard zone's wall clock."""
    out = series.copy()
    if len(out):
        t = pd.to_datetime(out[col], utc=True)
        out[col] = t.dt.tz_convert(ZoneInfo(tz_name())).dt.tz_localize(None).dt.tz_localize("UTC")
    return out


def overview_page(snap, args, root: str = "") -> str:
    data = queries.list_streams(snap, {**args, "limit": args.get("limit") or str(queries.MAX_LIMIT)})
    streams = data["streams"]
    ctx = {"title": "直播间排行 Streams", "nav": "overview", "streams": streams, "charts": {}, "charts_note": ""}
    if streams:
        # the default view's charts were rendered by the clean run (prerender.py): no chart engine on a cold
        # instance; a filtered view, or charts missing / drawn from other rows, are rendered now
        ctx["charts"], ctx["charts_note"] = prerender.overview_charts(snap, data, default_view=not args)
        ctx["totals"] = {
            "streams": len(streams),
            "gmv": sum(s["gmv"] or 0 for s in streams),
            "orders": sum(s["orders"] or 0 for s in streams),
            "viewers": sum(s["unique_viewers"] or 0 for s in streams),
        }
    return _render("overview.html", snap, root, **ctx)


def stream_page(snap, stream_id: str, args, root: str = "") -> str:
    kpis = queries.stream_kpis(snap, stream_id)["stream"]
    ts = queries.timeseries(snap, stream_id, {k: v for k, v in args.items() if k == "bucket"})
    series = pd.DataFrame(
        ts["points"],
        columns=queries.TIMESERIES_COLS,
    )
    series["t"] = pd.to_datetime(series["t"], utc=True)
    # Events stamped before the stream's start (a device clock hours behind; clean flags them late)
    # count in every total but are not drawn: they would stretch the time axis over empty hours.
    outside = pd.Series(False, index=series.index)
    if kpis.get("start") and kpis.get("end"):
        lo = pd.Timestamp(kpis["start"]).tz_convert("UTC").floor(f"{ts['bucket_s']}s")
        outside = (series["t"] < lo) | (series["t"] > pd.Timestamp(kpis["end"]).tz_convert("UTC"))
    activity = ["likes", "comments", "shares", "follows", "gifts", "impressions", "clicks", "add_to_carts", "orders"]
    undrawn = int(series.loc[outside, activity].sum().sum())
    series = to_local_axis(series[~outside])
    steps = queries.funnel(snap, stream_id)["steps"]
    top_gmv = queries.products(snap, stream_id, {"sort": "gmv", "limit": "20"})["products"]
    by_ctr = queries.products(snap, stream_id, {"sort": "ctr", "limit": str(queries.MAX_LIMIT)})["products"]
    top_ctr = [p for p in by_ctr if p["ctr"] is not None][:20]
    c = {
        "viewers": charts.render_svg(
            charts.viewers_chart(series), name="viewers", label="concurrent viewers over time"
        ),
        "funnel": charts.render_svg(charts.funnel_chart(steps), name="funnel", label="conversion funnel"),
        "gmv_orders": charts.render_svg(
            charts.gmv_orders_chart(series), name="gmv_orders", label="GMV and orders over time"
        ),
        "engagement": charts.render_svg(
            charts.engagement_chart(series, ts["bucket_s"]), name="engagement", label="engagement per minute"
        ),
        "products_gmv": charts.render_svg(
            charts.products_chart(top_gmv, "gmv"), name="products_gmv", label="top products by GMV"
        ),
        "products_ctr": charts.render_svg(
            charts.products_chart(top_ctr, "ctr"), name="products_ctr", label="top products by CTR"
        ),
    }
    from shared.dashboard import hosts

    extra = hosts.stream_extras(snap, stream_id)  # audience tiles, retention chart, slot sales
    return _render(
        "stream.html",
        snap,
        root,
        a=extra["audience"],
        slots=extra["slots"],
        retention_chart=extra["retention_chart"],
        has_host=bool(kpis.get("host_id")) and hosts.has_host(snap, kpis["host_id"]),
        title=f"直播间 {kpis.get('title') or stream_id}",
        nav="stream",
        s=kpis,
        charts=c,
        top_gmv=top_gmv,
        top_ctr=top_ctr,
        bucket_min=ts["bucket_s"] // 60,
        undrawn=undrawn,
    )


def quality_page(snap, root: str = "") -> str:
    """Rows refused per reason at ingest (quarantine/ingest/) beside clean's drops, then the clean runs."""
    q = queries.quality(snap)
    c = {}
    if any(r.get("dropped_by_reason") for r in q["runs"]):
        c["dropped"] = charts.render_svg(
            charts.quality_chart(q["runs"], q["reasons"]), name="dropped", label="rows dropped per reason per run"
        )
    if q["ingest"]["by_reason"] or q["clean_by_reason"]:
        c["rejects"] = charts.render_svg(
            charts.rejects_chart(q["ingest"]["by_reason"], q["clean_by_reason"]),
            name="rejects",
            label="rows refused per reason: ingest and clean",
        )
    return _render(
        "quality.html",
        snap,
        root,
        title="数据质量 Data quality",
        nav="quality",
        runs=q["runs"],
        reasons=q["reasons"],
        ingest=q["ingest"],
        clean_by_reason=q["clean_by_reason"],
        charts=c,
    )


def models_page(snap, root: str = "") -> str:
    """One chart per metric family (ranking scores, the gate's ratio to the best baseline, counts), then
    per version the promotion decision and the baselines it was compared against."""
    m = queries.models(snap)
    fam, c = m["families"], {}
    if m["models"]:
        if fam["ranking"]:
            c["ranking"] = charts.render_svg(
                charts.models_chart(m["models"], fam["ranking"], title="score (0-1)"),
                name="models-ranking",
                label="ranking metrics per model version",
            )
        if any(b.get("primary") and b.get("ratio") is not None for v in m["models"] for b in v["baselines"]):
            c["ratio"] = charts.render_svg(
                charts.ratio_chart(m["models"]), name="models-ratio", label="candidate / best baseline per version"
            )
        elif fam["ratio"]:
            c["ratio"] = charts.render_svg(
                charts.models_chart(m["models"], fam["ratio"], title="ratio"),
                name="models-ratio",
                label="ratios per model version",
            )
        if fam["count"]:
            c["count"] = charts.render_svg(
                charts.models_chart(m["models"], fam["count"], integer=True, title="count"),
                name="models-count",
                label="holdout sizes per model version",
            )
    return _render(
        "models.html",
        snap,
        root,
        title="模型 Models",
        nav="models",
        models=m["models"],
        metrics=m["metrics"],
        counts=m["counts"],
        families=fam,
        latest=m["latest"],
        charts=c,
    )


def live_index_page(snap, live: dict, root: str = "") -> str:
    return _render(
        "live_index.html",
        snap,
        root,
        title="直播中 Live now",
        nav="live",
        live=live,
        on_air=[s for s in live["streams"] if s["on_air"]],
        ended=[s for s in live["streams"] if not s["on_air"]][:50],
    )


def live_page(snap, stream_id: str, doc: dict, root: str = "") -> str:
    info = doc.get("info") or {}
    return _render(
        "live.html",
        snap,
        root,
        title=f"实时 {info.get('title') or stream_id}",
        nav="live",
        sid=stream_id,
        d=doc,
        info=info,
        tiles=doc.get("tiles") or {},
        poll_s=settings().dashboard_live_poll_s,
    )


def error_page(snap, status: int, title: str, message: str, root: str = "") -> str:
    return _render("error.html", snap, root, title=title, nav="", status=status, message=message)


def alerts_page(snap, doc: dict, rule: str | None, root: str = "") -> str:
    """/alerts: the recent alerts (``doc``: shared.dashboard.alerts.list_alerts)."""
    return _render(
        "alerts.html",
        snap,
        root,
        title="告警 Alerts",
        nav="alerts",
        rule=rule,
        alerts=doc["alerts"],
        rules=doc["rules"],
        days=doc["days"],
    )
