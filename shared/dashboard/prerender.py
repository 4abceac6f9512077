"""The overview page's charts, rendered when the data is written (clean's commit) instead of on a cold instance.

Rendering a chart server-side (``charts.render_svg``: Vega in ``vl-convert``'s embedded V8) costs ≈ 0.5 s of
CPU for the engine's first chart in a process and ≈ 0.1 s per chart after that, plus altair's import: on a
cold analytics instance that was half of the overview page's first answer (docs/dashboard.md, "Pre-rendered
charts"). So the clean run renders the overview's two ranking charts once, into the immutable object
``layout.charts_key(run_id)`` that its manifest commit names (``Manifest.charts``), and the page serves
those SVGs as they are: no altair, no V8 on the page's path.

A pre-rendered chart is used only when it is exactly the chart the page would draw: the object records,
per chart, a fingerprint of the rows it was drawn from (stream id, platform, value, in chart order) and the
renderer's version (``data.RENDER_VERSION``); the page computes the same fingerprint from its own query and
renders on request when anything differs (a filtered view, another stream table, another code version, the
object missing or unreadable). The default overview (no parameters) of the committed data always matches.

``write_overview`` is the clean function's hook (``run_clean(charts=...)``, given by functions/clean/main.py).
A commit made without it (the Beam and Dataflow engines commit in their own processes; tests that run
``run_clean`` bare; a store cleaned before this existed) names no charts: the page renders them on request and
says so, until the clean function's next tick renders and names them (``ensure_overview``).
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import orjson

from shared import layout
from shared.dashboard import charts, queries
from shared.log import get_logger

log = get_logger("dashboard")

KIND = "overview-charts"
#: the overview's charts: name -> (value field, accessible label)
OVERVIEW = {
    "rank_gmv": ("gmv", "streams ranked by GMV"),
    "rank_gpm": ("gpm", "streams ranked by GPM"),
}


def overview_rows(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each overview chart's rows (in the chart's order) from a ``queries.list_streams`` answer: by GMV
    in the list's order when it is sorted by GMV, else by GMV descending; by GPM descending (stream id
    breaks ties)."""
    streams = data["streams"]
    by_gmv = streams if data["sort"] == "gmv" else sorted(streams, key=lambda s: (-(s["gmv"] or 0), s["stream_id"]))
    by_gpm = sorted(streams, key=lambda s: (-(s["gpm"] or 0), s["stream_id"]))
    return {
        "rank_gmv": [{"stream_id": s["stream_id"], "platform": s["platform"], "gmv": s["gmv"]} for s in by_gmv],
        "rank_gpm": [{"stream_id": s["stream_id"], "platform": s["platform"], "gpm": s["gpm"]} for s in by_gpm],
    }


def fingerprint(rows: list[dict[str, Any]]) -> str:
    """What a chart was drawn from (its rows, in order, and the renderer's version), as a short hash."""
    from shared.dashboard.data import RENDER_VERSION

    return hashlib.sha1(RENDER_VERSION.encode() + b"|" + orjson.dumps(rows)).hexdigest()[:20]


def render(name: str, rows: list[dict[str, Any]]) -> str:
    """One overview chart as inline SVG (the same call whether at clean time or on request)."""
    field, label = OVERVIEW[name]
    return charts.render_svg(charts.ranking_chart(rows, field), name=name, label=label)


def build_overview(stream, stream_key: str) -> dict[str, Any]:
    """The document for the default overview of the analytics ``stream`` table (a DataFrame as the
    dashboard loads it) stored at ``stream_key``."""
    from shared.dashboard.data import RENDER_VERSION, empty_snapshot

    snap = empty_snapshot("prerender")
    snap.stream = stream
    data = queries.list_streams(snap, {"limit": str(queries.MAX_LIMIT)})
    rows = overview_rows(data)
    out: dict[str, Any] = {"kind": KIND, "render": RENDER_VERSION, "stream": stream_key, "charts": {}}
    if data["streams"]:  # an empty overview draws no chart
        out["charts"] = {n: {"input": fingerprint(r), "svg": render(n, r)} for n, r in rows.items()}
    return out


def write_overview(store, run_id: str, analytics: dict[str, str]) -> str | None:
    """clean's hook, before its manifest commit: render the overview's charts from the run's stream table
    (``analytics["stream"]``) into ``layout.charts_key(run_id)``; returns that key (None: no stream table)."""
    import pyarrow.parquet as pq

    from shared.dashboard.data import _frame

    stream_key = analytics.get("stream")
    if not stream_key:
        return None
    t0 = time.monotonic()
    doc = build_overview(_frame(pq.read_table(io.BytesIO(store.get(stream_key)))), stream_key)
    key = layout.charts_key(run_id)
    store.put(key, orjson.dumps(doc), content_type="application/json")
    log.info(
        "overview charts pre-rendered",
        extra={"key": key, "charts": len(doc["charts"]), "seconds": round(time.monotonic() - t0, 3)},
    )
    return key


def ensure_overview(store) -> str | None:
    """For a commit made without the hook (the Beam / Dataflow engines commit in their own processes; a store
    cleaned before this existed): render the committed stream table's charts and name them in the manifest
    (read-modify-write, only while it still names that stream table). The clean function's tick calls it when
    the manifest names a stream table and no charts. Returns the key named, or None."""
    manifest, _ = layout.load_manifest(store)
    stream_key = manifest.analytics.get("stream")
    if not stream_key or not manifest.runs or manifest.get("charts"):
        return manifest.get("charts")
    key = write_overview(store, manifest.runs[-1].run_id, manifest.analytics)

    def name(m: dict[str, Any]) -> dict[str, Any]:
        if (m.get("analytics") or {}).get("stream") == stream_key and not m.get("charts"):
            m["charts"] = key
        return m

    named, _ = layout.update_manifest(store, name)
    return key if named.get("charts") == key else None


def load(store, manifest) -> tuple[dict[str, Any] | None, str]:
    """The pre-rendered overview the manifest names, checked, and why not when there is none usable."""
    from shared.dashboard.data import RENDER_VERSION

    key = manifest.get("charts")
    if not key:
        return None, "this clean run pre-rendered no charts"
    try:
        doc = orjson.loads(store.get(key))
    except Exception as exc:  # missing or broken: the page renders on request
        log.warning("pre-rendered charts unreadable", extra={"key": key, "error": str(exc)})
        return None, f"the pre-rendered charts could not be read ({type(exc).__name__})"
    if not isinstance(doc, dict) or doc.get("kind") != KIND or not isinstance(doc.get("charts"), dict):
        return None, "the pre-rendered charts object is not an overview"
    if doc.get("render") != RENDER_VERSION:
        return None, f"the charts were pre-rendered by another version (render {doc.get('render')!r})"
    if doc.get("stream") != manifest.analytics.get("stream"):
        return None, "the charts were pre-rendered from another stream table"
    return doc, ""


def overview_charts(snap, data: dict[str, Any], *, default_view: bool) -> tuple[dict[str, str], str]:
    """The overview page's charts (name -> SVG) for its ``list_streams`` answer: the pre-rendered ones
    where they match, the others rendered now; and a note saying why the default view's were rendered
    now ('' when none were; a filtered or re-sorted view is always drawn on request, without a note)."""
    rows = overview_rows(data)
    pre, why = snap.overview_prerendered()
    out, missed = {}, []
    for name, r in rows.items():
        hit = (pre or {}).get("charts", {}).get(name) if pre else None
        if isinstance(hit, dict) and hit.get("input") == fingerprint(r) and isinstance(hit.get("svg"), str):
            out[name] = hit["svg"]
        else:
            out[name] = render(name, r)
            missed.append(name)
    if not missed or not default_view:
        return out, ""
    return out, why or "the pre-rendered charts were drawn from other rows"
