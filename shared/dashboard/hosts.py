"""Host and audience views: the JSON of /api/hosts..., /api/streams/<id>/audience and .../slots, their
charts (Vega-Lite specs rendered like ``charts``) and the host pages (/hosts, /hosts/<id>).

The numbers are the host / audience analytics tables unchanged (shared/pipeline/host_kpis.py,
docs/metrics.md "Hosts and audience"); the viewer-level table is never read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from shared.dashboard import charts, queries
from shared.dashboard.charts import alt  # altair imported on the first chart, not at cold start
from shared.dashboard.queries import BadParameter, jsonable, p_choice, records
from shared.pipeline.outputs import COHORT_GRAINS, TABLE_COLUMNS

HOST_COLUMNS = TABLE_COLUMNS["host"]
SLOT_COLUMNS = ["title", *[c for c in TABLE_COLUMNS["stream_slot"] if c != "stream_id"]]
AUDIENCE_COLUMNS = [c for c in TABLE_COLUMNS["stream_audience"] if c != "stream_id"]
SLOT_SORTS = ("start", "gmv", "orders", "units", "gmv_per_min", "clicks", "ctr", "conversion_rate", "viewers")
#: a host's streams side by side (/api/hosts/<id>): the stream row's KPIs + its audience
SIDE_BY_SIDE = [
    "stream_id",
    "title",
    "started_at",
    "start",
    "end",
    "duration_s",
    "unique_viewers",
    "peak_concurrent",
    "avg_watch_s",
    "median_watch_s",
    "retention_5m",
    "retention_10m",
    "new_host_viewers",
    "returning_host_viewers",
    "returning_host_share",
    "followers_gained",
    "follow_rate",
    "orders",
    "gmv",
    "gpm",
    "conversion_rate",
    "returning_host_gmv_share",
]
HOST_SORTS = tuple(c for c in HOST_COLUMNS if c not in ("host_name", "best_stream_id"))


class UnknownHost(LookupError):
    def __init__(self, host_id: str):
        super().__init__(f"unknown host {host_id!r}")
        self.host_id = host_id


def has_host(snap, host_id: str) -> bool:
    return bool(len(snap.host)) and bool((snap.host["host_id"] == host_id).any())


def _host_row(snap, host_id: str) -> pd.Series:
    rows = snap.host[snap.host["host_id"] == host_id]
    if rows.empty:
        raise UnknownHost(host_id)
    return rows.iloc[0]


# ------------------------------------------------------------------------------ JSON
def list_hosts(snap, args: Mapping[str, str]) -> dict[str, Any]:
    """``/api/hosts``: every host with its totals; sort (default gmv), order, platform, page."""
    sort = p_choice(args, "sort", "gmv", ("host_id", *HOST_SORTS))
    order = p_choice(args, "order", "asc" if sort in ("host_id", "platform") else "desc", ("asc", "desc"))
    df = snap.host
    if args.get("platform"):
        df = df[df["platform"].isin([p for p in args["platform"].split(",") if p])]
    df = df.sort_values([sort, "host_id"], ascending=[order == "asc", True], na_position="last", kind="stable")
    page, limit, offset = queries._page(df, args)
    return {
        "total": int(len(df)),
        "limit": limit,
        "offset": offset,
        "sort": sort,
        "order": order,
        "hosts": records(page, HOST_COLUMNS),
    }


def host_streams(snap, host_id: str) -> pd.DataFrame:
    """The host's streams (stream table + audience), oldest first."""
    s = snap.stream[snap.stream["host_id"] == host_id]
    a = snap.stream_audience.drop(columns=["host_id", "platform"], errors="ignore")
    df = s.merge(a, on="stream_id", how="left")
    t = df["started_at"].where(df["started_at"].notna(), df["start"]) if len(df) else df.get("start")
    return df.assign(_t=t).sort_values(["_t", "stream_id"], kind="stable").drop(columns="_t")


def host_detail(snap, host_id: str) -> dict[str, Any]:
    """``/api/hosts/<id>``: the host's totals and its streams side by side (oldest first)."""
    row = _host_row(snap, host_id)
    return {
        "host": {c: jsonable(row.get(c)) for c in HOST_COLUMNS},
        "streams": records(host_streams(snap, host_id), SIDE_BY_SIDE),
    }


def host_cohorts(snap, host_id: str, args: Mapping[str, str]) -> dict[str, Any]:
    """``/api/hosts/<id>/cohorts``: viewers by the day / week of their first stream with the host and
    how many came back 0, 1, 2 ... periods later."""
    _host_row(snap, host_id)
    grain = p_choice(args, "grain", "week", COHORT_GRAINS)
    df = snap.host_cohort[(snap.host_cohort["host_id"] == host_id) & (snap.host_cohort["grain"] == grain)]
    out = []
    for cohort, g in df.sort_values(["cohort", "period"]).groupby("cohort", sort=True):
        out.append(
            {
                "cohort": str(pd.Timestamp(cohort).date()),
                "cohort_size": int(g["cohort_size"].iloc[0]),
                "periods": records(g, ["period", "viewers", "share"]),
            }
        )
    return {"host_id": host_id, "grain": grain, "cohorts": out}


def stream_audience(snap, stream_id: str) -> dict[str, Any]:
    """``/api/streams/<id>/audience``: new vs returning, followers, watch time and the retention curve."""
    queries._stream_row(snap, stream_id)
    a = snap.stream_audience[snap.stream_audience["stream_id"] == stream_id]
    r = snap.stream_retention[snap.stream_retention["stream_id"] == stream_id].sort_values("minute")
    aud = {c: jsonable(a.iloc[0][c]) if len(a) else None for c in AUDIENCE_COLUMNS}
    return {"stream_id": stream_id, "audience": aud, "retention": records(r, ["minute", "viewers", "share", "dropped"])}


def stream_slots(snap, stream_id: str, args: Mapping[str, str]) -> dict[str, Any]:
    """``/api/streams/<id>/slots``: the presentation slots and their sales (default in time order)."""
    queries._stream_row(snap, stream_id)
    sort = p_choice(args, "sort", "start", SLOT_SORTS)
    df = snap.stream_slot[snap.stream_slot["stream_id"] == stream_id]
    df = df.merge(snap.catalog[["item_id", "title"]], on="item_id", how="left")
    df = df.sort_values([sort, "slot_id"], ascending=[sort == "start", True], na_position="last", kind="stable")
    page, limit, offset = queries._page(df, {**args, "limit": args.get("limit") or str(queries.MAX_LIMIT)})
    return {
        "stream_id": stream_id,
        "total": int(len(df)),
        "limit": limit,
        "offset": offset,
        "sort": sort,
        "slots": records(page, SLOT_COLUMNS),
    }


# ------------------------------------------------------------------------------ charts
def retention_chart(points: list[dict]) -> dict:
    """Share of the stream's watchers still watching after t minutes (a step curve)."""
    df = pd.DataFrame(points, columns=["minute", "viewers", "share", "dropped"]).astype(
        {"minute": float, "share": float}
    )
    base = alt.Chart(df).encode(
        alt.X("minute:Q", title="minutes watched 观看时长 (min)"),
        alt.Y("share:Q", title="still watching 留存", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
    )
    chart = base.mark_area(color=charts.PALETTE[2], opacity=0.2, interpolate="step-after") + base.mark_line(
        color=charts.PALETTE[2], interpolate="step-after"
    )
    return charts._config(chart.properties(width=charts.WIDTH, height=180)).to_dict()


def host_streams_chart(streams: list[dict]) -> dict:
    """Per stream of a host (oldest first): new vs returning viewers (stacked) and GMV."""
    rows = []
    for i, s in enumerate(streams):
        for key, label in (("new_host_viewers", "new 新观众"), ("returning_host_viewers", "returning 回访")):
            rows.append({"stream": s["stream_id"], "order": i, "kind": label, "viewers": s.get(key) or 0})
    df = pd.DataFrame(rows, columns=["stream", "order", "kind", "viewers"])
    gmv = pd.DataFrame(
        [{"stream": s["stream_id"], "order": i, "gmv": float(s.get("gmv") or 0)} for i, s in enumerate(streams)],
        columns=["stream", "order", "gmv"],
    )
    x = alt.X("stream:N", sort=alt.EncodingSortField("order"), title=None, axis=alt.Axis(labelAngle=-40))
    v = (
        alt.Chart(df)
        .mark_bar()
        .encode(x, alt.Y("viewers:Q", title="viewers 观众"), alt.Color("kind:N", title=None, sort=None))
    )
    g = alt.Chart(gmv).mark_bar(color=charts.PALETTE[0]).encode(x, alt.Y("gmv:Q", title="GMV (CNY)"))
    w = max(charts.WIDTH - 120, 1)
    return charts._config(
        alt.vconcat(v.properties(width=w, height=150), g.properties(width=w, height=110), spacing=6)
    ).to_dict()


# ------------------------------------------------------------------------------ pages
def hosts_page(snap, args, root: str = "") -> str:
    from shared.dashboard.pages import _render

    data = list_hosts(snap, {**args, "limit": str(queries.MAX_LIMIT)})
    return _render("hosts.html", snap, root, title="主播 Hosts", nav="hosts", hosts=data["hosts"])


def host_page(snap, host_id: str, args, root: str = "") -> str:
    from shared.dashboard.pages import _render

    d = host_detail(snap, host_id)
    grain = p_choice(args, "grain", "week", COHORT_GRAINS)
    coh = host_cohorts(snap, host_id, {"grain": grain})
    width = max((p["period"] for c in coh["cohorts"] for p in c["periods"]), default=-1) + 1
    grid = []
    for c in coh["cohorts"]:
        by = {p["period"]: p for p in c["periods"]}
        grid.append({**c, "cells": [by.get(k) for k in range(width)]})
    c = {}
    if d["streams"]:
        c["streams"] = charts.render_svg(
            host_streams_chart(d["streams"]), name="host_streams", label="new vs returning viewers and GMV per stream"
        )
    name = d["host"].get("host_name") or host_id
    return _render(
        "host.html",
        snap,
        root,
        title=f"主播 {name}",
        nav="hosts",
        h=d["host"],
        streams=d["streams"],
        cohorts=grid,
        periods=width,
        grain=grain,
        charts=c,
    )


def stream_extras(snap, stream_id: str) -> dict[str, Any]:
    """What the stream page adds: audience tiles, the retention chart, the slot table."""
    aud = stream_audience(snap, stream_id)
    slots = stream_slots(snap, stream_id, {})["slots"]
    out: dict[str, Any] = {"audience": aud["audience"], "slots": slots, "retention_chart": None}
    if aud["retention"]:
        out["retention_chart"] = charts.render_svg(
            retention_chart(aud["retention"]), name="retention", label="retention: share still watching after t minutes"
        )
    return out


__all__ = [
    "BadParameter",
    "UnknownHost",
    "has_host",
    "host_cohorts",
    "host_detail",
    "host_page",
    "hosts_page",
    "list_hosts",
    "stream_audience",
    "stream_extras",
    "stream_slots",
]
