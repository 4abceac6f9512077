"""Retention per prefix and the bounded state of clean (docs/privacy.md, docs/pipeline.md).

    python -m shared.pipeline.retention --store gs://bucket [--dry-run]

* **Retention** (``DAIHUO_RETENTION_DAYS``, e.g. ``raw=365,clean=400,quarantine=90``; the defaults
  below): an object of a date-partitioned prefix (``.../date=YYYY-MM-DD/...``: raw/, clean/,
  quarantine/ incl. quarantine/ingest/) whose partition date is older than its prefix's period is
  deleted -- after the manifest stopped naming it (readers never meet a listed object that is gone).
  In the cloud the bucket's lifecycle rules (infra/storage.tf) delete the same prefixes by object
  age as a safety net (clean/ with a 31-day margin: its objects are named by the manifest).
* **Look-back** (``DAIHUO_DEDUPE_LOOKBACK_DAYS``, default 35 = ``DAIHUO_MAX_PAST_S`` (30 days) + 5):
  every clean commit compacts the manifest: ``done`` forgets raw keys whose partition is older than
  the look-back (clean no longer lists those partitions as pending), the dedupe index drops the
  parts of runs older than it (deleted after the commit), ``runs`` drops published runs older than
  it. A duplicate of an event older than the look-back is therefore accepted: every accepted row
  whose sent ``ts`` is older than the look-back is counted as ``beyond_lookback`` in the clean report.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import layout
from shared.settings import DEFAULT_RETENTION_DAYS, Settings, load  # noqa: F401  (DEFAULT_RETENTION_DAYS: re-exported)

DEFAULT_LOOKBACK_DAYS = Settings.model_fields["dedupe_lookback_days"].default
FOLLOWS = {
    "clean": (layout.CLEAN_HOST.rstrip("/"),)
}  # prefixes kept as long as another one (the host actions' clean files)
_DATE = layout.DATE_RE
_RUN = re.compile(r"(r-[0-9a-f]+)")


def retention_days(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """``$DAIHUO_RETENTION_DAYS`` over the defaults (an unknown prefix raises SettingsError)."""
    return dict(load(environ).retention_days)


def lookback_days(environ: Mapping[str, str] | None = None) -> int:
    return load(environ).dedupe_lookback_days


def partition_date(key: str) -> str | None:
    m = _DATE.search(key)
    return m.group(1) if m else None


def cutoff_date(now: float, days: int) -> str:
    """The first partition date still kept: partitions strictly before it are out."""
    return (datetime.fromtimestamp(now, UTC).date() - timedelta(days=days)).isoformat()


def reference_time(keys, now: float) -> float:
    """The look-back's "today": the end of the newest partition date among ``keys``, at most ``now``."""
    newest = max((d for d in map(partition_date, keys) if d), default=None)
    if newest is None:
        return now
    end = datetime.fromisoformat(newest).replace(tzinfo=UTC).timestamp() + 86400
    return min(now, end)


def too_old(key: str, cutoff: str) -> bool:
    d = partition_date(key)
    return d is not None and d < cutoff


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")


def compact(
    manifest: dict[str, Any],
    now: float,
    lookback: int | None = None,
    clean_days: int | None = None,
    ref: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest with its look-back and the clean retention applied (pure). ``now``: the clock of
    the runs (their ``at``); ``ref`` (default ``now``): the "today" of the partition dates (see
    :func:`reference_time`). Returns (manifest, stats); ``stats["dedupe_dropped"]`` /
    ``["clean_expired"]`` are keys no longer named."""
    lookback = lookback_days() if lookback is None else lookback
    clean_days = retention_days()["clean"] if clean_days is None else clean_days
    ref = now if ref is None else ref
    cut = cutoff_date(ref, lookback)
    t_cut = now - lookback * 86400
    m = dict(manifest)
    done = [k for k in m.get("done", []) if not too_old(k, cut)]
    at = {}
    m["runs"] = [dict(r) for r in m.get("runs", [])]
    for r in m["runs"]:
        if not r.get("at"):  # a run from before this field: its clock starts now
            r["at"] = _iso(now)
        at[r["run_id"]] = datetime.fromisoformat(r["at"]).timestamp()
    old_runs = {rid for rid, t in at.items() if t < t_cut}

    def run_of(key):
        mm = _RUN.search(key.rsplit("/", 1)[-1])
        return mm.group(1) if mm else None

    dedupe = [k for k in m.get("dedupe", []) if run_of(k) not in old_runs]
    ccut = cutoff_date(ref, clean_days)
    clean_files = [f for f in m.get("clean_files", []) if not too_old(f["key"], ccut)]
    if "host_files" in m:  # clean_host/ files: the retention of clean/
        m["host_files"] = [f for f in m["host_files"] if not too_old(f["key"], ccut)]
    runs = [r for r in m.get("runs", []) if not (r["run_id"] in old_runs and r.get("published"))]
    stats = {
        "done_forgotten": len(m.get("done", [])) - len(done),
        "dedupe_dropped": [k for k in m.get("dedupe", []) if k not in set(dedupe)],
        "clean_expired": [f["key"] for f in m.get("clean_files", []) if f not in clean_files],
        "runs_dropped": len(m.get("runs", [])) - len(runs),
        "lookback_cutoff": cut,
    }
    m.update(done=done, dedupe=dedupe, clean_files=clean_files, runs=runs)
    return m, stats


def apply_retention(
    store, *, now: float | None = None, dry_run: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Compact the manifest (CAS), then delete every object past its prefix's retention and the
    dedupe parts the manifest no longer names."""
    now = time.time() if now is None else now
    days = retention_days(environ)
    deleted = []
    for prefix, d in days.items():
        cut = cutoff_date(now, d)
        for p in (prefix, *FOLLOWS.get(prefix, ())):
            deleted += [k for k in store.list(p + "/") if too_old(k, cut)]
    gone = set(deleted)
    stats: dict[str, Any] = {}
    if store.exists(layout.MANIFEST) and not dry_run:

        def fn(m):
            new, s = compact(m, now, lookback_days(environ), days["clean"])
            new["done"] = [k for k in new["done"] if k not in gone]  # a raw retention below the look-back
            new["clean_files"] = [f for f in new["clean_files"] if f["key"] not in gone]
            if "host_files" in new:
                new["host_files"] = [f for f in new["host_files"] if f["key"] not in gone]
            stats.clear()
            stats.update(s)
            return new

        layout.update_manifest(store, fn)
    deleted += [k for k in stats.get("dedupe_dropped", []) if k not in gone]
    if not dry_run:
        for k in deleted:
            store.delete(k)
    return {"retention_days": days, "deleted": deleted, **{k: v for k, v in stats.items() if k != "dedupe_dropped"}}


def main(argv: list[str] | None = None) -> int:
    import orjson

    from shared.adapters.storage import open_store

    ap = argparse.ArgumentParser(prog="python -m shared.pipeline.retention", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=load().store)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    print(orjson.dumps(apply_retention(open_store(a.store), dry_run=a.dry_run)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
