"""Chart specs (Vega-Lite, built with altair) and their server-side rendering to inline SVG.

Why server-side SVG: the page needs no JavaScript, no CDN and no build step; ``vl-convert-python``
bundles the Vega/Vega-Lite engine (Deno + V8 inside the wheel), works offline, and its SVG keeps the
chart's text as ``<text>`` elements, so the browser draws Chinese product names with its own CJK font
(and they stay selectable and searchable). The SVG carries a ``viewBox``: CSS scales it to the screen
width, which makes every chart readable on a phone. Each spec function is pure (data in, dict out),
so tests can check the specs without rendering them.
"""

from __future__ import annotations

import glob
import os
import re
import threading

import pandas as pd


class _Lazy:
    """``altair`` imported on first use (~0.5 s of CPU, jsonschema and narwhals with it): the JSON API and
    a page served from the page cache never pay it."""

    def __getattr__(self, name: str):
        import altair

        return getattr(altair, name)


alt = _Lazy()

FONT = "Noto Sans CJK SC, Source Han Sans SC, WenQuanYi Zen Hei, PingFang SC, Microsoft YaHei, sans-serif"
WIDTH = 620
PALETTE = ["#e4393c", "#ff8a00", "#2f7ed8", "#13a10e", "#8e44ad", "#7f8c8d"]
_fonts_lock = threading.Lock()
_fonts_done = False


def _config(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    return (
        chart.configure(font=FONT, background="white")
        .configure_axis(labelFontSize=11, titleFontSize=11, labelColor="#333", titleColor="#333")
        .configure_view(stroke=None)
        .configure_range(category=PALETTE)
        .configure_legend(orient="bottom", labelFontSize=11, titleFontSize=11)
    )


_ZONE = object()


def _time_x(title=_ZONE) -> alt.X:
    """The time axis. The series' times are already shifted to the dashboard's zone (pages.to_local_axis):
    the utc scale then prints that zone's wall clock."""
    if title is _ZONE:
        from shared.settings import settings

        title = f"time ({settings().dashboard_tz})"
    return alt.X("t:T", title=title, scale=alt.Scale(type="utc"), axis=alt.Axis(format="%H:%M", labelAngle=0))


def viewers_chart(series: pd.DataFrame) -> dict:
    """Concurrent viewers (average per bucket) over time."""
    df = series[["t", "avg_concurrent"]].copy()
    base = alt.Chart(df).encode(_time_x(), alt.Y("avg_concurrent:Q", title="concurrent viewers 在线人数"))
    chart = base.mark_area(color=PALETTE[2], opacity=0.25, interpolate="step-after") + base.mark_line(
        color=PALETTE[2], interpolate="step-after"
    )
    return _config(chart.properties(width=WIDTH, height=180)).to_dict()


def funnel_chart(steps: list[dict]) -> dict:
    df = pd.DataFrame(steps)
    df["pct"] = [
        (
            "100%"
            if s.get("rate_from_first") in (None, 1.0) and i == 0
            else (f"{s['rate_from_first'] * 100:.1f}%" if s.get("rate_from_first") is not None else "–")
        )
        for i, s in enumerate(steps)
    ]
    df["text"] = df["count"].map(lambda n: f"{n:,}") + "  (" + df["pct"] + ")"
    y = alt.Y("label:N", sort=None, title=None)
    bars = alt.Chart(df).mark_bar(color=PALETTE[0]).encode(y, alt.X("count:Q", title="events 次数"))
    text = alt.Chart(df).mark_text(align="left", dx=4, fontSize=11).encode(y, alt.X("count:Q"), alt.Text("text:N"))
    return _config((bars + text).properties(width=WIDTH - 140, height=4 * 30)).to_dict()


def gmv_orders_chart(series: pd.DataFrame) -> dict:
    df = series[["t", "gmv", "orders"]].copy()
    gmv = alt.Chart(df).mark_bar(color=PALETTE[0]).encode(_time_x(title=None), alt.Y("gmv:Q", title="GMV (CNY)"))
    orders = alt.Chart(df).mark_bar(color=PALETTE[1]).encode(_time_x(), alt.Y("orders:Q", title="orders 订单"))
    return _config(
        alt.vconcat(gmv.properties(width=WIDTH, height=130), orders.properties(width=WIDTH, height=90), spacing=6)
    ).to_dict()


def engagement_chart(series: pd.DataFrame, bucket_s: int) -> dict:
    """Likes, comments, shares, gifts per minute (each bucket's count / its minutes)."""
    per = max(bucket_s / 60.0, 1e-9)
    long = []
    for col, label in (
        ("likes", "likes 点赞"),
        ("comments", "comments 评论"),
        ("shares", "shares 分享"),
        ("gifts", "gifts 礼物"),
    ):
        long.append(pd.DataFrame({"t": series["t"], "metric": label, "per_min": series[col].astype(float) / per}))
    df = pd.concat(long, ignore_index=True) if long else pd.DataFrame(columns=["t", "metric", "per_min"])
    chart = (
        alt.Chart(df)
        .mark_line(interpolate="monotone", strokeWidth=1.5)
        .encode(_time_x(), alt.Y("per_min:Q", title="per minute 每分钟"), alt.Color("metric:N", title=None, sort=None))
    )
    return _config(chart.properties(width=WIDTH, height=180)).to_dict()


def _label(df: pd.DataFrame) -> pd.Series:
    title = df["title"].fillna(df["item_id"]).astype(str)
    short = title.map(lambda s: s if len(s) <= 14 else s[:13] + "…")
    return short + " · " + df["item_id"].astype(str).str.replace(r"^\D*0*", "", regex=True)


def products_chart(products: list[dict], field: str) -> dict:
    """Horizontal bars, one per product, in the given order (top first)."""
    df = pd.DataFrame(products, columns=["item_id", "title", field])
    df["label"] = _label(df) if len(df) else pd.Series(dtype=str)
    df[field] = df[field].astype(float)
    fmt = ".1%" if field in ("ctr", "conversion_rate") else ",.0f"
    title = {"gmv": "GMV (CNY)", "ctr": "CTR 点击率"}.get(field, field)
    y = alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=220))
    bars = (
        alt.Chart(df)
        .mark_bar(color=PALETTE[0] if field == "gmv" else PALETTE[2])
        .encode(y, alt.X(f"{field}:Q", title=title, axis=alt.Axis(format=fmt)))
    )
    text = (
        alt.Chart(df)
        .mark_text(align="left", dx=3, fontSize=10)
        .encode(y, alt.X(f"{field}:Q"), alt.Text(f"{field}:Q", format=fmt))
    )
    return _config((bars + text).properties(width=WIDTH - 260, height=max(1, len(df)) * 20)).to_dict()


def ranking_chart(streams: list[dict], field: str) -> dict:
    df = pd.DataFrame(streams, columns=["stream_id", "platform", field])
    df[field] = df[field].astype(float)
    title = {"gmv": "GMV (CNY)", "gpm": "GPM (GMV per 1000 viewers)"}[field]
    y = alt.Y("stream_id:N", sort=None, title=None)
    bars = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y,
            alt.X(f"{field}:Q", title=title, axis=alt.Axis(format=",.0f")),
            alt.Color("platform:N", title="platform 平台"),
        )
    )
    text = (
        alt.Chart(df)
        .mark_text(align="left", dx=3, fontSize=10)
        .encode(y, alt.X(f"{field}:Q"), alt.Text(f"{field}:Q", format=",.0f"))
    )
    return _config((bars + text).properties(width=WIDTH - 150, height=max(1, len(df)) * 22)).to_dict()


def quality_chart(runs: list[dict], reasons: list[str]) -> dict:
    """Rows dropped per reason per clean run (stacked bars, one bar per run)."""
    rows = [
        {"run": r["run_id"][:10], "order": i, "reason": k, "rows": v}
        for i, r in enumerate(runs)
        for k, v in (r.get("dropped_by_reason") or {}).items()
    ]
    df = pd.DataFrame(rows, columns=["run", "order", "reason", "rows"])
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            alt.Y("run:N", sort=alt.EncodingSortField("order"), title="clean run"),
            alt.X("sum(rows):Q", title="rows dropped 丢弃行数"),
            alt.Color("reason:N", title="reason 原因", sort=reasons),
        )
    )
    return _config(chart.properties(width=WIDTH - 120, height=max(1, len(runs)) * 26)).to_dict()


def rejects_chart(ingest: dict[str, int], clean: dict[str, int]) -> dict:
    """Rows refused per reason at each stage: ingest (the contract, at the webhook: the field a reason
    names) beside clean (its quarantine reasons), one row per (stage, reason)."""
    rows = [{"stage": "ingest 接入", "reason": k, "rows": int(v)} for k, v in ingest.items()]
    rows += [{"stage": "clean 清洗", "reason": k, "rows": int(v)} for k, v in clean.items()]
    df = pd.DataFrame(rows, columns=["stage", "reason", "rows"])
    chart = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            alt.Y("reason:N", title=None, sort=alt.EncodingSortField("rows", order="descending")),
            alt.X("rows:Q", title="rows refused 拒收行数", axis=alt.Axis(format="d", tickMinStep=1)),
            alt.Color("stage:N", title="stage 环节", sort=["ingest 接入", "clean 清洗"]),
            alt.Row("stage:N", title=None, sort=["ingest 接入", "clean 清洗"], header=alt.Header(labelAngle=0)),
            tooltip=["stage:N", "reason:N", alt.Tooltip("rows:Q", format="d")],
        )
        .resolve_scale(y="independent")
    )
    return _config(chart.properties(width=WIDTH - 200, height=alt.Step(18))).to_dict()


def models_chart(models: list[dict], metrics: list[str], *, integer: bool = False, title: str = "value") -> dict:
    """One metric family per model version (grouped bars: a row per metric, a bar per version), on
    its own axis; ``integer`` (counts such as holdout sizes): whole-number ticks and labels."""
    rows = [
        {"version": m["version"], "order": i, "metric": k, "value": float(v)}
        for i, m in enumerate(models)
        for k, v in (m.get("metrics") or {}).items()
        if k in metrics and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    df = pd.DataFrame(rows, columns=["version", "order", "metric", "value"])
    axis = alt.Axis(format="d", tickMinStep=1) if integer else alt.Axis(format=".2f")
    bars = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            alt.Y("metric:N", title=None, sort=metrics),
            alt.YOffset("version:N", sort=alt.EncodingSortField("order")),
            alt.X("value:Q", title=title, axis=axis),
            alt.Color("version:N", title="model version", sort=alt.EncodingSortField("order")),
            tooltip=["version:N", "metric:N", alt.Tooltip("value:Q", format="d" if integer else ".4f")],
        )
    )
    return _config(
        bars.properties(width=WIDTH - 120, height=max(1, len(metrics)) * max(1, len(models)) * 14 + 10)
    ).to_dict()


def ratio_chart(models: list[dict]) -> dict:
    """The gate's primary ratio per version: candidate / best baseline with its 95 % interval (a rule
    at 1 = as good as the best baseline), coloured by the promotion decision."""
    rows = []
    for i, m in enumerate(models):
        prim = next((b for b in m.get("baselines") or [] if b.get("primary")), None)
        if prim is None or prim.get("ratio") is None:
            continue
        rows.append(
            {
                "version": m["version"],
                "order": i,
                "ratio": float(prim["ratio"]),
                "lo": float(prim["ratio_lo"] if prim.get("ratio_lo") is not None else prim["ratio"]),
                "hi": float(prim["ratio_hi"] if prim.get("ratio_hi") is not None else prim["ratio"]),
                "status": m.get("status") or "unknown",
                "vs": f"{prim.get('metric')} vs {prim.get('best_baseline')}",
            }
        )
    df = pd.DataFrame(rows, columns=["version", "order", "ratio", "lo", "hi", "status", "vs"])
    y = alt.Y("version:N", sort=alt.EncodingSortField("order"), title=None)
    base = alt.Chart(df)
    ci = base.mark_rule(color="#555").encode(y, alt.X("lo:Q"), alt.X2("hi:Q"))
    pts = base.mark_point(filled=True, size=70).encode(
        y,
        alt.X(
            "ratio:Q",
            title="candidate / best baseline (primary block, 95 % interval)",
            axis=alt.Axis(format=".2f"),
            scale=alt.Scale(zero=False),
        ),
        alt.Color(
            "status:N",
            title="decision 决定",
            scale=alt.Scale(
                domain=["serving", "replaced", "not promoted", "rejected", "unknown"],
                range=["#13a10e", "#2f7ed8", "#ff8a00", "#e4393c", "#bbbbbb"],
            ),
        ),
        tooltip=["version:N", "status:N", "vs:N", alt.Tooltip("ratio:Q", format=".3f")],
    )
    one = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(strokeDash=[4, 3], color="#999").encode(x="x:Q")
    return _config((ci + pts + one).properties(width=WIDTH - 160, height=max(1, len(rows)) * 26 + 10)).to_dict()


# ------------------------------------------------------------------------------ rendering
def _register_fonts() -> None:
    """Let the engine measure CJK text with a real CJK font when the machine has one."""
    global _fonts_done
    with _fonts_lock:
        if _fonts_done:
            return
        import vl_convert as vlc

        for d in sorted(
            {
                os.path.dirname(p)
                for pat in ("/usr/share/fonts/**/NotoSansCJK*", "/usr/share/fonts/**/wqy*")
                for p in glob.glob(pat, recursive=True)
            }
        ):
            try:
                vlc.register_font_directory(d)
            except Exception:  # measuring with a fallback font only changes label truncation
                pass
        _fonts_done = True


_SVG_HEAD = re.compile(r'^<svg([^>]*?) width="(\d+(?:\.\d+)?)" height="(\d+(?:\.\d+)?)"')


def render_svg(spec: dict, *, name: str, label: str) -> str:
    """The spec as an inline ``<svg>`` scaled by CSS (width/height attributes moved to a style max-width)."""
    import vl_convert as vlc

    _register_fonts()
    svg = vlc.vegalite_to_svg(spec)
    svg = _SVG_HEAD.sub(
        lambda m: (
            f'<svg{m.group(1)} role="img" aria-label="{_attr(label)}" data-chart="{name}" '
            f'style="max-width:{m.group(2)}px" preserveAspectRatio="xMinYMin meet"'
        ),
        svg,
        count=1,
    )
    return svg


def _attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
