"""The live layer: what is happening in a room now, within seconds (docs/live.md).

``schema``  the Bigtable table: row keys, column families, garbage-collection rules, table creation.
``apply``   the writer: one Pub/Sub message (an NDJSON group of ingest) -> exact, idempotent updates.
``reader``  the read API for recommend, the live dashboard and the live-vs-batch check.
"""
