"""Loading what the dashboard shows from the object store, cached per instance.

A :class:`Snapshot` is an immutable view of one committed state: the analytics tables of the
clean manifest (all but the viewer-level ``layout.VIEWER_TABLES``), product titles from the catalog parts, the clean runs' data-quality reports and the
model versions' metadata. :class:`DataSource` keeps the current snapshot and reloads it only when the
manifest's generation (or the ``models/LATEST.json`` generation) changed, looking at most once every
``check_every_s`` seconds (two small metadata reads; nothing is downloaded while nothing changed).

Everything here is defensive about what may not exist yet: no manifest (nothing cleaned yet) gives
empty tables, no models gives an empty model list, a broken ``meta.json`` is listed with its error.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared import layout
from shared.adapters.storage import NotFound
from shared.layout import Manifest
from shared.log import get_logger
from shared.pipeline import outputs
from shared.settings import settings

log = get_logger("dashboard")

_META = layout.MODEL_META_RE
# bump when the rendered output changes shape: part of the ETag, so caches do not serve old pages
RENDER_VERSION = "3"


def _read_parquet(store, key: str) -> pd.DataFrame:
    return _frame(pq.read_table(io.BytesIO(store.get(key))))


def _frame(t: pa.Table) -> pd.DataFrame:
    # dictionary columns -> plain strings (pandas categoricals get in the way of filtering/sorting)
    cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c for c in t.columns]
    return pa.table(cols, names=t.column_names).to_pandas()


def _empty(cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=cols)


def _generation(store, key: str) -> str | None:
    try:
        return store.generation(key)
    except NotFound:
        return None


@dataclass
class Snapshot:
    """One consistent state of the analytics data (immutable once built)."""

    version: str  # ETag value: changes whenever anything shown changes
    manifest: Manifest
    stream: pd.DataFrame
    stream_hour: pd.DataFrame
    stream_item: pd.DataFrame
    catalog: pd.DataFrame  # item_id -> title, category, price (latest per item)
    runs: list[dict[str, Any]]  # clean run reports, oldest first
    models: list[dict[str, Any]]  # model metadata, oldest first
    latest_model: str | None
    # the host / audience tables (shared/pipeline/host_kpis.py; empty until a clean run wrote them)
    stream_slot: pd.DataFrame = field(default_factory=lambda: _empty(outputs.TABLE_COLUMNS["stream_slot"]))
    stream_retention: pd.DataFrame = field(default_factory=lambda: _empty(outputs.TABLE_COLUMNS["stream_retention"]))
    stream_audience: pd.DataFrame = field(default_factory=lambda: _empty(outputs.TABLE_COLUMNS["stream_audience"]))
    host: pd.DataFrame = field(default_factory=lambda: _empty(outputs.TABLE_COLUMNS["host"]))
    host_cohort: pd.DataFrame = field(default_factory=lambda: _empty(outputs.TABLE_COLUMNS["host_cohort"]))
    # recommendation experiments per arm (shared/pipeline/experiments.py; empty until one was measured)
    experiment: pd.DataFrame = field(default_factory=lambda: _empty(outputs.TABLE_COLUMNS["experiment"]))
    # events ingest refused (quarantine/ingest/), read on first use (``ingest_rejects()``)
    _ingest_rejects: dict[str, Any] | None = None
    # the overview's pre-rendered charts (shared/dashboard/prerender.py), read on first use
    _prerendered: tuple[dict[str, Any] | None, str] | None = None
    loaded_at: float = field(default_factory=time.time)
    _store: Any = None
    _minute_cache: OrderedDict[tuple, pd.DataFrame] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def run_id(self) -> str | None:
        return self.runs[-1]["run_id"] if self.runs else None

    def ingest_rejects(self) -> dict[str, Any]:
        """Rows ingest refused over the last ``INGEST_REJECT_DAYS`` days (``load_ingest_rejects``), read
        the first time the quality page or API asks (other pages and cold starts never pay it)."""
        if self._ingest_rejects is None:
            got = load_ingest_rejects(self._store) if self._store is not None else {}
            with self._lock:
                self._ingest_rejects = got
        return self._ingest_rejects

    def overview_prerendered(self) -> tuple[dict[str, Any] | None, str]:
        """The overview charts the manifest names (``Manifest.charts``), checked against this snapshot, or
        None and why; read the first time the overview page asks (once per snapshot)."""
        if self._prerendered is None:
            from shared.dashboard import prerender

            got: tuple[dict[str, Any] | None, str] = (None, "no store")
            if self._store is not None:
                got = prerender.load(self._store, self.manifest)
            if got[0] is None and self.manifest.get("analytics"):
                log.info("overview charts render on request", extra={"version": self.version, "reason": got[1]})
            with self._lock:
                self._prerendered = got
        return self._prerendered

    def has_stream(self, stream_id: str) -> bool:
        return bool((self.stream["stream_id"] == stream_id).any()) if len(self.stream) else False

    def clean_events(self, stream_id: str) -> pa.Table:
        """The stream's committed clean events (only the clean files that hold the stream are read)."""
        if self._store is None:
            return outputs.empty_clean()
        return outputs.clean_events(self._store, self.manifest, stream_id)

    def fine_series(self, stream_id: str, bucket_s: int) -> pd.DataFrame:
        """Per-bucket series from the clean events (cached per snapshot, a few streams at a time)."""
        from shared.dashboard.queries import fine_series_from_events

        key = (stream_id, bucket_s)
        with self._lock:
            if key in self._minute_cache:
                self._minute_cache.move_to_end(key)
                return self._minute_cache[key]
        row = self.stream[self.stream["stream_id"] == stream_id] if len(self.stream) else self.stream
        bounds = None
        if len(row) and {"start", "end"} <= set(row.columns):
            s, e = row.iloc[0]["start"], row.iloc[0]["end"]
            bounds = (None if pd.isna(s) else pd.Timestamp(s), None if pd.isna(e) else pd.Timestamp(e))
        df = fine_series_from_events(self.clean_events(stream_id), bucket_s, bounds=bounds)
        with self._lock:
            self._minute_cache[key] = df
            while len(self._minute_cache) > 32:
                self._minute_cache.popitem(last=False)
        return df


def empty_snapshot(version: str = "empty") -> Snapshot:
    return Snapshot(
        version=version,
        manifest=Manifest(),
        stream=pd.DataFrame(columns=outputs.STREAM_COLUMNS),
        stream_hour=pd.DataFrame(columns=["stream_id", "hour"]),
        stream_item=pd.DataFrame(
            columns=[
                "stream_id",
                "item_id",
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
        ),
        catalog=pd.DataFrame(columns=["item_id", "title", "category", "price"]),
        runs=[],
        models=[],
        latest_model=None,
    )


def load_models(store) -> tuple[list[dict[str, Any]], str | None]:
    """Every ``models/<version>/meta.json`` (a broken one is listed with ``error``) and LATEST's version."""
    latest = None
    try:
        ptr = orjson.loads(store.get(layout.LATEST))
        latest = ptr.get("version") if isinstance(ptr, dict) else None
        latest = str(latest) if latest is not None else None
    except NotFound:
        pass
    except Exception as exc:  # a half-written or foreign pointer must not take the dashboard down
        log.warning("unreadable models/LATEST.json", extra={"error": str(exc)})
    models = []
    try:
        keys = [k for k in store.list(layout.MODELS) if _META.match(k)]
    except Exception as exc:
        log.warning("cannot list models/", extra={"error": str(exc)})
        keys = []
    for k in keys:
        version = _META.match(k).group(1)
        try:
            meta = orjson.loads(store.get(k))
            if not isinstance(meta, dict):
                raise ValueError("meta.json is not a JSON object")
        except Exception as exc:
            models.append({"version": version, "error": f"unreadable meta.json: {exc}", "metrics": {}})
            continue
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        models.append({**meta, "version": str(meta.get("version") or version), "metrics": metrics})
    models.sort(key=lambda m: (str(m.get("created_at") or ""), m["version"]))
    return models, latest


# quarantine/ingest/ objects are immutable (one per request that refused something): each is read once
# per instance and its counts kept here (key -> {day, reasons}); a key retention deleted drops out
_reject_counts: dict[str, tuple[str, dict[str, int]]] = {}
_reject_lock = threading.Lock()


def reject_reason(reasons: Any) -> str:
    """The reason class of a refused row: the field its first reason names (``"quantity: must be >= 1"``
    -> ``quantity``; ``record: not valid JSON`` -> ``record``; ``body: ...`` -> ``body``)."""
    first = reasons[0] if isinstance(reasons, list) and reasons else reasons
    text = str(first or "?")
    return text.split(":", 1)[0].strip()[:60] or "?"


#: days of ingest rejects the quality page counts (today and the days before, UTC partitions)
INGEST_REJECT_DAYS = 7


def load_ingest_rejects(store, days: int = INGEST_REJECT_DAYS, now: float | None = None) -> dict[str, Any]:
    """Rows ingest refused, per day (UTC, the partition) and reason class, from ``quarantine/ingest/``
    of the last ``days`` days."""
    from datetime import UTC, datetime, timedelta

    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date()
    try:
        keys = [
            k
            for d in range(days - 1, -1, -1)
            for k in store.list(f"{layout.INGEST_QUARANTINE}date={today - timedelta(days=d)}/")
            if k.endswith(".ndjson.gz")
        ]
    except Exception as exc:
        log.warning("cannot list quarantine/ingest/", extra={"error": str(exc)})
        return {"by_day": {}, "objects": 0, "rows": 0, "error": f"cannot list {layout.INGEST_QUARANTINE}: {exc}"}
    import gzip

    by_day: dict[str, dict[str, int]] = {}
    errors = 0
    for k in keys:
        with _reject_lock:
            got = _reject_counts.get(k)
        if got is None:
            try:
                counts: dict[str, int] = {}
                for line in gzip.decompress(store.get(k)).splitlines():
                    if line.strip():
                        row = orjson.loads(line)
                        r = reject_reason(row.get("reasons") if isinstance(row, dict) else None)
                        counts[r] = counts.get(r, 0) + 1
            except NotFound:  # deleted by retention meanwhile
                continue
            except Exception as exc:
                errors += 1
                log.warning("unreadable ingest quarantine object", extra={"key": k, "error": str(exc)})
                continue
            day = k[len(layout.INGEST_QUARANTINE) :].split("/", 1)[0].removeprefix("date=")
            got = (day, counts)
            with _reject_lock:
                _reject_counts[k] = got
        d = by_day.setdefault(got[0], {})
        for r, n in got[1].items():
            d[r] = d.get(r, 0) + n
    out: dict[str, Any] = {
        "days": days,
        "by_day": dict(sorted(by_day.items())),
        "objects": len(keys),
        "rows": sum(sum(d.values()) for d in by_day.values()),
    }
    if errors:
        out["error"] = f"{errors} objects unreadable"
    return out


def models_signature(store) -> str | None:
    """A cheap fingerprint of the written versions (their meta.json keys): a rejected version does not
    move LATEST, yet the models page must show it."""
    try:
        keys = sorted(k for k in store.list(layout.MODELS) if _META.match(k))
    except Exception:
        return None
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12] if keys else None


def load_snapshot(store, manifest_gen: str | None, models_gen: str | None) -> Snapshot:
    version = hashlib.sha1(f"{RENDER_VERSION}|{manifest_gen}|{models_gen}".encode()).hexdigest()[:16]
    snap = empty_snapshot(version)
    snap._store = store
    snap.models, snap.latest_model = load_models(store)
    if manifest_gen is None:
        return snap
    manifest, _ = outputs.load_manifest(store)
    snap.manifest = manifest
    for name in layout.ANALYTICS_TABLES:
        if name in outputs.VIEWER_TABLES:  # viewer ids: never loaded by the dashboard
            continue
        t = outputs.read_table(store, manifest, name)
        if t is not None:
            setattr(snap, name, _frame(t))
    cats = [_read_parquet(store, k) for k in manifest.catalog]
    if cats:
        cat = pd.concat(cats, ignore_index=True).sort_values(["ts", "event_id"], kind="stable")
        snap.catalog = cat.drop_duplicates("item_id", keep="last")[["item_id", "title", "category", "price"]]
    runs = []
    for r in manifest.runs:
        try:
            rep = orjson.loads(store.get(r.report))
        except Exception as exc:
            rep = {"error": f"unreadable report: {exc}"}
        runs.append({**r.model_dump(exclude_none=True), **rep, "run_id": r.run_id})
    snap.runs = runs
    return snap


class DataSource:
    """The instance's cache: ``snapshot()`` is cheap; it reloads only after the manifest changed."""

    def __init__(self, store, check_every_s: float | None = None):
        self.store = store
        self.check_every_s = settings().dashboard_check_s if check_every_s is None else float(check_every_s)
        self._snap: Snapshot | None = None
        self._gens: tuple | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.loads = 0  # how many times data was (re)loaded: for tests and logs

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        snap = self._snap
        if snap is not None and now - self._checked < self.check_every_s:
            return snap
        with self._lock:
            if self._snap is not None and time.monotonic() - self._checked < self.check_every_s:
                return self._snap
            gens = (
                _generation(self.store, layout.MANIFEST),
                _generation(self.store, layout.LATEST),
                models_signature(self.store),
            )
            if self._snap is None or gens != self._gens:
                t0 = time.monotonic()
                models_gen = f"{gens[1]}|{gens[2]}" if gens[2] else gens[1]
                self._snap = load_snapshot(self.store, gens[0], models_gen)
                self._gens = gens
                self.loads += 1
                log.info(
                    "dashboard data loaded",
                    extra={
                        "version": self._snap.version,
                        "run_id": self._snap.run_id,
                        "streams": len(self._snap.stream),
                        "seconds": round(time.monotonic() - t0, 3),
                    },
                )
            self._checked = time.monotonic()
            return self._snap
