"""Live-commerce KPI tables from clean events (definitions: docs/metrics.md).

``analytics_sql(con, source, max_session_s)`` creates three DuckDB tables from a relation ``source``
holding clean events (the clean/ schema): ``a_stream``, ``a_stream_hour``, ``a_stream_item``.
``compute_analytics(clean_table)`` is the pure Arrow-in / Arrow-out wrapper.

Sessions (per stream and viewer, from stream_enter / stream_leave in ts order, enter before leave at
the same instant): an enter opens a session unless one is open (a repeated enter is ignored); a leave
closes the open session (a leave with no open session is ignored). A session that is never closed
ends at min(the stream's last event, enter + max_session_s). The stream's span is the host's: from its
first stream_start to its last stream_end when the host actions hold them (a viewer event outside
them has a device clock off: it counts in the totals, it does not stretch the stream). Without them
(refunds excluded: a refund days later does not stretch the stream) it starts at its first event NOT flagged ``late`` (a device
whose clock is hours behind sends events that look hours old: they must not pull the start back; all
events if the stream has only late ones) and ends at its last event, late or not (a late event's ts is
never after the real time it happened, so it cannot stretch the end). Late events still count in every
total; only the span (and what derives from it: duration, per-minute rates, avg concurrency, hour
rows' ``active_s``) ignores them.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

STREAM_COLS = [
    "stream_id",
    "platform",
    "start",
    "end",
    "duration_s",
    "unique_viewers",
    "sessions",
    "peak_concurrent",
    "avg_concurrent",
    "total_watch_s",
    "avg_watch_s",
    "likes",
    "comments",
    "shares",
    "follows",
    "gifts",
    "gift_value",
    "likes_per_min",
    "comments_per_min",
    "shares_per_min",
    "follows_per_min",
    "gifts_per_min",
    "impressions",
    "clicks",
    "add_to_carts",
    "orders",
    "units",
    "gmv",
    "refunds",
    "refund_units",
    "refund_amount",
    "ctr",
    "cart_rate",
    "order_rate",
    "conversion_rate",
    "gpm",
    "buyers",
    # from the stream's host actions (clean_host): null when no stream_start / stream_end was seen
    "title",
    "host_id",
    "host_name",
    "started_at",
    "ended_at",
]
INFO_COLS = ["title", "host_id", "host_name", "started_at", "ended_at"]


def _rate(num: str, den: str) -> str:
    return f"CASE WHEN ({den}) > 0 THEN CAST({num} AS DOUBLE) / ({den}) END"


def stream_info_sql(con: duckdb.DuckDBPyConnection, host_source: str | None) -> None:
    """``a_info``: per stream, what its host actions say -- the latest stream_start's title, host id and
    name (the host id of any host action if no stream_start named one), ``started_at`` = the first
    stream_start, ``ended_at`` = the last stream_end (null when none was seen)."""
    if host_source is None:
        con.execute("""CREATE OR REPLACE TEMP TABLE a_info (stream_id VARCHAR, title VARCHAR, host_id VARCHAR,
                       host_name VARCHAR, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ)""")
        return
    latest = "ORDER BY ts DESC, event_id DESC"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE a_info AS
        SELECT CAST(stream_id AS VARCHAR) AS stream_id,
               first(title {latest}) FILTER (type = 'stream_start' AND title IS NOT NULL) AS title,
               coalesce(first(CAST(host_id AS VARCHAR) {latest}) FILTER (type = 'stream_start' AND host_id IS NOT NULL),
                        first(CAST(host_id AS VARCHAR) {latest}) FILTER (host_id IS NOT NULL)) AS host_id,
               first(host_name {latest}) FILTER (type = 'stream_start' AND host_name IS NOT NULL) AS host_name,
               min(ts) FILTER (type = 'stream_start') AS started_at,
               max(ts) FILTER (type = 'stream_end') AS ended_at
        FROM {host_source} GROUP BY 1""")


def analytics_sql(
    con: duckdb.DuckDBPyConnection, source: str, max_session_s: float = 4 * 3600.0, host_source: str | None = None
) -> None:
    """The KPI tables from ``source`` (clean viewer events); ``host_source`` (clean host actions, or None)
    adds each stream's title, host and start/end (``INFO_COLS``) to ``a_stream``."""
    stream_info_sql(con, host_source)
    cols = {d[0] for d in con.execute(f"SELECT * FROM {source} LIMIT 0").description}
    late = "coalesce(late, false)" if "late" in cols else "false"  # (hand-made inputs may omit the flag)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE a_ev AS
        SELECT CAST(stream_id AS VARCHAR) AS stream_id, CAST(platform AS VARCHAR) AS platform,
               CAST(user_id AS VARCHAR) AS user_id, CAST(item_id AS VARCHAR) AS item_id,
               CAST(type AS VARCHAR) AS type, ts, price, CAST(currency AS VARCHAR) AS currency, quantity, count,
               gift_value, {late} AS late
        FROM {source}""")
    # the span: the host's stream_start / stream_end when seen (a clock-skewed viewer event outside them
    # must not stretch the stream), else the events' (see the module docstring)
    con.execute("""CREATE OR REPLACE TEMP TABLE a_span AS
        WITH e AS (
            SELECT stream_id, any_value(platform) AS platform,
                   coalesce(min(ts) FILTER (type <> 'refund' AND NOT late), min(ts) FILTER (type <> 'refund')) AS start,
                   max(ts) FILTER (type <> 'refund') AS "end"
            FROM a_ev GROUP BY stream_id),
        s AS (SELECT e.stream_id, e.platform, coalesce(i.started_at, e.start) AS start, e."end", i.ended_at
              FROM e LEFT JOIN a_info i USING (stream_id))
        SELECT stream_id, platform, start,
               CASE WHEN ended_at IS NOT NULL AND (start IS NULL OR ended_at >= start) THEN ended_at
                    ELSE greatest("end", start) END AS "end"
        FROM s""")
    # --- sessions ---------------------------------------------------------------------------
    con.execute(f"""CREATE OR REPLACE TEMP TABLE a_sess AS
        WITH el AS (
            SELECT stream_id, user_id, ts, type = 'stream_leave' AS is_leave,
                   coalesce(sum(CASE WHEN type = 'stream_leave' THEN 1 ELSE 0 END) OVER (
                       PARTITION BY stream_id, user_id ORDER BY ts, type = 'stream_leave'
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS grp
            FROM a_ev WHERE type IN ('stream_enter', 'stream_leave')),
        g AS (
            SELECT stream_id, user_id, grp, min(ts) FILTER (NOT is_leave) AS s, max(ts) FILTER (is_leave) AS e
            FROM el GROUP BY ALL)
        SELECT g.stream_id, g.user_id, g.s AS s,
               CASE WHEN g.e IS NOT NULL THEN g.e
                    -- (an enter after the host's stream_end, a device clock ahead: an empty session)
                    ELSE greatest(g.s, least(sp."end", g.s + to_microseconds(CAST({int(max_session_s * 1e6)} AS BIGINT))))
               END AS e,
               g.e IS NULL AS open_ended
        FROM g JOIN a_span sp USING (stream_id) WHERE g.s IS NOT NULL""")
    # running concurrency: ends before starts at the same instant
    con.execute("""CREATE OR REPLACE TEMP TABLE a_delta AS
        SELECT stream_id, t, d, sum(d) OVER (PARTITION BY stream_id ORDER BY t, d, k
                                               ROWS UNBOUNDED PRECEDING) AS level
        FROM (SELECT stream_id, s AS t, 1 AS d, 1 AS k FROM a_sess
              UNION ALL SELECT stream_id, e AS t, -1 AS d, 1 AS k FROM a_sess
              UNION ALL SELECT stream_id, h AS t, 0 AS d, 0 AS k FROM (
                  SELECT stream_id, unnest(generate_series(date_trunc('hour', start), "end", INTERVAL 1 HOUR)) AS h
                  FROM a_span WHERE start IS NOT NULL))""")
    ev_counts = """count(*) FILTER (type = 'like') AS like_events,
        coalesce(sum(coalesce(count, 1)) FILTER (type = 'like'), 0) AS likes,
        count(*) FILTER (type = 'comment') AS comments, count(*) FILTER (type = 'share') AS shares,
        count(*) FILTER (type = 'follow') AS follows, count(*) FILTER (type = 'gift') AS gifts,
        coalesce(sum(gift_value) FILTER (type = 'gift'), 0) AS gift_value,
        count(*) FILTER (type = 'product_impression') AS impressions,
        count(*) FILTER (type = 'product_click') AS clicks,
        count(*) FILTER (type = 'add_to_cart') AS add_to_carts,
        count(*) FILTER (type = 'purchase') AS orders,
        coalesce(sum(quantity) FILTER (type = 'purchase'), 0) AS units,
        coalesce(sum(price * quantity) FILTER (type = 'purchase'), 0) AS gmv,
        count(DISTINCT user_id) FILTER (type = 'purchase') AS buyers,
        count(*) FILTER (type = 'refund') AS refunds,
        coalesce(sum(quantity) FILTER (type = 'refund'), 0) AS refund_units,
        coalesce(sum(coalesce(price, 0) * quantity) FILTER (type = 'refund'), 0) AS refund_amount"""
    rates = f"""{_rate("clicks", "impressions")} AS ctr, {_rate("add_to_carts", "clicks")} AS cart_rate,
        {_rate("orders", "add_to_carts")} AS order_rate, {_rate("orders", "impressions")} AS conversion_rate"""
    per_min = ", ".join(
        f"{_rate(m, 'duration_s / 60.0')} AS {m}_per_min" for m in ("likes", "comments", "shares", "follows", "gifts")
    )
    con.execute(f"""CREATE OR REPLACE TABLE a_stream AS
        WITH c AS (SELECT stream_id, {ev_counts},
                          count(DISTINCT user_id) FILTER (type <> 'refund') AS unique_viewers
                   FROM a_ev GROUP BY stream_id),
        w AS (SELECT stream_id, count(*) AS sessions, sum(epoch(e) - epoch(s)) AS total_watch_s,
                     count(DISTINCT user_id) AS watchers FROM a_sess GROUP BY stream_id),
        p AS (SELECT stream_id, max(level) AS peak_concurrent FROM a_delta GROUP BY stream_id),
        b AS (SELECT sp.stream_id, sp.platform, sp.start, sp."end",
                     coalesce(epoch(sp."end") - epoch(sp.start), 0) AS duration_s, c.*  EXCLUDE (stream_id),
                     coalesce(w.sessions, 0) AS sessions, coalesce(w.total_watch_s, 0) AS total_watch_s,
                     coalesce(w.watchers, 0) AS watchers, coalesce(p.peak_concurrent, 0) AS peak_concurrent
              FROM a_span sp JOIN c USING (stream_id) LEFT JOIN w USING (stream_id) LEFT JOIN p USING (stream_id))
        SELECT b.*, {_rate("total_watch_s", "duration_s")} AS avg_concurrent,
               {_rate("total_watch_s", "watchers")} AS avg_watch_s, {per_min}, {rates},
               {_rate("gmv * 1000", "unique_viewers")} AS gpm, {", ".join(f"i.{c}" for c in INFO_COLS)}
        FROM b LEFT JOIN a_info i USING (stream_id) ORDER BY stream_id""")
    # --- per stream-hour ----------------------------------------------------------------------
    con.execute(f"""CREATE OR REPLACE TABLE a_stream_hour AS
        WITH hrs AS (
            SELECT DISTINCT stream_id, hour FROM (
                SELECT stream_id, unnest(generate_series(date_trunc('hour', start), "end", INTERVAL 1 HOUR)) AS hour
                FROM a_span WHERE start IS NOT NULL
                UNION ALL SELECT stream_id, date_trunc('hour', ts) FROM a_ev)),
        act AS (  -- seconds of the hour inside the stream's span
            SELECT h.stream_id, h.hour, greatest(0, epoch(least(sp."end", h.hour + INTERVAL 1 HOUR))
                                                 - epoch(greatest(sp.start, h.hour))) AS active_s
            FROM hrs h JOIN a_span sp USING (stream_id)),
        c AS (SELECT stream_id, date_trunc('hour', ts) AS hour, {ev_counts} FROM a_ev GROUP BY ALL),
        w AS (SELECT h.stream_id, h.hour, count(DISTINCT s.user_id) AS unique_viewers,
                     sum(epoch(least(s.e, h.hour + INTERVAL 1 HOUR)) - epoch(greatest(s.s, h.hour))) AS watch_s
              FROM hrs h JOIN a_sess s ON s.stream_id = h.stream_id
                   AND s.s < h.hour + INTERVAL 1 HOUR AND s.e > h.hour
              GROUP BY ALL),
        p AS (SELECT stream_id, date_trunc('hour', t) AS hour, max(level) AS peak_concurrent FROM a_delta GROUP BY ALL)
        SELECT a.stream_id, a.hour, a.active_s, coalesce(w.unique_viewers, 0) AS unique_viewers,
               coalesce(p.peak_concurrent, 0) AS peak_concurrent,
               {_rate("coalesce(w.watch_s, 0)", "a.active_s")} AS avg_concurrent,
               coalesce(w.watch_s, 0) AS total_watch_s, {_rate("w.watch_s", "w.unique_viewers")} AS avg_watch_s,
               c.* EXCLUDE (stream_id, hour),
               {", ".join(f"{_rate(f'c.{m}', 'a.active_s / 60.0')} AS {m}_per_min" for m in ("likes", "comments", "shares", "follows", "gifts"))},
               {_rate("c.clicks", "c.impressions")} AS ctr, {_rate("c.add_to_carts", "c.clicks")} AS cart_rate,
               {_rate("c.orders", "c.add_to_carts")} AS order_rate, {_rate("c.orders", "c.impressions")} AS conversion_rate,
               {_rate("c.gmv * 1000", "w.unique_viewers")} AS gpm
        FROM act a LEFT JOIN c USING (stream_id, hour) LEFT JOIN w USING (stream_id, hour)
             LEFT JOIN p USING (stream_id, hour)
        ORDER BY a.stream_id, a.hour""")
    hour_zeros(con)
    # --- per item in each stream --------------------------------------------------------------
    con.execute(f"""CREATE OR REPLACE TABLE a_stream_item AS
        SELECT stream_id, item_id,
               count(*) FILTER (type = 'product_impression') AS impressions,
               count(*) FILTER (type = 'product_click') AS clicks,
               count(*) FILTER (type = 'add_to_cart') AS add_to_carts,
               count(*) FILTER (type = 'purchase') AS orders,
               coalesce(sum(quantity) FILTER (type = 'purchase'), 0) AS units,
               coalesce(sum(price * quantity) FILTER (type = 'purchase'), 0) AS gmv,
               count(*) FILTER (type = 'refund') AS refunds,
               {_rate("count(*) FILTER (type = 'product_click')", "count(*) FILTER (type = 'product_impression')")} AS ctr,
               {_rate("count(*) FILTER (type = 'purchase')", "count(*) FILTER (type = 'product_impression')")} AS conversion_rate
        FROM a_ev WHERE item_id IS NOT NULL GROUP BY ALL ORDER BY stream_id, item_id""")


def hour_zeros(con: duckdb.DuckDBPyConnection, table: str = "a_stream_hour") -> None:
    """An hour without a count says 0, not NULL (an UPDATE after the hour table is built; the Beam engine
    runs it again on its merged table, so the two tables' Parquet files are alike column for column)."""
    for col in (
        "like_events",
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
        "buyers",
        "refunds",
        "refund_units",
    ):
        con.execute(f"UPDATE {table} SET {col} = coalesce({col}, 0)")
    for col in ("gift_value", "gmv", "refund_amount"):
        con.execute(f"UPDATE {table} SET {col} = coalesce({col}, 0.0)")


def compute_analytics(
    clean: pa.Table, max_session_s: float = 4 * 3600.0, host: pa.Table | None = None
) -> dict[str, pa.Table]:
    """Pure wrapper: clean events (Arrow; ``host``: clean host actions) -> every analytics table
    (``layout.ANALYTICS_TABLES``: stream, stream_hour, stream_item and the host / audience tables of
    ``shared.pipeline.host_kpis``, the experiment tables of ``shared.pipeline.experiments``) as Arrow
    tables. Cohort days in ``DAIHUO_DASHBOARD_TZ``."""
    from shared.layout import ANALYTICS_TABLES
    from shared.pipeline import experiments, host_kpis
    from shared.settings import settings

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        con.register("clean_src", clean)
        if host is not None:
            con.register("host_src", host)
        hsrc = "host_src" if host is not None else None
        analytics_sql(con, "clean_src", max_session_s, host_source=hsrc)
        host_kpis.compute(con, hsrc, settings().dashboard_tz)
        experiments.compute(con, "clean_src")
        return {name: con.sql(f"SELECT * FROM a_{name}").to_arrow_table() for name in ANALYTICS_TABLES}
    finally:
        con.close()
