"""Training's heavy step on Beam: item-item co-occurrence and the top-N cosine neighbours of every item,
computed from the committed clean/ files by a keyed pipeline, so a catalogue of millions of items does
not need one machine's memory (``shared.reco.itemknn`` holds the item x item work in one process).

    .venv-beam/bin/python -m pipelines.beam.itemknn --store URL --out KEY [--neighbours 100] [--max-user-items K]

The same definition as ``ItemItemCF(similarity="cosine", binary=True)`` fitted on
``build_user_items(clean, half_life_days=None, item_ids=<sorted item ids>)``:

* a (user, item) interacts when the sum of its events' action weights
  (``shared.action_weights.DEFAULT_ACTION_WEIGHTS``, as ``shared.reco.interactions``; 0 for other types) is > 0 (X̄);
* ``C[i, j]`` = users with both, ``C[i, i]`` = users with i; ``S = C[i, j] / sqrt(C[i, i] C[j, j])``
  (float64, then stored as float32), pairs below ``min_cooc`` and the diagonal dropped;
* per item the ``neighbours`` largest similarities > 0, ties to the lower item (the index space is the
  sorted item ids, as the in-process fit's kernel breaks ties by column), listed by item.

Shape: events keyed by (user, item) -> summed weights -> grouped by user (one user's items) -> the pairs
of each user, counted per pair (``CombinePerKey``) -> the similarity with the occurrence counts as a side
input -> grouped by item -> top-N. A user with many items costs k² pairs: ``--max-user-items`` keeps a
deterministic sample of K items per user (a hash of user and item), which changes the result and is off
by default (the equality test runs without it).

Output: one Parquet object ``--out`` with ``item_id``, ``neighbours`` (item ids, in item order) and
``scores`` (float32), one row per item that has neighbours.
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
from shared.action_weights import DEFAULT_ACTION_WEIGHTS
from shared.adapters.storage import open_store
from shared.layout import load_manifest

OUT_SCHEMA = pa.schema(
    [("item_id", pa.string()), ("neighbours", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))]
)


class ReadEvents(_StoreFn):
    """A clean/ key -> ((user, item), weight) per event with a user and an item."""

    def __init__(self, store_url: str, weights: dict[str, float]):
        super().__init__(store_url)
        self.weights = weights

    def process(self, key):
        t = pq.read_table(io.BytesIO(self.store.get(key)), columns=["user_id", "item_id", "type"])
        for u, i, ty in zip(*(t.column(c).cast(pa.string()).to_pylist() for c in ("user_id", "item_id", "type"))):
            if u is not None and i is not None:
                yield (u, i), self.weights.get(ty, 0.0)


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
    i, cands = kv
    best = sorted(cands, key=lambda c: (-c[0], c[1]))[:n]
    best.sort(key=lambda c: c[1])
    return {"item_id": i, "neighbours": [j for _, j in best], "scores": [s for s, _ in best]}


class WriteOut(_StoreFn):
    def __init__(self, store_url: str, key: str):
        super().__init__(store_url)
        self.key = key

    def process(self, kv):
        _, rows = kv
        rows = sorted((r for r in rows if r is not None), key=lambda r: r["item_id"])
        t = pa.Table.from_pylist(rows, schema=OUT_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        self.store.put(self.key, buf.getvalue(), content_type="application/vnd.apache.parquet")
        yield len(rows)


def build(p, store_url: str, out: str, clean_keys: list[str], n_items: int, neighbours: int, min_cooc, k) -> None:
    n = int(max(min(neighbours, max(n_items - 1, 1)), 1))  # (as the in-process kernel bounds it)
    xbar = (
        p
        | "clean files" >> beam.Create(clean_keys)
        | "spread" >> beam.Reshuffle()
        | "read" >> beam.ParDo(ReadEvents(store_url, dict(DEFAULT_ACTION_WEIGHTS)))
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
        | "write" >> beam.ParDo(WriteOut(store_url, out))
    )


def run(store_url: str, out: str, *, neighbours: int = 100, min_cooc: float = 1.0, max_user_items=None, beam_args=()):
    store = open_store(store_url)
    manifest = load_manifest(store)[0]
    keys = [f["key"] for f in manifest["clean_files"]]
    items: set[str] = set()
    for k in keys:  # the index space: every item id of the clean data (its size bounds N, as in-process)
        t = pq.read_table(io.BytesIO(store.get(k)), columns=["item_id"])
        items.update(x for x in t.column("item_id").cast(pa.string()).unique().to_pylist() if x is not None)
    p = beam.Pipeline(options=_options(list(beam_args)))
    build(p, store_url, out, keys, len(items), neighbours, min_cooc, max_user_items)
    p.run().wait_until_finish()
    return {"out": out, "items": len(items), "clean_files": len(keys)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", required=True, help="the store key of the neighbour lists (Parquet)")
    ap.add_argument("--neighbours", type=int, default=100)
    # both spellings: the Flex Template launcher passes parameters as --min_cooc=.. (devtools/flex_template.py)
    ap.add_argument("--min-cooc", "--min_cooc", type=float, default=1.0)
    ap.add_argument(
        "--max-user-items", "--max_user_items", type=int, default=None, help="sample heavy users to K items (changes S)"
    )
    args, beam_args = ap.parse_known_args(argv)
    res: dict[str, Any] = run(
        args.store,
        args.out,
        neighbours=args.neighbours,
        min_cooc=args.min_cooc,
        max_user_items=args.max_user_items,
        beam_args=beam_args,
    )
    sys.stdout.write(orjson.dumps(res).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
