"""Two stores cleaned by the two engines (DuckDB: ``shared.pipeline.clean.run_clean``; Beam:
``pipelines.beam.clean``, run in ``.venv-beam``) compared object by object, row for row.

``compare_stores(a, b)`` returns the differences (an empty list: identical). What is compared: the
manifest (every field), each committed clean/ and clean_host/ file, the catalog part, the dedupe part
(as a set of ids), each quarantine/ object (rows in order, every field), every analytics/ table
(rows sorted, names and types equal -- not the REQUIRED flag of a column, see ``_loose``; floats equal to 1e-9 relative: a sum of the same doubles in another order
may differ in its last bit), and the run's report (every counter; ``seconds`` and ``engine`` aside).

``run_beam(store_url, ...)`` runs the Beam job in the Beam environment by subprocess.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
BEAM_PYTHON = ROOT / ".venv-beam" / "bin" / "python"


def beam_python() -> Path | None:
    """The Beam environment's interpreter (``make venv-beam``), or None if it was not created."""
    from shared.settings import settings

    p = Path(settings().beam_python or BEAM_PYTHON)
    if not p.is_absolute():
        p = ROOT / p
    return p if p.exists() else None


def run_beam(
    store_url: str, *, now: float | None = None, env: dict | None = None, args=(), publish: bool = False
) -> dict:
    """Run ``python -m pipelines.beam.clean`` in the Beam environment; its summary (the last stdout line).
    ``publish``: the job publishes on ``events-cleaned`` (give ``--cleaned_topic=`` / ``--pubsub_project=``
    in ``args``); off by default here (``--publish=false``: most callers have no Pub/Sub)."""
    py = beam_python()
    if py is None:
        raise RuntimeError(f"no Beam environment at {BEAM_PYTHON} (make venv-beam)")
    cmd = [str(py), "-m", "pipelines.beam.clean", "--store", store_url, f"--publish={str(publish).lower()}", *args]
    if now is not None:
        cmd += ["--now", repr(now)]
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    out = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"beam clean failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return orjson.loads(out.stdout.strip().splitlines()[-1])


def _table(store, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get(key)))


def _eq(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_eq(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return len(x) == len(y) and all(_eq(a, b) for a, b in zip(x, y))
    return x == y


def _rows(t: pa.Table, sort: bool = True) -> list[dict]:
    rows = t.to_pylist()
    if sort:
        rows.sort(key=lambda r: orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS))
    return rows


def _loose(schema: pa.Schema) -> pa.Schema:
    """The schema with every field nullable: whether DuckDB writes a column REQUIRED follows its column
    statistics (a column UPDATEd from NULLs stays OPTIONAL), not the data; names and types must be equal."""
    return pa.schema([f.with_nullable(True) for f in schema])


def compare_tables(what: str, a: pa.Table, b: pa.Table, *, schema: bool = True, limit: int = 5) -> list[str]:
    diffs = []
    if schema and not _loose(a.schema).equals(_loose(b.schema)):
        diffs.append(f"{what}: schema differs:\n  {a.schema}\n  vs\n  {b.schema}")
        return diffs
    if a.num_rows != b.num_rows:
        return [f"{what}: {a.num_rows} rows vs {b.num_rows}"]
    ra, rb = _rows(a), _rows(b)
    for x, y in zip(ra, rb):
        if not _eq(x, y):
            cols = [k for k in x if not _eq(x[k], y.get(k))]
            diffs.append(f"{what}: row differs in {cols}: {[x[k] for k in cols]} vs {[y.get(k) for k in cols]}")
            if len(diffs) >= limit:
                break
    return diffs


def _quarantine(store, key: str) -> list[dict]:
    return [orjson.loads(x) for x in gzip.decompress(store.get(key)).splitlines() if x.strip()]


def compare_stores(a, b) -> list[str]:
    """Differences between two stores' committed clean outputs (a: DuckDB's, b: Beam's). A run's id hashes
    the manifest's generation, which differs between backends (local vs GCS) from the second run on:
    b's run ids are mapped to a's, run by run, before anything is compared."""
    from shared.layout import MANIFEST

    ma, mb = orjson.loads(a.get(MANIFEST)), orjson.loads(b.get(MANIFEST))
    ids = {rb["run_id"]: ra["run_id"] for ra, rb in zip(ma["runs"], mb["runs"]) if rb["run_id"] != ra["run_id"]}

    def norm(x: Any) -> Any:
        if not ids:
            return x
        text = orjson.dumps(x, default=str)
        for kb, ka in ids.items():
            text = text.replace(kb.encode(), ka.encode())
        return orjson.loads(text)

    def bkey(key: str) -> str:
        for kb, ka in ids.items():
            key = key.replace(ka, kb)
        return key

    def tables(what: str, key: str) -> list[str]:
        if not b.exists(bkey(key)):
            return [f"{what}: missing in the Beam store"]
        ta, tb = _table(a, key), _table(b, bkey(key))
        if ids and "run_id" in tb.column_names:
            i = tb.column_names.index("run_id")
            col = pa.array(norm(tb.column("run_id").cast(pa.string()).to_pylist()), pa.string())
            tb = tb.set_column(i, tb.schema.field(i), col.cast(tb.schema.field(i).type))
        return compare_tables(what, ta, tb)

    mb = norm(mb)
    diffs: list[str] = []
    if not _eq(ma, mb):
        keys = sorted(k for k in set(ma) | set(mb) if not _eq(ma.get(k), mb.get(k)))
        diffs.append(f"manifest differs in {keys}: {[ma.get(k) for k in keys]} vs {[mb.get(k) for k in keys]}")
    for f in ma["clean_files"] + (ma.get("host_files") or []):
        diffs += tables(f["key"], f["key"])
    for key in ma["catalog"]:
        diffs += tables(key, key)
    for key in ma["dedupe"]:
        ia, ib = (
            set(_table(a, key).column("event_id").to_pylist()),
            set(_table(b, bkey(key)).column("event_id").to_pylist()),
        )
        if ia != ib:
            diffs.append(f"{key}: {len(ia - ib)} ids only in DuckDB's, {len(ib - ia)} only in Beam's")
    for name, key in sorted((ma.get("analytics") or {}).items()):
        diffs += tables(f"analytics {name}", key)
    for r in ma["runs"]:
        ra, rb = orjson.loads(a.get(r["report"])), norm(orjson.loads(b.get(bkey(r["report"]))))
        for q in ra["quarantine"]:
            qa, qb = _quarantine(a, q), norm(_quarantine(b, bkey(q)))
            if len(qa) != len(qb):
                diffs.append(f"{q}: {len(qa)} rows vs {len(qb)}")
            else:
                for x, y in zip(qa, qb):
                    if x != y:
                        cols = [k for k in x if x[k] != y.get(k)]
                        diffs.append(
                            f"{q}: row differs in {cols}: {[x[k] for k in cols]} vs {[y.get(k) for k in cols]}"
                        )
        skip = {"seconds", "engine"}
        ka = {k: v for k, v in ra.items() if k not in skip}
        kb = {k: v for k, v in rb.items() if k not in skip}
        if ka != kb:
            keys = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
            diffs.append(
                f"report {r['run_id']} differs in {keys}: {[ka.get(k) for k in keys]} vs {[kb.get(k) for k in keys]}"
            )
    return diffs


if __name__ == "__main__":  # python -m devtools.beam_check STORE_A STORE_B
    from shared.adapters.storage import open_store

    d = compare_stores(open_store(sys.argv[1]), open_store(sys.argv[2]))
    print("\n".join(d) or "identical")
    raise SystemExit(1 if d else 0)
