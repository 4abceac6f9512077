"""clean: a scheduler tick (Pub/Sub push on topic ``clean-tick``, hourly) cleans the raw objects not
yet in ``state/clean-manifest.json`` into clean/, quarantine/, analytics/, reports/clean/ and
publishes the run's summary on ``events-cleaned`` (before the commit, the dashboard overview's charts are
rendered into analytics/charts/: shared/dashboard/prerender.py; a commit made without them, by the Beam or
Dataflow engine, gets them on the tick after it); then the batch alert rules are evaluated
(shared/pipeline/alerts.py: quarantine rate, dead-letter depth, model promotion streak, GMV vs the host's
typical rate) and what fires is recorded under ``alerts/`` and published on ``alerts``.

An exception answers 500 so Pub/Sub retries the tick; a retried or duplicated tick is a no-op or
a fresh run (nothing is half-committed: the manifest moves last, with a generation precondition).
The tick's body is not read (fault injection goes through ``shared.runtime.faults`` only).
"""

import json

import functions_framework

from shared import runtime
from shared.log import get_logger
from shared.pipeline import alerts, engine

log = get_logger("clean")


def _charts(store, run_id: str, analytics: dict[str, str]) -> str | None:
    """The dashboard overview's charts, pre-rendered (imported here, on the run, not at cold start)."""
    from shared.dashboard import prerender

    return prerender.write_overview(store, run_id, analytics)


def _ensure_charts(store) -> None:
    """A commit without them (the Beam / Dataflow engines, a store cleaned before they existed): rendered now.
    Never raises (the run is committed; the dashboard renders them on request meanwhile)."""
    try:
        from shared.dashboard import prerender

        prerender.ensure_overview(store)  # reads the manifest; renders only when it names a stream table, no charts
    except Exception as exc:
        log.warning("charts not pre-rendered", extra={"error": f"{type(exc).__name__}: {exc}"})


@functions_framework.cloud_event
def clean(cloud_event):
    store, bus = runtime.get_store(), runtime.get_bus()
    # DAIHUO_CLEAN_ENGINE: duckdb (default, in this function) or beam (shared/pipeline/engine.py)
    # the overview page's charts are rendered here, once per run, not on a cold dashboard instance
    summary = engine.run(store, bus, charts=_charts)
    _ensure_charts(store)
    alerts.after_clean(store, bus, summary)  # never raises: the run is committed
    return json.dumps({k: summary.get(k) for k in ("status", "run_id", "rows_in", "rows_out", "dropped")})
