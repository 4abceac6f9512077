"""Pure queries over a :class:`~shared.dashboard.data.Snapshot`: parameters in, JSON-able dicts out.

Parameter problems raise :class:`BadParameter` (-> 400 naming the parameter); an unknown stream
raises :class:`UnknownStream` (-> 404). Numbers are the analytics tables' values unchanged (NaN, i.e.
a rate with a zero denominator, becomes ``null``); timestamps are ISO 8601 UTC strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from shared.pipeline.outputs import STREAM_COLUMNS, session_tables


class BadParameter(ValueError):
    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class UnknownStream(LookupError):
    def __init__(self, stream_id: str):
        super().__init__(f"unknown stream {stream_id!r}")
        self.stream_id = stream_id


#: the columns of a stream's time series (one row per bucket), in order
TIMESERIES_COLS = [
    "t",
    "viewers",
    "avg_concurrent",
    "watch_s",
    "likes",
    "comments",
    "shares",
    "follows",
    "gifts",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "units",
    "gmv",
]
# the list view's columns (all of STREAM_COLUMNS are sortable)
HEADLINE = [
    "stream_id",
    "platform",
    "title",
    "host_id",
    "host_name",
    "started_at",
    "ended_at",
    "start",
    "end",
    "duration_s",
    "unique_viewers",
    "peak_concurrent",
    "avg_concurrent",
    "avg_watch_s",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "units",
    "buyers",
    "gmv",
    "gpm",
    "ctr",
    "conversion_rate",
    "refunds",
    "refund_amount",
    "likes",
    "comments",
    "gifts",
]
FUNNEL = [
    ("impressions", "曝光 impressions"),
    ("clicks", "点击 clicks"),
    ("add_to_carts", "加购 carts"),
    ("orders", "下单 orders"),
]
PRODUCT_SORTS = ("gmv", "ctr", "orders", "clicks", "impressions", "units", "conversion_rate")
MAX_LIMIT = 500


# ------------------------------------------------------------------------------ JSON values
def jsonable(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, (pd.Timestamp, datetime)):
        if pd.isna(v):
            return None
        ts = pd.Timestamp(v)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.isoformat().replace("+00:00", "Z")
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f) or math.isinf(f):
            return None
        return f
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [jsonable(x) for x in v]
    if v is pd.NaT:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def records(df: pd.DataFrame, cols: list[str] | None = None) -> list[dict[str, Any]]:
    if cols is not None:
        df = df[[c for c in cols if c in df.columns]]
    return [{k: jsonable(v) for k, v in row.items()} for row in df.to_dict("records")]


# ------------------------------------------------------------------------------ parameters
def p_int(args: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadParameter(name, f"expected an integer, got {raw!r}") from None
    if not lo <= v <= hi:
        raise BadParameter(name, f"must be between {lo} and {hi}, got {v}")
    return v


def p_choice(args: Mapping[str, str], name: str, default: str, choices) -> str:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise BadParameter(name, f"must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def p_time(args: Mapping[str, str], name: str, *, end: bool = False) -> pd.Timestamp | None:
    """A date (YYYY-MM-DD: the whole day, inclusive for ``to``) or an RFC 3339 instant."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            t = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return pd.Timestamp(t + timedelta(days=1) if end else t)
        t = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadParameter(name, f"expected a date YYYY-MM-DD or an ISO 8601 time, got {raw!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return pd.Timestamp(t)


def _page(df: pd.DataFrame, args) -> tuple[pd.DataFrame, int, int]:
    limit = p_int(args, "limit", 50, 1, MAX_LIMIT)
    offset = p_int(args, "offset", 0, 0, 10**9)
    return df.iloc[offset : offset + limit], limit, offset


# ------------------------------------------------------------------------------ endpoints
def list_streams(snap, args: Mapping[str, str]) -> dict[str, Any]:
    """``/api/streams``: filter (platform, from/to on the stream's start), sort, page."""
    sort = p_choice(args, "sort", "gmv", STREAM_COLUMNS)
    order = p_choice(
        args, "order", "desc" if sort not in ("stream_id", "platform", "start", "end") else "asc", ("asc", "desc")
    )
    frm, to = p_time(args, "from"), p_time(args, "to", end=True)
    if frm is not None and to is not None and to <= frm:
        raise BadParameter("to", "must be after from")
    df = snap.stream
    platform = args.get("platform")
    if platform:
        wanted = [p for p in platform.split(",") if p]
        df = df[df["platform"].isin(wanted)]
    if frm is not None:
        df = df[df["start"] >= frm]
    if to is not None:
        df = df[df["start"] < to]
    # NaN (undefined rates) last in either direction; stream_id breaks ties deterministically
    df = df.sort_values([sort, "stream_id"], ascending=[order == "asc", True], na_position="last", kind="stable")
    page, limit, offset = _page(df, args)
    return {
        "total": int(len(df)),
        "limit": limit,
        "offset": offset,
        "sort": sort,
        "order": order,
        "streams": records(page, HEADLINE),
    }


def _stream_row(snap, stream_id: str) -> pd.Series:
    rows = snap.stream[snap.stream["stream_id"] == stream_id]
    if rows.empty:
        raise UnknownStream(stream_id)
    return rows.iloc[0]


def stream_kpis(snap, stream_id: str) -> dict[str, Any]:
    row = _stream_row(snap, stream_id)
    return {"stream": {c: jsonable(row[c]) for c in snap.stream.columns}}


def _bucket_default(row: pd.Series) -> int:
    """A bucket giving at most ~240 points over the stream (whole minutes)."""
    dur = float(row.get("duration_s") or 0)
    return int(max(1, math.ceil(dur / 240 / 60)) * 60)


def timeseries(snap, stream_id: str, args: Mapping[str, str]) -> dict[str, Any]:
    """``grain=hour``: the analytics stream_hour rows. ``grain=minute`` (default): buckets of
    ``bucket`` minutes computed from the stream's clean events with the same session rules."""
    row = _stream_row(snap, stream_id)
    grain = p_choice(args, "grain", "minute", ("minute", "hour"))
    if grain == "hour":
        if "bucket" in args:
            raise BadParameter("bucket", "only with grain=minute")
        df = snap.stream_hour[snap.stream_hour["stream_id"] == stream_id].sort_values("hour")
        pts = records(df.drop(columns=["stream_id"]).rename(columns={"hour": "t"}))
        return {"stream_id": stream_id, "grain": "hour", "bucket_s": 3600, "points": pts}
    bucket = p_int(args, "bucket", _bucket_default(row) // 60, 1, 60) * 60
    df = snap.fine_series(stream_id, bucket)
    return {"stream_id": stream_id, "grain": "minute", "bucket_s": bucket, "points": records(df)}


def funnel(snap, stream_id: str) -> dict[str, Any]:
    row = _stream_row(snap, stream_id)
    steps, first, prev = [], None, None
    for col, label in FUNNEL:
        n = int(row[col])
        first = n if first is None else first
        steps.append(
            {
                "step": col,
                "label": label,
                "count": n,
                "rate_from_previous": (n / prev if prev else None) if prev is not None else 1.0,
                "rate_from_first": n / first if first else None,
            }
        )
        prev = n
    return {"stream_id": stream_id, "steps": steps}


def products(snap, stream_id: str, args: Mapping[str, str]) -> dict[str, Any]:
    _stream_row(snap, stream_id)
    sort = p_choice(args, "sort", "gmv", PRODUCT_SORTS)
    df = snap.stream_item[snap.stream_item["stream_id"] == stream_id].drop(columns=["stream_id"])
    df = df.merge(snap.catalog, on="item_id", how="left", suffixes=("", "_catalog"))
    df = df.sort_values([sort, "item_id"], ascending=[False, True], na_position="last", kind="stable")
    page, limit, offset = _page(df, {**args, "limit": args.get("limit") or "20"})
    cols = [
        "item_id",
        "title",
        "category",
        "price",
        "impressions",
        "clicks",
        "add_to_carts",
        "orders",
        "units",
        "gmv",
        "refunds",
        "ctr",
        "conversion_rate",
    ]
    return {
        "stream_id": stream_id,
        "total": int(len(df)),
        "limit": limit,
        "offset": offset,
        "sort": sort,
        "products": records(page, cols),
    }


def quality(snap) -> dict[str, Any]:
    keys = [
        "run_id",
        "rows_in",
        "rows_out",
        "catalog_rows",
        "dropped",
        "duplicates",
        "duplicates_in_run",
        "duplicates_seen_before",
        "late",
        "ts_corrected",
        "backlog",
        "seconds",
        "dropped_by_reason",
        "dropped_by_field",
        "published",
        "raw_objects",
        "error",
    ]
    runs = []
    for r in snap.runs:
        out = {k: jsonable(r.get(k)) for k in keys if k in r}
        if isinstance(r.get("raw_objects"), list):
            out["raw_objects"] = len(r["raw_objects"])
        runs.append(out)
    reasons = sorted({k for r in runs for k in (r.get("dropped_by_reason") or {})})
    clean_total: dict[str, int] = {}
    for r in runs:
        for k, v in (r.get("dropped_by_reason") or {}).items():
            clean_total[k] = clean_total.get(k, 0) + int(v or 0)
    ing = snap.ingest_rejects() or {}
    ing_total: dict[str, int] = {}
    for d in (ing.get("by_day") or {}).values():
        for k, v in d.items():
            ing_total[k] = ing_total.get(k, 0) + int(v)
    ingest = {
        "days": int(ing.get("days") or 0),
        "rows": int(ing.get("rows") or 0),
        "objects": int(ing.get("objects") or 0),
        "by_reason": dict(sorted(ing_total.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_day": ing.get("by_day") or {},
    }
    if ing.get("error"):
        ingest["error"] = ing["error"]
    return {
        "runs": runs,
        "reasons": reasons,
        "clean_by_reason": dict(sorted(clean_total.items(), key=lambda kv: (-kv[1], kv[0]))),
        "ingest": ingest,
    }


#: a metric's family (one chart each on the models page): ranking quality in [0, 1] (NDCG, recall ...),
#: ratios to a baseline (around 1), counts (holdout sizes: integers, never on a score axis)
RANKING_TOKENS = ("ndcg", "recall", "precision", "map@", "mrr", "hit", "auc", "coverage", "accuracy")
FAMILIES = ("ranking", "ratio", "count")


def metric_family(name: str, value: Any) -> str | None:
    """``ranking`` / ``ratio`` / ``count`` for a numeric metric of ``meta.json``'s ``metrics``; None for
    what is not a metric (``k``, booleans, text, nested objects)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or name == "k":
        return None
    low = name.lower()
    if low.endswith(("_queries", "_users", "_items", "_events", "_rows")) or low.startswith("n_"):
        return "count"
    if "ratio" in low or low.startswith("lift"):
        return "ratio"
    if any(t in low for t in RANKING_TOKENS):
        return "ranking"
    return "count" if isinstance(value, int) and abs(value) > 1 else "ranking"


def model_statuses(models: list[dict[str, Any]], latest: str | None) -> dict[str, str]:
    """version -> ``serving`` (LATEST names it), ``replaced`` (it served: a later version was compared
    to it, and promoted), ``not promoted`` (the gate said promote, but LATEST had moved since the
    decision: another train run promoted first, ``Registry.complete_promotion``), ``rejected`` (the gate
    kept the current model), ``unknown`` (no decision recorded)."""
    decisions = {m.get("version"): (m.get("decision") if isinstance(m.get("decision"), dict) else {}) for m in models}
    served = {latest} | {d.get("compared_to") for d in decisions.values() if d.get("compared_to")}
    out = {}
    for v, d in decisions.items():
        if v == latest:
            out[v] = "serving"
        elif not d:
            out[v] = "unknown"
        elif not d.get("promote"):
            out[v] = "rejected"
        else:
            out[v] = "replaced" if v in served else "not promoted"
    return out


def _baselines(m: dict[str, Any]) -> list[dict[str, Any]]:
    """Per evaluated block of the gate: the candidate, the current model and every baseline on the
    block's metric, the best baseline and the paired-bootstrap ratio to it (the primary block first)."""
    ev = m.get("evaluation") if isinstance(m.get("evaluation"), dict) else {}
    primary = ev.get("primary")
    out = []
    for name, b in (ev.get("blocks") or {}).items():
        if not isinstance(b, dict) or "rankers" not in b:
            continue
        key = b.get("metric")
        vals = {r: (v or {}).get(key) for r, v in b["rankers"].items()}
        vs = ((b.get("vs_best_baseline") or {}).get("candidate")) or {}
        out.append(
            {
                "block": name,
                "primary": name == primary,
                "metric": key,
                "n_queries": b.get("n_queries"),
                "candidate": vals.get("candidate"),
                "current": vals.get("current"),
                "best_baseline": b.get("best_baseline"),
                "baselines": {r: v for r, v in vals.items() if r not in ("candidate", "current")},
                "ratio": vs.get("ratio"),
                "ratio_lo": vs.get("ratio_lo"),
                "ratio_hi": vs.get("ratio_hi"),
            }
        )
    out.sort(key=lambda r: (not r["primary"], r["block"]))
    return out


def models(snap) -> dict[str, Any]:
    """Every version (oldest first) with its promotion decision (``status``, see :func:`model_statuses`;
    ``reason``: the gate's) and the baselines the gate compared it to; ``metrics`` (scores) and ``counts`` list the metric names per family (``families``)."""
    families: dict[str, set[str]] = {f: set() for f in FAMILIES}
    for m in snap.models:
        for k, v in (m.get("metrics") or {}).items():
            f = metric_family(k, v)
            if f:
                families[f].add(k)
    latest = snap.latest_model
    status = model_statuses(snap.models, latest)
    versions = []
    for m in snap.models:
        d = m.get("decision") if isinstance(m.get("decision"), dict) else {}
        bl = _baselines(m)
        versions.append(
            {
                **jsonable(m),
                "status": status.get(m.get("version"), "unknown"),
                "reason": d.get("reason"),
                "compared_to": d.get("compared_to"),
                "below_baseline": d.get("below_baseline"),
                "baselines": jsonable(bl),
                "baseline_names": sorted({n for b in bl for n in b["baselines"]}),
            }
        )
    fam = {f: sorted(v) for f, v in families.items()}
    return {
        "latest": latest,
        "models": versions,
        "metrics": sorted(families["ranking"] | families["ratio"]),  # scores, not counts
        "counts": fam["count"],
        "families": fam,
    }


# ------------------------------------------------------------------------------ finer series
def fine_series_from_events(
    events: pa.Table, bucket_s: int, max_session_s: float | None = None, bounds: tuple | None = None
) -> pd.DataFrame:
    """Per-bucket series of one stream's clean events: viewers (distinct watchers present, average
    concurrency = watch seconds in the bucket / bucket length, over the sessions exactly as the
    analytics tables define them), engagement, funnel counts, orders and GMV.

    The buckets cover the stream's span (``bounds`` = (start, end), the analytics table's, which knows
    the host's stream_start / stream_end; else the events'); an event outside it (a device clock off)
    counts in the nearest bucket, so summing a column over the buckets gives the stream's total (watch
    seconds, orders, GMV, likes ...) and no bucket lies before the start or after the end."""
    cols = TIMESERIES_COLS
    if events.num_rows == 0:
        return pd.DataFrame(columns=cols)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        con.register("fine_src", events)
        sid = events.column("stream_id")[0].as_py() if bounds is not None else None
        # a_ev, a_span, a_sess: the tables' own definitions
        session_tables(con, "fine_src", max_session_s, {str(sid): bounds} if bounds is not None else None)
        b = f"INTERVAL {int(bucket_s)} SECOND"
        df = con.execute(f"""
            WITH bk AS (
                SELECT unnest(generate_series(time_bucket({b}, start, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                                              "end", {b})) AS t FROM a_span WHERE start IS NOT NULL),
            w AS (SELECT bk.t, count(DISTINCT s.user_id) AS viewers,
                         sum(epoch(least(s.e, bk.t + {b})) - epoch(greatest(s.s, bk.t))) AS watch_s
                  FROM bk JOIN a_sess s ON s.s < bk.t + {b} AND s.e > bk.t GROUP BY bk.t),
            c AS (SELECT time_bucket({b}, least(greatest(ts, sp.start), sp."end"),
                                      TIMESTAMPTZ '2000-01-01 00:00:00+00') AS t,
                         coalesce(sum(coalesce(count, 1)) FILTER (type = 'like'), 0) AS likes,
                         count(*) FILTER (type = 'comment') AS comments, count(*) FILTER (type = 'share') AS shares,
                         count(*) FILTER (type = 'follow') AS follows, count(*) FILTER (type = 'gift') AS gifts,
                         count(*) FILTER (type = 'product_impression') AS impressions,
                         count(*) FILTER (type = 'product_click') AS clicks,
                         count(*) FILTER (type = 'add_to_cart') AS add_to_carts,
                         count(*) FILTER (type = 'purchase') AS orders,
                         coalesce(sum(quantity) FILTER (type = 'purchase'), 0) AS units,
                         coalesce(sum(price * quantity) FILTER (type = 'purchase'), 0) AS gmv
                  FROM a_ev JOIN a_span sp USING (stream_id) WHERE type <> 'refund' GROUP BY 1),
            allt AS (SELECT t FROM bk UNION SELECT t FROM c)
            SELECT allt.t, coalesce(w.viewers, 0) AS viewers,
                   coalesce(w.watch_s, 0) / {float(bucket_s)} AS avg_concurrent, coalesce(w.watch_s, 0) AS watch_s,
                   coalesce(c.likes, 0) AS likes, coalesce(c.comments, 0) AS comments,
                   coalesce(c.shares, 0) AS shares, coalesce(c.follows, 0) AS follows,
                   coalesce(c.gifts, 0) AS gifts, coalesce(c.impressions, 0) AS impressions,
                   coalesce(c.clicks, 0) AS clicks, coalesce(c.add_to_carts, 0) AS add_to_carts,
                   coalesce(c.orders, 0) AS orders, coalesce(c.units, 0) AS units,
                   coalesce(c.gmv, 0.0) AS gmv
            FROM allt LEFT JOIN w USING (t) LEFT JOIN c USING (t) ORDER BY allt.t""").df()
    finally:
        con.close()
    for c in ("likes", "units"):
        df[c] = df[c].astype("int64")
    return df[cols]
