"""Host and audience KPIs: presentation slots, retention, new vs returning viewers, follower gain,
per-host totals and cohorts (definitions: docs/metrics.md, "Hosts and audience").

Two kinds of tables, both DuckDB SQL over the analytics' own relations (no Python loop over events):

* **per stream** (``STREAM_TABLES``), computed by :func:`stream_tables_sql` right after
  ``analytics.analytics_sql`` from its ``a_ev`` / ``a_sess`` / ``a_span`` / ``a_info`` and the clean host
  actions; like the other stream tables they are recomputed for the streams a clean run touches:

  - ``viewer_stream``: one row per (stream, viewer): first event, sessions, watch time, followed,
    orders, GMV. It holds viewer ids (``layout.VIEWER_TABLES``): never served, rewritten by the
    erasure job like clean/; it is what the cross-stream tables below are computed from, so a clean
    run never re-reads the whole history to know who came back;
  - ``stream_retention``: the retention curve, per stream and minute t: the watchers whose watch
    time is at least t minutes (and their share);
  - ``stream_slot``: the presentation slots (slot_start ... slot_end, or the next slot_start) and the
    sales of the slot's item inside it (the live layer's attribution rule), plus the room's GMV,
    viewers and concurrency during the slot.

* **across streams** (``DERIVED_TABLES``), computed by :func:`derived_sql` from the whole (merged)
  ``stream`` and ``viewer_stream`` tables on every run (they are small: one row per viewer visit):

  - ``stream_audience``: per stream: new vs returning viewers (to the host, to the platform), watch
    time quantiles, retention at 1/5/10/30 min, followers gained (涨粉), returning viewers' GMV;
  - ``host``: per host: streams, viewers across streams, repeat viewers, GMV, GPM, followers gained;
  - ``host_cohort``: per host, viewers grouped by the day / week of their first stream with the host
    and how many of them watched again 0, 1, 2, ... days / weeks later.
"""

from __future__ import annotations

import duckdb

STREAM_TABLES = ("viewer_stream", "stream_retention", "stream_slot")
DERIVED_TABLES = ("stream_audience", "host", "host_cohort")
#: the merged tables :func:`derived_sql` reads
DERIVED_INPUTS = ("stream", "viewer_stream")
RETENTION_POINTS = (1, 5, 10, 30)  #: minutes: stream_audience.retention_<t>m
MAX_CURVE_MIN = 1440  #: the retention curve stops at 24 h (a watch time beyond counts there)

VIEWER_STREAM_COLS = [
    "stream_id",
    "platform",
    "user_id",
    "first_ts",
    "sessions",
    "watch_s",
    "followed",
    "orders",
    "gmv",
]
RETENTION_COLS = ["stream_id", "minute", "viewers", "share", "dropped"]
SLOT_COLS = [
    "stream_id",
    "slot_id",
    "item_id",
    "host_id",
    "start",
    "end",
    "open_ended",
    "duration_s",
    "price",
    "currency",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "units",
    "gmv",
    "buyers",
    "ctr",
    "conversion_rate",
    "gmv_per_min",
    "stream_orders",
    "stream_gmv",
    "viewers",
    "avg_concurrent",
    "gpm",
]
AUDIENCE_COLS = [
    "stream_id",
    "host_id",
    "platform",
    "stream_time",
    "viewers",
    "watchers",
    "median_watch_s",
    "p25_watch_s",
    "p75_watch_s",
    *[f"retention_{t}m" for t in RETENTION_POINTS],
    "new_host_viewers",
    "returning_host_viewers",
    "returning_host_share",
    "new_platform_viewers",
    "returning_platform_viewers",
    "returning_platform_share",
    "followers_gained",
    "follow_rate",
    "new_viewer_followers",
    "returning_host_gmv",
    "returning_host_gmv_share",
]
HOST_COLS = [
    "host_id",
    "host_name",
    "platform",
    "streams",
    "first_stream_at",
    "last_stream_at",
    "duration_s",
    "unique_viewers",
    "viewer_visits",
    "avg_viewers_per_stream",
    "repeat_viewers",
    "repeat_viewer_share",
    "total_watch_s",
    "avg_watch_s",
    "orders",
    "units",
    "gmv",
    "avg_gmv_per_stream",
    "gpm",
    "buyers",
    "refund_amount",
    "follows",
    "followers_gained",
    "peak_concurrent",
    "best_stream_id",
]
COHORT_COLS = ["host_id", "grain", "cohort", "period", "viewers", "cohort_size", "share"]
COHORT_GRAINS = ("day", "week")


def _rate(num: str, den: str) -> str:
    return f"CASE WHEN ({den}) > 0 THEN CAST({num} AS DOUBLE) / ({den}) END"


def _empty_slots(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""CREATE OR REPLACE TEMP TABLE a_slot_def (stream_id VARCHAR, slot_id VARCHAR, item_id VARCHAR,
                   host_id VARCHAR, s TIMESTAMPTZ, e TIMESTAMPTZ, price DOUBLE, currency VARCHAR)""")


def stream_tables_sql(con: duckdb.DuckDBPyConnection, host_source: str | None) -> None:
    """``a_viewer_stream``, ``a_stream_retention``, ``a_stream_slot`` from the analytics' ``a_ev``,
    ``a_sess``, ``a_span``, ``a_info`` (``analytics.analytics_sql`` ran on ``con``) and ``host_source``
    (clean host actions, or None: no slots)."""
    con.execute("""CREATE OR REPLACE TABLE a_viewer_stream AS
        WITH v AS (
            SELECT stream_id, user_id, any_value(platform) AS platform, min(ts) AS first_ts,
                   count(*) FILTER (type = 'follow') > 0 AS followed,
                   count(*) FILTER (type = 'purchase') AS orders,
                   coalesce(sum(price * quantity) FILTER (type = 'purchase'), 0) AS gmv
            FROM a_ev WHERE type <> 'refund' AND user_id IS NOT NULL GROUP BY stream_id, user_id),
        w AS (SELECT stream_id, user_id, count(*) AS sessions, sum(epoch(e) - epoch(s)) AS watch_s
              FROM a_sess GROUP BY stream_id, user_id)
        SELECT v.stream_id, v.platform, v.user_id, v.first_ts, coalesce(w.sessions, 0) AS sessions,
               coalesce(w.watch_s, 0.0) AS watch_s, v.followed, v.orders, CAST(v.gmv AS DOUBLE) AS gmv
        FROM v LEFT JOIN w USING (stream_id, user_id)""")
    # retention: viewers(t) = watchers with watch_s >= 60 t = watchers - those whose whole minutes < t
    con.execute(f"""CREATE OR REPLACE TABLE a_stream_retention AS
        WITH w AS (SELECT stream_id, least(floor(watch_s / 60), {MAX_CURVE_MIN})::INTEGER AS m
                   FROM a_viewer_stream WHERE sessions > 0),
        n AS (SELECT stream_id, count(*) AS watchers, max(m) AS last_m FROM w GROUP BY stream_id),
        h AS (SELECT stream_id, m, count(*) AS c FROM w GROUP BY stream_id, m),
        g AS (SELECT stream_id, watchers, unnest(range(0, last_m + 2)) AS minute FROM n),
        cum AS (SELECT g.stream_id, g.minute, g.watchers, coalesce(h.c, 0) AS c,
                       g.watchers - coalesce(sum(coalesce(h.c, 0)) OVER (
                           PARTITION BY g.stream_id ORDER BY g.minute
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS viewers
                FROM g LEFT JOIN h ON h.stream_id = g.stream_id AND h.m = g.minute)
        SELECT stream_id, CAST(minute AS INTEGER) AS minute, CAST(viewers AS BIGINT) AS viewers,
               CAST(viewers AS DOUBLE) / watchers AS share, CAST(c AS BIGINT) AS dropped
        FROM cum ORDER BY stream_id, minute""")
    # slots: a slot_start opens slot_id (the earliest one of that id); it ends at its slot_end or at the
    # stream's next slot_start, whichever is first (the live layer's rule, shared.live.state); a slot
    # still open at the end covers the rest of the stream
    if host_source is None:
        _empty_slots(con)
    else:
        cols = {d[0] for d in con.execute(f"SELECT * FROM {host_source} LIMIT 0").description}
        if not {"slot_id", "item_id"} <= cols:
            _empty_slots(con)
        else:
            first = "ORDER BY ts, event_id"
            con.execute(f"""CREATE OR REPLACE TEMP TABLE a_slot_def AS
                WITH st AS (
                    SELECT CAST(stream_id AS VARCHAR) AS stream_id, CAST(slot_id AS VARCHAR) AS slot_id,
                           first(CAST(item_id AS VARCHAR) {first}) AS item_id,
                           first(CAST(host_id AS VARCHAR) {first}) AS host_id, min(ts) AS s,
                           first(price {first}) AS price, first(CAST(currency AS VARCHAR) {first}) AS currency
                    FROM {host_source} WHERE type = 'slot_start' AND slot_id IS NOT NULL GROUP BY 1, 2),
                en AS (SELECT CAST(h.stream_id AS VARCHAR) AS stream_id, CAST(h.slot_id AS VARCHAR) AS slot_id,
                              min(h.ts) AS e
                       FROM {host_source} h JOIN st ON st.stream_id = CAST(h.stream_id AS VARCHAR)
                            AND st.slot_id = CAST(h.slot_id AS VARCHAR) AND h.ts >= st.s
                       WHERE h.type = 'slot_end' GROUP BY 1, 2)
                SELECT st.stream_id, st.slot_id, st.item_id, st.host_id, st.s,
                       least(en.e, lead(st.s) OVER (PARTITION BY st.stream_id ORDER BY st.s, st.slot_id)) AS e,
                       st.price, st.currency
                FROM st LEFT JOIN en USING (stream_id, slot_id)""")
    con.execute(f"""CREATE OR REPLACE TABLE a_stream_slot AS
        WITH d AS (
            SELECT sl.*, sl.e IS NULL AS open_ended,
                   -- an open slot is shown up to the stream's end (its stream_end, else its last event)
                   coalesce(sl.e, greatest(i.ended_at, sp."end"), sl.s) AS e_show
            FROM a_slot_def sl LEFT JOIN a_span sp USING (stream_id) LEFT JOIN a_info i USING (stream_id)),
        it AS (
            SELECT d.stream_id, d.slot_id,
                   count(*) FILTER (ev.type = 'product_impression') AS impressions,
                   count(*) FILTER (ev.type = 'product_click') AS clicks,
                   count(*) FILTER (ev.type = 'add_to_cart') AS add_to_carts,
                   count(*) FILTER (ev.type = 'purchase') AS orders,
                   coalesce(sum(ev.quantity) FILTER (ev.type = 'purchase'), 0) AS units,
                   coalesce(sum(ev.price * ev.quantity) FILTER (ev.type = 'purchase'), 0) AS gmv,
                   count(DISTINCT ev.user_id) FILTER (ev.type = 'purchase') AS buyers
            FROM d JOIN a_ev ev ON ev.stream_id = d.stream_id AND ev.item_id = d.item_id
                 AND ev.ts >= d.s AND (d.e IS NULL OR ev.ts < d.e)
            WHERE ev.type IN ('product_impression', 'product_click', 'add_to_cart', 'purchase')
            GROUP BY 1, 2),
        room AS (
            SELECT d.stream_id, d.slot_id, count(*) AS stream_orders,
                   coalesce(sum(ev.price * ev.quantity), 0) AS stream_gmv
            FROM d JOIN a_ev ev ON ev.stream_id = d.stream_id AND ev.ts >= d.s AND (d.e IS NULL OR ev.ts < d.e)
            WHERE ev.type = 'purchase' GROUP BY 1, 2),
        w AS (
            SELECT d.stream_id, d.slot_id, count(DISTINCT ss.user_id) AS viewers,
                   sum(epoch(least(ss.e, d.e_show)) - epoch(greatest(ss.s, d.s))) AS watch_s
            FROM d JOIN a_sess ss ON ss.stream_id = d.stream_id AND ss.s < d.e_show AND ss.e > d.s
            GROUP BY 1, 2)
        SELECT d.stream_id, d.slot_id, d.item_id, d.host_id, d.s AS start, d.e_show AS "end", d.open_ended,
               epoch(d.e_show) - epoch(d.s) AS duration_s, d.price, d.currency,
               coalesce(it.impressions, 0) AS impressions, coalesce(it.clicks, 0) AS clicks,
               coalesce(it.add_to_carts, 0) AS add_to_carts, coalesce(it.orders, 0) AS orders,
               CAST(coalesce(it.units, 0) AS BIGINT) AS units, CAST(coalesce(it.gmv, 0) AS DOUBLE) AS gmv,
               coalesce(it.buyers, 0) AS buyers,
               {_rate("it.clicks", "it.impressions")} AS ctr, {_rate("it.orders", "it.impressions")} AS conversion_rate,
               {_rate("coalesce(it.gmv, 0)", "(epoch(d.e_show) - epoch(d.s)) / 60.0")} AS gmv_per_min,
               coalesce(room.stream_orders, 0) AS stream_orders,
               CAST(coalesce(room.stream_gmv, 0) AS DOUBLE) AS stream_gmv,
               coalesce(w.viewers, 0) AS viewers,
               {_rate("coalesce(w.watch_s, 0)", "epoch(d.e_show) - epoch(d.s)")} AS avg_concurrent,
               {_rate("coalesce(it.gmv, 0) * 1000", "w.viewers")} AS gpm
        FROM d LEFT JOIN it USING (stream_id, slot_id) LEFT JOIN room USING (stream_id, slot_id)
             LEFT JOIN w USING (stream_id, slot_id)
        ORDER BY d.stream_id, d.s, d.slot_id""")


def derived_sql(con: duckdb.DuckDBPyConnection, stream_rel: str, viewer_rel: str, tz: str = "UTC") -> None:
    """``a_stream_audience``, ``a_host``, ``a_host_cohort`` from a relation of stream rows (the
    ``stream`` table: stream_id, platform, host_id, host_name, start, started_at, ...) and one of
    viewer visits (``viewer_stream``). ``tz``: the zone whose calendar days / weeks (Monday) the
    cohorts use. A stream's time is its first stream_start (``started_at``), else its first event."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE a_vs AS
        WITH s AS (SELECT CAST(stream_id AS VARCHAR) AS stream_id, CAST(host_id AS VARCHAR) AS host_id,
                          coalesce(started_at, start) AS stream_time FROM {stream_rel})
        SELECT v.stream_id, CAST(v.platform AS VARCHAR) AS platform, CAST(v.user_id AS VARCHAR) AS user_id,
               v.sessions, v.watch_s, v.followed, v.orders, v.gmv, s.host_id, s.stream_time,
               CASE WHEN s.host_id IS NOT NULL THEN min(s.stream_time) OVER (PARTITION BY s.host_id, v.user_id) END
                   AS first_host_time,
               min(s.stream_time) OVER (PARTITION BY v.platform, v.user_id) AS first_platform_time
        FROM {viewer_rel} v JOIN s USING (stream_id)""")
    ret = ", ".join(
        f"{_rate(f'count(*) FILTER (sessions > 0 AND watch_s >= {60 * t})', 'count(*) FILTER (sessions > 0)')}"
        f" AS retention_{t}m"
        for t in RETENTION_POINTS
    )
    ret_host = "host_id IS NOT NULL AND stream_time > first_host_time"
    con.execute(f"""CREATE OR REPLACE TABLE a_stream_audience AS
        WITH a AS (
            SELECT stream_id, any_value(host_id) AS host_id, any_value(platform) AS platform,
                   any_value(stream_time) AS stream_time, count(*) AS viewers,
                   count(*) FILTER (sessions > 0) AS watchers,
                   quantile_cont(watch_s, 0.5) FILTER (sessions > 0) AS median_watch_s,
                   quantile_cont(watch_s, 0.25) FILTER (sessions > 0) AS p25_watch_s,
                   quantile_cont(watch_s, 0.75) FILTER (sessions > 0) AS p75_watch_s, {ret},
                   count(*) FILTER (host_id IS NOT NULL AND stream_time = first_host_time) AS new_host_viewers,
                   count(*) FILTER ({ret_host}) AS returning_host_viewers,
                   count(*) FILTER (stream_time = first_platform_time) AS new_platform_viewers,
                   count(*) FILTER (stream_time > first_platform_time) AS returning_platform_viewers,
                   count(*) FILTER (followed) AS followers_gained,
                   count(*) FILTER (followed AND NOT ({ret_host})) AS new_viewer_followers,
                   coalesce(sum(gmv) FILTER ({ret_host}), 0) AS returning_host_gmv,
                   coalesce(sum(gmv), 0) AS gmv
            FROM a_vs GROUP BY stream_id)
        SELECT stream_id, host_id, platform, stream_time, viewers, watchers, median_watch_s, p25_watch_s,
               p75_watch_s, {", ".join(f"retention_{t}m" for t in RETENTION_POINTS)},
               CASE WHEN host_id IS NOT NULL THEN new_host_viewers END AS new_host_viewers,
               CASE WHEN host_id IS NOT NULL THEN returning_host_viewers END AS returning_host_viewers,
               CASE WHEN host_id IS NOT NULL THEN {_rate("returning_host_viewers", "viewers")} END
                   AS returning_host_share,
               new_platform_viewers, returning_platform_viewers,
               {_rate("returning_platform_viewers", "viewers")} AS returning_platform_share,
               followers_gained, {_rate("followers_gained", "viewers")} AS follow_rate, new_viewer_followers,
               CASE WHEN host_id IS NOT NULL THEN CAST(returning_host_gmv AS DOUBLE) END AS returning_host_gmv,
               CASE WHEN host_id IS NOT NULL THEN {_rate("returning_host_gmv", "gmv")} END AS returning_host_gmv_share
        FROM a ORDER BY stream_id""")
    con.execute(f"""CREATE OR REPLACE TABLE a_host AS
        WITH s AS (SELECT * FROM {stream_rel} WHERE host_id IS NOT NULL),
        agg AS (
            SELECT CAST(host_id AS VARCHAR) AS host_id,
                   first(host_name ORDER BY coalesce(started_at, start) DESC) FILTER (host_name IS NOT NULL)
                       AS host_name,
                   first(CAST(platform AS VARCHAR) ORDER BY coalesce(started_at, start)) AS platform,
                   count(*) AS streams, min(coalesce(started_at, start)) AS first_stream_at,
                   max(coalesce(started_at, start)) AS last_stream_at, CAST(sum(duration_s) AS DOUBLE) AS duration_s,
                   CAST(sum(unique_viewers) AS BIGINT) AS viewer_visits, CAST(sum(total_watch_s) AS DOUBLE) AS total_watch_s,
                   CAST(sum(orders) AS BIGINT) AS orders, CAST(sum(units) AS BIGINT) AS units, CAST(sum(gmv) AS DOUBLE) AS gmv,
                   CAST(sum(refund_amount) AS DOUBLE) AS refund_amount, CAST(sum(follows) AS BIGINT) AS follows,
                   CAST(max(peak_concurrent) AS BIGINT) AS peak_concurrent,
                   first(CAST(stream_id AS VARCHAR) ORDER BY gmv DESC, stream_id) AS best_stream_id
            FROM s GROUP BY 1),
        per AS (SELECT host_id, user_id, count(*) AS visits, bool_or(followed) AS followed,
                       CAST(sum(orders) AS BIGINT) AS orders, sum(sessions) AS sessions
                FROM a_vs WHERE host_id IS NOT NULL GROUP BY 1, 2),
        v AS (SELECT host_id, count(*) AS unique_viewers, count(*) FILTER (visits >= 2) AS repeat_viewers,
                     count(*) FILTER (followed) AS followers_gained, count(*) FILTER (orders > 0) AS buyers,
                     sum(visits) FILTER (sessions > 0) AS watcher_visits
              FROM per GROUP BY 1)
        SELECT agg.host_id, agg.host_name, agg.platform, agg.streams, agg.first_stream_at, agg.last_stream_at,
               agg.duration_s, coalesce(v.unique_viewers, 0) AS unique_viewers, agg.viewer_visits,
               {_rate("agg.viewer_visits", "agg.streams")} AS avg_viewers_per_stream,
               coalesce(v.repeat_viewers, 0) AS repeat_viewers,
               {_rate("v.repeat_viewers", "v.unique_viewers")} AS repeat_viewer_share,
               agg.total_watch_s, {_rate("agg.total_watch_s", "v.watcher_visits")} AS avg_watch_s,
               agg.orders, agg.units, agg.gmv, {_rate("agg.gmv", "agg.streams")} AS avg_gmv_per_stream,
               {_rate("agg.gmv * 1000", "agg.viewer_visits")} AS gpm, coalesce(v.buyers, 0) AS buyers,
               agg.refund_amount, agg.follows, coalesce(v.followers_gained, 0) AS followers_gained,
               agg.peak_concurrent, agg.best_stream_id
        FROM agg LEFT JOIN v USING (host_id) ORDER BY agg.host_id""")
    tzq = tz.replace("'", "''")
    con.execute(f"""CREATE OR REPLACE TABLE a_host_cohort AS
        WITH d AS (SELECT DISTINCT host_id, user_id, CAST(timezone('{tzq}', stream_time) AS DATE) AS day
                   FROM a_vs WHERE host_id IS NOT NULL),
        p AS (SELECT DISTINCT host_id, user_id, 'day' AS grain, day AS period_start FROM d
              UNION ALL
              SELECT DISTINCT host_id, user_id, 'week', CAST(date_trunc('week', day) AS DATE) FROM d),
        c AS (SELECT *, min(period_start) OVER (PARTITION BY host_id, grain, user_id) AS cohort FROM p),
        sz AS (SELECT host_id, grain, cohort, count(*) AS cohort_size FROM c WHERE period_start = cohort
               GROUP BY ALL)
        SELECT c.host_id, c.grain, c.cohort,
               CAST(CASE WHEN c.grain = 'day' THEN datediff('day', c.cohort, c.period_start)
                         ELSE datediff('day', c.cohort, c.period_start) // 7 END AS INTEGER) AS period,
               count(*) AS viewers, any_value(sz.cohort_size) AS cohort_size,
               CAST(count(*) AS DOUBLE) / any_value(sz.cohort_size) AS share
        FROM c JOIN sz USING (host_id, grain, cohort)
        GROUP BY c.host_id, c.grain, c.cohort, period ORDER BY ALL""")


def compute(con: duckdb.DuckDBPyConnection, host_source: str | None, tz: str = "UTC") -> None:
    """Both kinds over one batch (``analytics_sql`` ran on ``con``, ``a_stream`` is the whole stream table)."""
    stream_tables_sql(con, host_source)
    derived_sql(con, "a_stream", "a_viewer_stream", tz)
