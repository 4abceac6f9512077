"""The object-store layout: every key and prefix Daihuo writes, and the clean manifest (typed).

One bucket (``DAIHUO_STORE``) holds everything, under these prefixes (docs/storage.md, "Layout")::

    raw/date=YYYY-MM-DD/hour=HH/<hash>.ndjson.gz        archive: the events as received (create-only)
    raw/date=.../replay-<hash>.ndjson.gz                 replay: corrected quarantine rows
    raw/pubsub/YYYY-MM-DD/hh_mm_ssZ_<uuid>.ndjson        the Pub/Sub Cloud Storage subscription, when it
                                                         replaces archive (infra var.raw_writer, text format)
    quarantine/ingest/date=YYYY-MM-DD/<ms>-<uuid>.ndjson.gz   ingest: refused events, with reasons
    quarantine/live/date=YYYY-MM-DD/<ms>-<id>.ndjson.gz  live: malformed messages / lines, with reasons
    quarantine/date=YYYY-MM-DD/<run>.ndjson.gz           clean: refused rows, with reasons
    clean/date=YYYY-MM-DD/<run>.parquet                  clean: one row per event_id, typed, UTC
    clean_host/date=YYYY-MM-DD/<run>.parquet             clean: the host actions (manifest: host_files)
    catalog/<run>.parquet                                clean: catalog_item records
    analytics/<table>/<run>.parquet                      clean: the dashboard's tables (ANALYTICS_TABLES)
    analytics/charts/<run>.json                          clean: the overview page's charts, pre-rendered (SVG)
    reports/clean/<run>.json                             clean: a run's summary and data-quality report
    state/clean-manifest.json                            clean: what is COMMITTED (Manifest, below)
    state/dedupe/<run>.parquet                           clean: the dedupe index, one part per run
    state/erasure.json                                   erase: the erasure list (shared.erasure)
    state/faults/<function>-<point>                      tests: fault-injection markers (shared.runtime)
    models/<version>/arrays.npz, models/<version>/meta.json   train: immutable model versions
    models/LATEST.json                                   train: the served version's pointer (CAS)
    models/EXPERIMENT.json                               operator: the serving experiment (A/B arms)
    neighbours/<id>/arrays.npz, neighbours/<id>/meta.json   itemknn (Beam): immutable item-item neighbour lists
    neighbours/LATEST.json                               itemknn (Beam): the newest lists' pointer (CAS)
    alerts/date=YYYY-MM-DD/<id>.json                     clean, live: one fired alert (create-only, docs/alerts.md)
    alerts/sent/<id>                                     clean, live: the alert reached the alerts topic
    state/host-rates.json                                clean: each host's typical GMV per minute (the live alert rule)

Readers only trust what the manifest names: a run that crashed or lost the commit race leaves
objects nobody references. The manifest moves by compare-and-swap on its generation
(:func:`commit_manifest`, :func:`update_manifest`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.adapters.storage import NotFound, ObjectStore, PreconditionFailed

# -- prefixes ------------------------------------------------------------------------------------
RAW = "raw/"
QUARANTINE = "quarantine/"
INGEST_QUARANTINE = QUARANTINE + "ingest/"
LIVE_QUARANTINE = QUARANTINE + "live/"
CLEAN = "clean/"
CLEAN_HOST = "clean_host/"
CATALOG = "catalog/"
ANALYTICS = "analytics/"
REPORTS = "reports/"
CLEAN_REPORTS = REPORTS + "clean/"
STATE = "state/"
DEDUPE = STATE + "dedupe/"
FAULTS = STATE + "faults/"
MODELS = "models/"
NEIGHBOURS = "neighbours/"
ALERTS = "alerts/"
ALERTS_SENT = ALERTS + "sent/"

# -- single objects ------------------------------------------------------------------------------
MANIFEST = STATE + "clean-manifest.json"
ERASURE = STATE + "erasure.json"
HOST_RATES = STATE + "host-rates.json"
LATEST = MODELS + "LATEST.json"
#: the serving experiment's config (shared/serving/experiments.py), written by the operator
EXPERIMENT = MODELS + "EXPERIMENT.json"
#: the newest item-item neighbour lists the Beam job wrote (pipelines/beam/itemknn.py, shared/neighbour_lists.py)
NEIGHBOURS_LATEST = NEIGHBOURS + "LATEST.json"

#: the analytics tables clean writes (``analytics/<name>/<run>.parquet``, named by the manifest)
ANALYTICS_TABLES = (
    "stream",
    "stream_hour",
    "stream_item",
    # host and audience KPIs (shared/pipeline/host_kpis.py): per stream, then across a host's streams
    "viewer_stream",
    "stream_retention",
    "stream_slot",
    "stream_audience",
    "host",
    "host_cohort",
    # recommendation experiments (shared/pipeline/experiments.py): per stream and viewer, then per arm
    "rec_viewer",
    "experiment",
)
#: the analytics tables holding viewer ids (one row per stream and viewer): never served by the
#: dashboard or the API; the erasure job rewrites them like clean/
VIEWER_TABLES = ("viewer_stream", "rec_viewer")
#: the prefixes retention applies to (``DAIHUO_RETENTION_DAYS``): partitioned by date
RETENTION_PREFIXES = ("raw", "clean", "quarantine")
#: every prefix that may hold a viewer's rows (the erasure job rewrites them)
PERSONAL_PREFIXES = (RAW, CLEAN, QUARANTINE, DEDUPE, CATALOG, ANALYTICS, REPORTS)

# ``date=YYYY-MM-DD`` partitions; under raw/pubsub/ the Cloud Storage subscription's own datetime
# directory (its filename_datetime_format cannot write the literal "date="), see RAW_SUBSCRIPTION
DATE_RE = re.compile(r"(?:^|/)(?:date=|(?<=^raw/pubsub/))(\d{4}-\d{2}-\d{2})(?:/|$)")
MODEL_META_RE = re.compile(r"^models/([^/]+)/meta\.json$")


# The Pub/Sub Cloud Storage subscription (infra/pubsub.tf, var.raw_writer = "subscription") names its
# objects <filename_prefix><datetime>_<uuid><filename_suffix>; with the prefix, datetime format and
# suffix below, raw/pubsub/2026-12-02/19_37_05Z_<uuid>.ndjson. Text format: each message's data
# followed by a newline, NOT compressed.
RAW_SUBSCRIPTION_PREFIX = RAW + "pubsub/"
RAW_SUBSCRIPTION_DATETIME_FORMAT = "YYYY-MM-DD/hh_mm_ssZ"
RAW_SUBSCRIPTION_SUFFIX = ".ndjson"
RAW_SUFFIXES = (".ndjson.gz", RAW_SUBSCRIPTION_SUFFIX)  # what clean lists as raw objects


def is_raw_object(key: str) -> bool:
    """A raw object clean reads: archive's and replay's ``.ndjson.gz``, the subscription's ``.ndjson``."""
    return key.startswith(RAW) and key.endswith(RAW_SUFFIXES)


def raw_key(partition: str, digest: str) -> str:
    """``partition`` = ``date=YYYY-MM-DD/hour=HH``."""
    return f"{RAW}{partition}/{digest}.ndjson.gz"


def replay_key(partition: str, digest: str) -> str:
    return f"{RAW}{partition}/replay-{digest}.ndjson.gz"


def ingest_quarantine_key(day: str, millis: int, unique: str) -> str:
    return f"{INGEST_QUARANTINE}date={day}/{millis:013d}-{unique}.ndjson.gz"


def live_quarantine_key(day: str, millis: int, unique: str) -> str:
    return f"{LIVE_QUARANTINE}date={day}/{millis:013d}-{unique}.ndjson.gz"


def quarantine_key(day: str, run_id: str) -> str:
    return f"{QUARANTINE}date={day}/{run_id}.ndjson.gz"


def clean_key(day: str, run_id: str) -> str:
    return f"{CLEAN}date={day}/{run_id}.parquet"


def clean_host_key(day: str, run_id: str) -> str:
    return f"{CLEAN_HOST}date={day}/{run_id}.parquet"


def catalog_key(run_id: str) -> str:
    return f"{CATALOG}{run_id}.parquet"


def dedupe_key(run_id: str) -> str:
    return f"{DEDUPE}{run_id}.parquet"


def analytics_key(table: str, run_id: str) -> str:
    return f"{ANALYTICS}{table}/{run_id}.parquet"


def charts_key(run_id: str) -> str:
    """The overview page's charts pre-rendered by clean run ``run_id`` (shared/dashboard/prerender.py)."""
    return f"{ANALYTICS}charts/{run_id}.json"


def clean_report_key(run_id: str) -> str:
    return f"{CLEAN_REPORTS}{run_id}.json"


def fault_key(point: str) -> str:
    """The marker of a fault point (``clean:write_clean`` -> ``state/faults/clean-write_clean``)."""
    return f"{FAULTS}{point.replace(':', '-')}"


def model_prefix(version: str) -> str:
    return f"{MODELS}{version}/"


def model_arrays_key(version: str) -> str:
    return f"{MODELS}{version}/arrays.npz"


def model_meta_key(version: str) -> str:
    return f"{MODELS}{version}/meta.json"


def neighbours_arrays_key(lists_id: str) -> str:
    return f"{NEIGHBOURS}{lists_id}/arrays.npz"


def neighbours_meta_key(lists_id: str) -> str:
    return f"{NEIGHBOURS}{lists_id}/meta.json"


def alert_key(day: str, alert_id: str) -> str:
    """``day``: the UTC date of the alert's ``time`` (deterministic: a re-evaluation finds it)."""
    return f"{ALERTS}date={day}/{alert_id}.json"


def alert_sent_key(alert_id: str) -> str:
    return f"{ALERTS_SENT}{alert_id}"


def partition_date(key: str) -> str | None:
    """The ``date=YYYY-MM-DD`` partition a key lies in, or None."""
    m = DATE_RE.search(key)
    return m.group(1) if m else None


def window_keys(keys: list[str], window_days: float, newest: str | None = None) -> list[str]:
    """The clean objects a training window of ``window_days`` ending on day ``newest`` (default: the
    newest date partition among ``keys``) may hold events of: date partitions from ``newest - (ceil(
    window_days) + 1)`` days to ``newest``, and every key without a date partition. Sorted. (Train reads
    these, ``shared.serving.data``, and so does the Beam item-item job: one rule.)"""
    import math
    from datetime import date, timedelta

    dates = {k: partition_date(k) for k in sorted(set(keys))}
    if newest is None:
        newest = max((d for d in dates.values() if d), default=None)
    if newest is None:
        return list(dates)
    first_day = (date.fromisoformat(newest) - timedelta(days=int(math.ceil(window_days)) + 1)).isoformat()
    return [k for k, d in dates.items() if d is None or first_day <= d <= newest]


# -- the clean manifest --------------------------------------------------------------------------
class _Record(BaseModel):
    """A JSON object with typed fields; also read like a dict (``m["done"]``, ``m.get("runs", [])``).
    An optional field that is None is ABSENT (not in it, not written): the JSON it came from did not
    have it."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    def _has(self, name: str) -> bool:
        if name in type(self).model_fields:
            return getattr(self, name) is not None
        return name in (self.model_extra or {})

    def __getitem__(self, name: str) -> Any:
        if self._has(name):
            return getattr(self, name)
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._has(name)

    def keys(self) -> Iterator[str]:
        yield from (n for n in type(self).model_fields if getattr(self, n) is not None)
        yield from self.model_extra or {}


class CleanFile(_Record):
    key: str  # clean/date=.../<run>.parquet
    streams: list[str] = Field(default_factory=list)  # the stream ids it holds (readers skip the others)


class Run(_Record):
    run_id: str
    report: str  # reports/clean/<run>.json
    published: bool = False  # its summary reached events-cleaned (else the next run republishes it)
    raw_objects: int = 0
    rows_out: int = 0
    at: str | None = None  # ISO time of the commit (the look-back forgets runs by it)


class Manifest(_Record):
    """``state/clean-manifest.json``: what clean has COMMITTED. Readers use only the objects it names."""

    version: int = 1
    seq: int = 0  # commits so far
    done: list[str] = Field(default_factory=list)  # raw objects already cleaned (within the look-back)
    runs: list[Run] = Field(default_factory=list)
    clean_files: list[CleanFile] = Field(default_factory=list)
    host_files: list[CleanFile] | None = None  # clean_host/ files (absent until a run cleaned host actions)
    dedupe: list[str] = Field(default_factory=list)  # the dedupe index's parts
    catalog: list[str] = Field(default_factory=list)  # catalog parts, oldest first (the latest record wins)
    analytics: dict[str, str | None] = Field(default_factory=dict)  # table -> its current object
    charts: str | None = None  # the overview's pre-rendered charts (charts_key; absent: the page renders them)

    @field_validator("clean_files", mode="before")
    @classmethod
    def _bare_keys(cls, v: Any) -> Any:  # an early manifest listed bare keys
        return [{"key": f} if isinstance(f, str) else f for f in v] if isinstance(v, list) else v

    @classmethod
    def parse(cls, data: bytes | dict[str, Any]) -> Manifest:
        return cls.model_validate(json.loads(data) if isinstance(data, (bytes, bytearray, str)) else data)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        for optional in ("host_files", "charts"):
            if out.get(optional) is None:
                out.pop(optional, None)
        for r in out["runs"]:  # a run recorded before ``at`` existed keeps no ``at`` (see retention.compact)
            if r.get("at") is None:
                r.pop("at", None)
        return out


def load_manifest(store: ObjectStore) -> tuple[Manifest, str | None]:
    """The committed manifest and its generation; an empty one and None if nothing was committed."""
    try:
        data, gen = store.get_with_generation(MANIFEST)
    except NotFound:
        return Manifest(), None
    return Manifest.parse(data), gen


def manifest_generation(store: ObjectStore) -> str | None:
    return store.generation(MANIFEST)


def commit_manifest(store: ObjectStore, manifest: Manifest | dict[str, Any], expected: str | None) -> str:
    """Write ``manifest`` iff the stored one is still at generation ``expected`` (None: iff there is
    none). Validated first (a malformed manifest is never written). Returns the new generation;
    raises ``PreconditionFailed`` when another writer committed in between (nothing is written)."""
    m = manifest if isinstance(manifest, Manifest) else Manifest.parse(manifest)
    return store.put_if_unchanged(MANIFEST, m.to_json(), expected, content_type="application/json")


def update_manifest(
    store: ObjectStore,
    fn: Callable[[dict[str, Any]], Manifest | dict[str, Any]],
    *,
    max_attempts: int = 50,
) -> tuple[Manifest, str]:
    """Read-modify-write the manifest with compare-and-swap, retrying a lost race. ``fn`` gets the
    current manifest as a plain dict (it may mutate it) and returns the new one; it may run several
    times, so it must not have side effects. NotFound if there is no manifest."""
    import random
    import time

    last: PreconditionFailed | None = None
    for attempt in range(max_attempts):
        data, gen = store.get_with_generation(MANIFEST)
        new = fn(Manifest.parse(data).to_dict())
        m = new if isinstance(new, Manifest) else Manifest.parse(new)
        try:
            return m, commit_manifest(store, m, gen)
        except PreconditionFailed as exc:
            last = exc
            time.sleep(random.uniform(0, 0.005 * min(2**attempt, 64)))
    assert last is not None
    raise last
