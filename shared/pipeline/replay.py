"""Re-inject fixed quarantined rows through the same validation, exactly once.

    python -m shared.pipeline.replay --store gs://bucket fixed.ndjson [--dry-run]

Input: quarantine rows (``quarantine/…ndjson.gz`` as written by ingest or clean, gunzipped or not),
one per line, whose ``raw`` an operator fixed: a string (the raw NDJSON line, as clean quarantines
it, ``received_at`` included) or an object (as ingest quarantines it; the row's ``received_at`` is
added when the object has none). Rows are turned back into raw lines, grouped by the archive's own
partition rule (``archive.partition_of``) and written as ``raw/<partition>/replay-<sha256>.ndjson.gz``
with an only-if-absent precondition. The next clean run treats them like any raw object: the same
contract, dedupe and quarantine rules -- a row still wrong is quarantined again with its reason.

Exactly once: the object name is the hash of its partition and sorted, de-duplicated lines, so
replaying the same fixed rows again is a no-op (``already_replayed``); and a row whose ``event_id``
already reached clean/ is dropped by clean's dedupe index, so even a different grouping cannot
double an event.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from shared import layout
from shared.adapters.storage import ABSENT, PreconditionFailed
from shared.pipeline.archive import partition_of
from shared.pipeline.config import TimeRules
from shared.settings import settings


class BadRow(ValueError):
    pass


def raw_line(row: dict[str, Any]) -> bytes:
    raw = row.get("raw")
    if isinstance(raw, str):
        line = raw.rstrip("\n").encode()
    elif isinstance(raw, dict):
        obj = dict(raw)
        if "received_at" not in obj and isinstance(row.get("received_at"), str):
            obj["received_at"] = row["received_at"]
        line = orjson.dumps(obj)
    else:
        raise BadRow("row has no raw value (string line or object)")
    if b"\n" in line or not line.strip():
        raise BadRow("raw must be one non-empty line")
    return line


def replay(store, rows: Iterable[dict[str, Any]], *, now: float | None = None, dry_run: bool = False) -> dict[str, Any]:
    now = time.time() if now is None else now
    rules = TimeRules()
    parts: dict[str, set[bytes]] = defaultdict(set)
    refused = []
    n = 0
    for i, row in enumerate(rows):
        n += 1
        try:
            line = raw_line(row)
        except BadRow as exc:
            refused.append({"index": i, "error": str(exc)})
            continue
        parts[partition_of(line, rules, now)].add(line)
    written, existing = [], []
    for p in sorted(parts):
        lines = sorted(parts[p])
        h = hashlib.sha256(p.encode() + b"\0" + b"\n".join(lines)).hexdigest()[:24]
        key = layout.replay_key(p, h)
        if dry_run:
            written.append(key)
            continue
        try:
            store.put(
                key,
                gzip.compress(b"\n".join(lines) + b"\n", mtime=0),
                content_type="application/gzip",
                if_generation_match=ABSENT,
            )
            written.append(key)
        except PreconditionFailed:
            existing.append(key)
    return {
        "rows": n,
        "lines": sum(len(v) for v in parts.values()),
        "objects": written,
        "already_replayed": existing,
        "refused": refused,
    }


def _read_rows(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    rows = []
    for ln in data.splitlines():
        if ln.strip():
            v = orjson.loads(ln)
            rows.append(v if isinstance(v, dict) else {"raw": None})
    return rows


def main(argv: list[str] | None = None) -> int:

    from shared.adapters.storage import open_store

    ap = argparse.ArgumentParser(prog="python -m shared.pipeline.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", help="fixed quarantine rows (NDJSON, optionally gzipped)")
    ap.add_argument("--store", default=settings().store)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    rows = [r for f in a.files for r in _read_rows(f)]
    out = replay(open_store(a.store), rows, dry_run=a.dry_run)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 1 if out["refused"] else 0


if __name__ == "__main__":
    sys.exit(main())
