"""Recommendation experiments: what each arm's recommendations sold, with confidence intervals
(definitions: docs/experiments.md). DuckDB SQL over the clean events, like the other analytics.

The arm of an event is read from its ``rec_id`` (``r1.<experiment>.<arm>.<ulid>``, written by recommend:
``shared.serving.experiments``); an id of another shape is ignored. Attribution unit: one item shown in
one recommendation (a ``(rec_id, item_id)`` pair with a ``rec_impression``):

* ``impressions``: such pairs; ``clicks`` / ``carts`` / ``conversions``: the pairs with at least one
  ``product_click`` / ``add_to_cart`` / ``purchase`` carrying the same ``rec_id`` and item (so CTR and
  conversion are proportions <= 1); ``orders``, ``units``, ``gmv``: every such purchase (price x
  quantity); ``unmatched_actions``: tagged actions whose (rec_id, item) was never shown (not counted).
* Attribution stays within the stream of the impression (a tagged action in another stream is unmatched).

Two tables:

* ``rec_viewer`` (per stream, like ``viewer_stream``: holds viewer ids, never served, rewritten by the
  erasure job): per (stream, experiment, arm, viewer) the counts above;
* ``experiment`` (derived from the whole ``rec_viewer`` on every run): per (experiment, arm) the totals,
  CTR and conversion with **Wilson** 95 % intervals (impressions as independent trials), GMV per
  impression with a **delta-method** interval clustered by viewer (the randomisation unit), and each
  arm against the experiment's control arm (the arm named ``control``, else the first by name): the
  difference of CTR, conversion and GMV per impression with delta-method intervals clustered by viewer
  (arms independent), the relative lift, and whether the interval excludes zero.
"""

from __future__ import annotations

import duckdb

from shared.serving.experiments import REC_ID_PATTERN

STREAM_TABLES = ("rec_viewer",)
DERIVED_TABLES = ("experiment",)
DERIVED_INPUTS = ("rec_viewer",)
Z = 1.959963984540054  #: the 95 % two-sided normal quantile
CONTROL = "control"
REC_ID_SQL = REC_ID_PATTERN  # (no quote in it: safe inside a SQL string literal)
TAGGED = ("product_click", "add_to_cart", "purchase")

#: the counts and first/last times both tables carry: per viewer in rec_viewer, per arm in experiment
COUNT_COLS = [
    "recommendations",
    "impressions",
    "clicks",
    "carts",
    "conversions",
    "orders",
    "units",
    "gmv",
    "unmatched_actions",
    "first_ts",
    "last_ts",
]
REC_VIEWER_COLS = ["stream_id", "experiment", "arm", "user_id", *COUNT_COLS]
METRICS = ("ctr", "conversion_rate", "gmv_per_impression")
EXPERIMENT_COLS = [
    "experiment",
    "arm",
    "control_arm",
    "is_control",
    "viewers",
    *COUNT_COLS,
    *[f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")],
    *[f"{m}_{s}" for m in METRICS for s in ("diff", "diff_lo", "diff_hi", "lift", "significant")],
]


def _rate(num: str, den: str) -> str:
    return f"CASE WHEN ({den}) > 0 THEN CAST({num} AS DOUBLE) / ({den}) END"


def _empty_rec_viewer(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""CREATE OR REPLACE TABLE a_rec_viewer (stream_id VARCHAR, experiment VARCHAR, arm VARCHAR,
                   user_id VARCHAR, recommendations BIGINT, impressions BIGINT, clicks BIGINT, carts BIGINT,
                   conversions BIGINT, orders BIGINT, units BIGINT, gmv DOUBLE, unmatched_actions BIGINT,
                   first_ts TIMESTAMPTZ, last_ts TIMESTAMPTZ)""")


def stream_tables_sql(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """``a_rec_viewer`` from ``source`` (clean events; a relation without ``rec_id``: an empty table)."""
    cols = {d[0] for d in con.execute(f"SELECT * FROM {source} LIMIT 0").description}
    if "rec_id" not in cols:
        _empty_rec_viewer(con)
        return
    tagged = ", ".join(f"'{t}'" for t in TAGGED)
    con.execute(f"""CREATE OR REPLACE TABLE a_rec_viewer AS
        WITH e AS (
            SELECT CAST(stream_id AS VARCHAR) AS stream_id, CAST(user_id AS VARCHAR) AS user_id,
                   CAST(item_id AS VARCHAR) AS item_id, CAST(type AS VARCHAR) AS type, CAST(rec_id AS VARCHAR) AS rec_id,
                   ts, price, coalesce(quantity, 1) AS quantity
            FROM {source}
            WHERE rec_id IS NOT NULL AND item_id IS NOT NULL AND user_id IS NOT NULL
              AND regexp_matches(CAST(rec_id AS VARCHAR), '{REC_ID_SQL}')
              AND CAST(type AS VARCHAR) IN ('rec_impression', {tagged})),
        imp AS (SELECT stream_id, rec_id, item_id, first(user_id ORDER BY ts) AS user_id, min(ts) AS ts
                FROM e WHERE type = 'rec_impression' GROUP BY ALL),
        act AS (SELECT stream_id, rec_id, item_id, first(user_id ORDER BY ts) AS user_id, min(ts) AS ts,
                       count(*) AS actions,
                       count(*) FILTER (type = 'product_click') > 0 AS clicked,
                       count(*) FILTER (type = 'add_to_cart') > 0 AS carted,
                       count(*) FILTER (type = 'purchase') AS orders,
                       coalesce(sum(quantity) FILTER (type = 'purchase'), 0) AS units,
                       coalesce(sum(price * quantity) FILTER (type = 'purchase'), 0) AS gmv
                FROM e WHERE type <> 'rec_impression' GROUP BY ALL),
        j AS (SELECT coalesce(imp.stream_id, act.stream_id) AS stream_id, coalesce(imp.rec_id, act.rec_id) AS rec_id,
                     coalesce(imp.user_id, act.user_id) AS user_id, imp.rec_id IS NOT NULL AS shown,
                     coalesce(act.clicked, false) AS clicked, coalesce(act.carted, false) AS carted,
                     coalesce(act.orders, 0) AS orders, coalesce(act.units, 0) AS units,
                     coalesce(act.gmv, 0) AS gmv, coalesce(act.actions, 0) AS actions,
                     coalesce(imp.ts, act.ts) AS ts
              FROM imp FULL OUTER JOIN act USING (stream_id, rec_id, item_id))
        SELECT stream_id, split_part(rec_id, '.', 2) AS experiment, split_part(rec_id, '.', 3) AS arm, user_id,
               count(DISTINCT rec_id) FILTER (shown) AS recommendations,
               count(*) FILTER (shown) AS impressions,
               count(*) FILTER (shown AND clicked) AS clicks,
               count(*) FILTER (shown AND carted) AS carts,
               count(*) FILTER (shown AND orders > 0) AS conversions,
               CAST(coalesce(sum(orders) FILTER (shown), 0) AS BIGINT) AS orders,
               CAST(coalesce(sum(units) FILTER (shown), 0) AS BIGINT) AS units,
               CAST(coalesce(sum(gmv) FILTER (shown), 0) AS DOUBLE) AS gmv,
               CAST(coalesce(sum(actions) FILTER (NOT shown), 0) AS BIGINT) AS unmatched_actions,
               min(ts) AS first_ts, max(ts) AS last_ts
        FROM j GROUP BY ALL""")


def _wilson(k: str, n: str, name: str) -> str:
    """``name``, ``name_lo``, ``name_hi``: k / n and its Wilson score interval (null when n = 0)."""
    p = f"(CAST({k} AS DOUBLE) / {n})"
    z2 = Z * Z
    centre = f"(({p} + {z2} / (2.0 * {n})) / (1 + {z2} / {n}))"
    half = f"({Z} * sqrt({p} * (1 - {p}) / {n} + {z2} / (4.0 * {n} * {n})) / (1 + {z2} / {n}))"
    return (
        f"CASE WHEN {n} > 0 THEN {p} END AS {name}, "
        f"CASE WHEN {n} > 0 THEN greatest(0.0, {centre} - {half}) END AS {name}_lo, "
        f"CASE WHEN {n} > 0 THEN least(1.0, {centre} + {half}) END AS {name}_hi"
    )


def _ratio_var(y: str) -> str:
    """The delta-method variance of sum(y) / sum(n) over m viewers (clustered by viewer):
    m / (m - 1) * sum((y_i - R n_i)^2) / N^2, expanded into the per-arm sums (null below 2 viewers)."""
    r = f"(CAST(s_{y} AS DOUBLE) / n_tot)"
    return (
        f"CASE WHEN m > 1 AND n_tot > 0 THEN greatest(0.0, m / (m - 1.0) * "
        f"(q_{y}{y} - 2 * {r} * q_{y}n + {r} * {r} * q_nn) / (CAST(n_tot AS DOUBLE) * n_tot)) END"
    )


def derived_sql(con: duckdb.DuckDBPyConnection, rec_viewer_rel: str) -> None:
    """``a_experiment`` from a relation of ``rec_viewer`` rows (every stream)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE a_exp_arm AS
        WITH v AS (
            SELECT CAST(experiment AS VARCHAR) AS experiment, CAST(arm AS VARCHAR) AS arm,
                   CAST(user_id AS VARCHAR) AS user_id, sum(recommendations) AS recs, sum(impressions) AS n,
                   sum(clicks) AS c, sum(carts) AS k, sum(conversions) AS b, sum(orders) AS o, sum(units) AS u,
                   sum(gmv) AS g, sum(unmatched_actions) AS x, min(first_ts) AS t0, max(last_ts) AS t1
            FROM {rec_viewer_rel} GROUP BY 1, 2, 3)
        SELECT experiment, arm, count(*) FILTER (n > 0) AS m, CAST(sum(recs) AS BIGINT) AS recommendations,
               CAST(sum(n) AS BIGINT) AS n_tot, CAST(sum(c) AS BIGINT) AS s_c, CAST(sum(k) AS BIGINT) AS carts,
               CAST(sum(b) AS BIGINT) AS s_b, CAST(sum(o) AS BIGINT) AS orders, CAST(sum(u) AS BIGINT) AS units,
               CAST(sum(g) AS DOUBLE) AS s_g, CAST(sum(x) AS BIGINT) AS unmatched_actions,
               min(t0) AS first_ts, max(t1) AS last_ts,
               sum(CAST(n AS DOUBLE) * n) AS q_nn,
               sum(CAST(c AS DOUBLE) * c) AS q_cc, sum(CAST(c AS DOUBLE) * n) AS q_cn,
               sum(CAST(b AS DOUBLE) * b) AS q_bb, sum(CAST(b AS DOUBLE) * n) AS q_bn,
               sum(g * g) AS q_gg, sum(g * n) AS q_gn
        FROM v GROUP BY 1, 2""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE a_exp_stat AS
        SELECT *, {_rate("s_c", "n_tot")} AS r_c, {_rate("s_b", "n_tot")} AS r_b, {_rate("s_g", "n_tot")} AS r_g,
               {_ratio_var("c")} AS v_c, {_ratio_var("b")} AS v_b, {_ratio_var("g")} AS v_g,
               coalesce(max(CASE WHEN arm = '{CONTROL}' THEN arm END) OVER w, min(arm) OVER w) AS control_arm
        FROM a_exp_arm WINDOW w AS (PARTITION BY experiment)""")

    def vs(short: str, name: str) -> str:
        """The arm minus the control arm (null on the control's own row)."""
        d = f"(s.r_{short} - c.r_{short})"
        se = f"sqrt(s.v_{short} + c.v_{short})"
        arm = "s.arm <> s.control_arm"
        return (
            f"CASE WHEN {arm} THEN {d} END AS {name}_diff, "
            f"CASE WHEN {arm} THEN {d} - {Z} * {se} END AS {name}_diff_lo, "
            f"CASE WHEN {arm} THEN {d} + {Z} * {se} END AS {name}_diff_hi, "
            f"CASE WHEN {arm} AND c.r_{short} > 0 THEN {d} / c.r_{short} END AS {name}_lift, "
            f"CASE WHEN {arm} THEN ({d} - {Z} * {se} > 0 OR {d} + {Z} * {se} < 0) END AS {name}_significant"
        )

    gse = f"{Z} * sqrt(s.v_g)"
    con.execute(f"""CREATE OR REPLACE TABLE a_experiment AS
        SELECT s.experiment, s.arm, s.control_arm, s.arm = s.control_arm AS is_control, s.m AS viewers,
               s.recommendations, s.n_tot AS impressions, s.s_c AS clicks, s.carts, s.s_b AS conversions,
               s.orders, s.units, s.s_g AS gmv, s.unmatched_actions, s.first_ts, s.last_ts,
               {_wilson("s.s_c", "s.n_tot", "ctr")}, {_wilson("s.s_b", "s.n_tot", "conversion_rate")},
               s.r_g AS gmv_per_impression, s.r_g - {gse} AS gmv_per_impression_lo,
               s.r_g + {gse} AS gmv_per_impression_hi,
               {vs("c", "ctr")}, {vs("b", "conversion_rate")}, {vs("g", "gmv_per_impression")}
        FROM a_exp_stat s JOIN a_exp_stat c ON c.experiment = s.experiment AND c.arm = s.control_arm
        ORDER BY s.experiment, s.arm <> s.control_arm, s.arm""")


def compute(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Both tables over one batch of clean events (``compute_analytics``)."""
    stream_tables_sql(con, source)
    derived_sql(con, "a_rec_viewer")
