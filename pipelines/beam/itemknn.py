"""Training's heavy step on Beam: item-item co-occurrence and the top-N cosine neighbours of every item,
computed from the committed clean/ files by a keyed pipeline, so a catalogue of millions of items does
not need one machine's memory (``shared.reco.itemknn`` holds the item x item work in one process).

    .venv-beam/bin/python -m pipelines.beam.itemknn --store URL [--window-days 30] [--half-life-days 30]
        [--neighbours 100] [--min-cooc 1] [--max-user-items K]

The lists train's served fit would compute in process (``DAIHUO_TRAIN_NEIGHBOURS=precomputed`` reads
them, ``shared/neighbour_lists.py``): the same definition as ``ItemItemCF(similarity="cosine",
binary=True)`` fitted on ``build_user_items(window events, half_life_days, reference_time=window end)``:

* the inputs: the manifest's clean files of the window's date partitions (``layout.window_keys``, as
  ``shared.serving.data.read_training_data``), their events with ``ts`` in ``(end - window_days, end]``,
  ``end`` the newest event ``ts`` (as train anchors its window);
* a (user, item) interacts when the sum of its events' weights, action weight
  (``shared.action_weights.DEFAULT_ACTION_WEIGHTS``; 0 for other types) x ``2 ** (-age_days / half_life)``
  (age from the window end; ``--half-life-days none``: no decay), clipped at 0 and stored as float32, is > 0 (X̄);
* ``C[i, j]`` = users with both, ``C[i, i]`` = users with i; ``S = C[i, j] / sqrt(C[i, i] C[j, j])``
  (float64), pairs below ``min_cooc`` and the diagonal dropped;
* per item the ``neighbours`` largest similarities > 0, ties to the lower item id, AND the further
  neighbours tied with the N-th score (so that train can break ties by its own item order).

Shape: events keyed by (user, item) -> summed weights -> grouped by user (one user's items) -> the pairs
of each user, counted per pair (``CombinePerKey``) -> the similarity with the occurrence counts as a side
input -> grouped by item -> top-N. A user with many items costs k² pairs: ``--max-user-items`` keeps a
deterministic sample of K items per user (a hash of user and item), which changes the result and is off
by default (train never uses sampled lists).

Output (keys in ``shared.layout``): ``neighbours/<id>/arrays.npz`` (CSR over the sorted item ids of the
window, float64 scores), ``neighbours/<id>/meta.json`` (the definition, the window, the clean objects read
with their generations, the manifest seen, counts; create-only, written last), then
``neighbours/LATEST.json`` moved to it by compare-and-swap. ``<id>`` hashes the inputs and parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import sys
from typing import Any

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.beam.clean import _options, _StoreFn
from shared import layout
from shared import neighbour_lists as nl
from shared.action_weights import DEFAULT_ACTION_WEIGHTS
from shared.adapters.storage import open_store
from shared.layout import load_manifest

_DAY_US = 86_400 * 10**6


def _ts_us(t: pa.Table) -> np.ndarray:
    """``ts`` as epoch microseconds (int64; clean writes timestamp[us, UTC])."""
    return t.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def event_weights(types: list, ts_us: np.ndarray, weights: dict[str, float], end_us: int, half_life) -> np.ndarray:
    """Per event: action weight x decay, the float64 operations of ``shared.reco.interactions.event_weights``
    in the same order (so that X̄ is train's, bit for bit)."""
    w = np.array([weights.get(ty, 0.0) if ty is not None else 0.0 for ty in types], dtype=np.float64)
    if half_life is not None and w.size:
        secs = ts_us.astype(np.float64) / 1e6
        ref = float(np.float64(end_us) / 1e6)
        age = np.maximum(ref - secs, 0.0) / 86400.0
        w = w * np.exp2(-age / float(half_life))
    return w


class ReadEvents(_StoreFn):
    """A (clean/ key, generation) -> ((user, item), weight) per event of the window with a user and an
    item. The object must still be at the generation the driver recorded (else the job fails: the lists
    would not be of the inputs their meta names)."""

    def __init__(self, store_url: str, weights: dict[str, float], window: dict, half_life):
        super().__init__(store_url)
        self.weights, self.window, self.half_life = weights, window, half_life

    def process(self, key_gen):
        key, gen = key_gen
        data, got = self.store.get_with_generation(key)
        if str(got) != str(gen):
            raise RuntimeError(f"{key} changed during the job (generation {gen} -> {got}): run it again")
        t = pq.read_table(io.BytesIO(data), columns=["user_id", "item_id", "type", "ts"])
        ts = _ts_us(t)
        end_ns, start_ns = self.window["end_us"] * 1000, self.window["start_ns"]
        keep = (ts * 1000 > start_ns) & (ts * 1000 <= end_ns)
        cols = [t.column(c).cast(pa.string()).to_pylist() for c in ("user_id", "item_id", "type")]
        w = event_weights(cols[2], ts, self.weights, self.window["end_us"], self.half_life)
        for k, (u, i) in enumerate(zip(cols[0], cols[1])):
            if u is not None and i is not None and keep[k]:
                yield (u, i), float(w[k])


def _interacts(total: float) -> bool:
    """X̄[u, i]: the summed weight, clipped at 0 and stored as float32 (build_user_items), is > 0."""
    return float(np.float32(max(total, 0.0))) > 0.0


def _sample(user: str, items: list[str], k: int | None) -> list[str]:
    if k is None or len(items) <= k:
        return items
    h = lambda i: hashlib.blake2b(f"{user}\x1f{i}".encode(), digest_size=8).digest()
    return sorted(sorted(items, key=h)[:k])


def user_pairs(kv, k: int | None):
    user, items = kv
    items = _sample(user, sorted(set(items)), k)
    for i in items:
        yield (i, i), 1
        for j in items:
            if j != i:
                yield (i, j), 1


def similarity(kv, occ: dict[str, int], min_cooc: float):
    (i, j), v = kv
    if i == j or v < min_cooc:
        return
    s = float(v) / math.sqrt(float(occ[i]) * float(occ[j]))
    if s > 0.0:
        yield i, (s, j)


def top_n(kv, n: int):
    """The n best (score desc, id asc), then every further one tied with the n-th score; by id."""
    i, cands = kv
    best = sorted(cands, key=lambda c: (-c[0], c[1]))
    k = min(n, len(best))
    while 0 < k < len(best) and best[k][0] == best[k - 1][0]:
        k += 1
    best = sorted(best[:k], key=lambda c: c[1])
    return {"item_id": i, "neighbours": [j for _, j in best], "scores": [s for s, _ in best]}


class WriteOut(_StoreFn):
    """All rows (one element) -> the CSR arrays over the sorted item ids -> arrays.npz, then meta.json,
    then the pointer. Inside the job, not in the driver after ``wait_until_finish``: a Flex Template's
    launcher only builds the job and exits. A retried bundle rewrites the same bytes and finds meta.json
    (create-only) and the pointer already there."""

    def __init__(self, store_url: str, lid: str, item_ids: list[str], meta: dict):
        super().__init__(store_url)
        self.lid, self.item_ids, self.meta = lid, item_ids, meta

    def process(self, kv):
        _, rows = kv
        pos = {s: k for k, s in enumerate(self.item_ids)}
        by_item = {pos[r["item_id"]]: r for r in rows if r is not None}
        counts = np.zeros(len(self.item_ids), dtype=np.int64)
        indices, scores = [], []
        for k in sorted(by_item):
            r = by_item[k]
            counts[k] = len(r["neighbours"])
            indices.extend(pos[j] for j in r["neighbours"])
            scores.extend(r["scores"])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        blob = nl.encode(
            np.array(self.item_ids, dtype=str),
            indptr,
            np.array(indices, dtype=np.int32),
            np.array(scores, dtype=np.float64),
        )
        meta = {**self.meta, "rows": len(by_item), "nnz": len(indices), "created_at": nl.now_iso()}
        stored = nl.write(self.store, self.lid, blob, meta)
        nl.publish(self.store, stored)
        yield len(by_item)


def build(p, store_url: str, lid: str, inputs: list[dict], item_ids: list[str], meta: dict) -> None:
    d, window = meta["definition"], meta["window"]
    n_items = len(item_ids)
    n = int(max(min(d["neighbours"], max(n_items - 1, 1)), 1))  # (as the in-process kernel bounds it)
    min_cooc, k = d["min_cooc"], d["max_user_items"]
    xbar = (
        p
        | "clean files" >> beam.Create([(i["key"], i["generation"]) for i in inputs])
        | "spread" >> beam.Reshuffle()
        | "read" >> beam.ParDo(ReadEvents(store_url, dict(d["action_weights"]), window, d["half_life_days"]))
        | "sum per user-item" >> beam.CombinePerKey(sum)
        | "interacts" >> beam.Filter(lambda kv: _interacts(kv[1]))
        | "by user" >> beam.Map(lambda kv: (kv[0][0], kv[0][1]))
        | "user items" >> beam.GroupByKey()
    )
    counts = xbar | "pairs" >> beam.FlatMap(user_pairs, k) | "count pairs" >> beam.CombinePerKey(sum)
    occ = (
        counts
        | "diagonal" >> beam.Filter(lambda kv: kv[0][0] == kv[0][1])
        | "occ" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
    )
    rows = (
        counts
        | "similarity" >> beam.FlatMap(similarity, beam.pvalue.AsDict(occ), min_cooc)
        | "by item" >> beam.GroupByKey()
        | "top n" >> beam.Map(top_n, n)
    )
    seed = p | "seed" >> beam.Create([(0, None)])
    _ = (
        (rows | "one" >> beam.Map(lambda r: (0, r)), seed)
        | "all" >> beam.Flatten()
        | "gather" >> beam.GroupByKey()
        | "write" >> beam.ParDo(WriteOut(store_url, lid, item_ids, meta))
    )


def plan(store, *, window_days: float, half_life_days, neighbours: int, min_cooc: float, max_user_items) -> tuple:
    """The driver's part: the clean objects of the window (key + generation), the window (end = the
    newest event ts of those objects), the index space (the sorted item ids of the window's events) and
    the meta the lists will carry. ``(lists id, inputs, item ids, meta)``."""
    manifest, mgen = load_manifest(store)
    if mgen is None:
        raise SystemExit(f"no committed clean manifest ({layout.MANIFEST}): nothing to compute from")
    if window_days <= 0 or (half_life_days is not None and half_life_days <= 0) or neighbours < 1:
        raise SystemExit("--window-days, --half-life-days and --neighbours must be > 0")
    keys = layout.window_keys([f.key for f in manifest.clean_files], window_days)
    inputs, tables = [], []
    for key in keys:  # (the driver reads item_id and ts of the window's objects once: end and index space)
        data, gen = store.get_with_generation(key)
        inputs.append({"key": key, "generation": str(gen)})
        t = pq.read_table(io.BytesIO(data), columns=["item_id", "ts"])
        tables.append((t.column("item_id").cast(pa.string()), _ts_us(t)))
    end_us = max((int(ts.max()) for _, ts in tables if ts.size), default=None)
    if end_us is None:
        raise SystemExit("the clean files of the window hold no events")
    start_ns = end_us * 1000 - round(window_days * _DAY_US * 1000)
    items: set[str] = set()
    for col, ts in tables:
        sel = pa.array(ts * 1000 > start_ns)
        items.update(x for x in col.filter(sel).unique().to_pylist() if x is not None)
    item_ids = sorted(items)
    window = {
        "days": window_days,
        "end": nl.iso_us(end_us),
        "end_us": end_us,
        "start": nl.iso_us(start_ns // 1000),
        "start_ns": start_ns,
    }
    definition = {
        "similarity": "cosine",
        "binary": True,
        "neighbours": int(neighbours),
        "min_cooc": float(min_cooc),
        "half_life_days": None if half_life_days is None else float(half_life_days),
        "action_weights": dict(DEFAULT_ACTION_WEIGHTS),
        "max_user_items": max_user_items,
        "ties": "extended: the top N by (score desc, item id asc) and every further one tied with the N-th",
    }
    lid = nl.lists_id(inputs, definition, window)
    meta = {
        "format": nl.FORMAT,
        "job": "pipelines.beam.itemknn",
        "definition": definition,
        "window": window,
        "inputs": inputs,
        "manifest": {"generation": str(mgen), "seq": manifest.seq, "runs": [r.run_id for r in manifest.runs]},
        "items": len(item_ids),
    }
    return lid, inputs, item_ids, meta


def run(
    store_url: str,
    *,
    window_days: float = 30.0,
    half_life_days: float | None = 30.0,
    neighbours: int = 100,
    min_cooc: float = 1.0,
    max_user_items=None,
    beam_args=(),
) -> dict:
    """Plan, then the pipeline (its last step writes the arrays, commits meta.json and moves the pointer).
    Returns the lists' summary when the runner waits for the job (the FnApiRunner; DataflowRunner run
    directly), ``{"status": "submitted", "id"}`` when it only submitted it (a Flex Template's launcher)."""
    store = open_store(store_url)
    lid, inputs, item_ids, meta = plan(
        store,
        window_days=window_days,
        half_life_days=half_life_days,
        neighbours=neighbours,
        min_cooc=min_cooc,
        max_user_items=max_user_items,
    )
    computed = store.exists(layout.neighbours_meta_key(lid))  # same inputs and parameters: done before
    if not computed:
        p = beam.Pipeline(options=_options(list(beam_args)))
        build(p, store_url, lid, inputs, item_ids, meta)
        p.run().wait_until_finish()
        if not store.exists(layout.neighbours_meta_key(lid)):  # the runner only submitted the job
            return {"status": "submitted", "id": lid, "clean_files": len(inputs), "items": len(item_ids)}
    stored = orjson.loads(store.get(layout.neighbours_meta_key(lid)))
    latest = nl.publish(store, stored)  # (a no-op when the job's last step moved it; else an earlier run's)
    return {
        "status": "done" if not computed else "already computed",
        "id": lid,
        "meta": layout.neighbours_meta_key(lid),
        "latest": latest,
        "items": len(item_ids),
        "rows": stored["rows"],
        "nnz": stored["nnz"],
        "clean_files": len(inputs),
        "window": meta["window"],
    }


def _half_life(v: str) -> float | None:
    return None if v.strip().lower() in ("none", "off", "") else float(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    # both spellings: the Flex Template launcher passes parameters as --window_days=.. (devtools/flex_template.py)
    ap.add_argument("--window-days", "--window_days", type=float, default=30.0, help="as DAIHUO_TRAIN_WINDOW_DAYS")
    ap.add_argument(
        "--half-life-days", "--half_life_days", type=_half_life, default=30.0, help="the recipe's (none: no decay)"
    )
    ap.add_argument("--neighbours", type=int, default=100)
    # both spellings: the Flex Template launcher passes parameters as --min_cooc=.. (devtools/flex_template.py)
    ap.add_argument("--min-cooc", "--min_cooc", type=float, default=1.0)
    ap.add_argument(
        "--max-user-items", "--max_user_items", type=int, default=None, help="sample heavy users to K items (changes S)"
    )
    args, beam_args = ap.parse_known_args(argv)
    res: dict[str, Any] = run(
        args.store,
        window_days=args.window_days,
        half_life_days=args.half_life_days,
        neighbours=args.neighbours,
        min_cooc=args.min_cooc,
        max_user_items=args.max_user_items,
        beam_args=beam_args,
    )
    sys.stdout.write(orjson.dumps(res).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
