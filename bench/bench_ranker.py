"""Benchmark of the served recipe (``shared.reco.recipe.fit_recipe`` -> ``RoomRanker``): whole fit time and
single-request latency, beside anchors measured in the same run on the same data.

    python bench/bench_ranker.py                       # 50k items, 300k users, 10M events (the issue's size)
    python bench/bench_ranker.py --events 1000000 --users 100000 --items 20000

Synthetic events (numpy, seeded): Zipf item popularity, taste clusters, 30 days, 200 streams each with a
showcase, types click : cart : purchase = 8 : 2 : 1 with repeat buyers.  Latency is measured for viewers
whose history is at least ``--history`` (default 200) items: we add such heavy viewers.

Anchors printed beside: the v1 ``HybridRecommender`` fit and ``recommend`` on the same events (what the
recipe builds on), and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.reco import HybridRecommender
from shared.reco.recipe import DEFAULT_RECIPE, fit_recipe


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def generate(n_users: int, n_items: int, n_events: int, history: int, heavy: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    pop /= pop.sum()
    clusters = 100
    item_cluster = rng.integers(0, clusters, n_items)
    act = rng.lognormal(0.0, 1.0, n_users)
    act /= act.sum()
    users = rng.choice(n_users, size=n_events, p=act)
    home = rng.integers(0, clusters, n_users)
    items = rng.choice(n_items, size=n_events, p=pop)
    # 60 % of events re-drawn inside the user's home cluster (taste)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    redo = rng.random(n_events) < 0.6
    hc = home[users[redo]]
    pick = rng.random(redo.sum())
    sizes = np.array([len(b) for b in by_cluster])
    offs = np.concatenate(([0], np.cumsum(sizes)))
    flat = np.concatenate(by_cluster)
    items[redo] = flat[offs[hc] + (pick * sizes[hc]).astype(np.int64)]
    # heavy viewers: `history` distinct items each
    hu = np.repeat(np.arange(heavy), history)
    hi = np.concatenate([rng.choice(n_items, history, replace=False, p=pop) for _ in range(heavy)])
    users = np.concatenate([users, hu])
    items = np.concatenate([items, hi])
    n = users.size
    types = rng.choice(np.array(["product_click", "add_to_cart", "purchase"]), n, p=[8 / 11, 2 / 11, 1 / 11])
    t0 = pd.Timestamp("2026-10-01", tz="UTC").value
    ts = t0 + (rng.random(n) * 30 * 86400e9).astype(np.int64)
    streams = rng.integers(0, 200, n)
    ev = pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(users, categories=[f"u{u}" for u in range(n_users)]),
            "item_id": pd.Categorical.from_codes(items, categories=[f"i{i}" for i in range(n_items)]),
            "ts": pd.to_datetime(ts, utc=True),
            "type": types,
            "stream_id": pd.Categorical.from_codes(streams, categories=[f"s{s}" for s in range(200)]),
        }
    )
    cat = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"商品 {i % 97} 款 {i} c{item_cluster[i]}" for i in range(n_items)],
            "description": "",
            "category": [f"c{c}" for c in item_cluster],
            "price": np.round(rng.lognormal(4, 0.6, n_items), 2),
        }
    )
    return ev.sort_values("ts", kind="stable").reset_index(drop=True), cat


def latency(fn, users, reps: int = 1):
    out = []
    for _ in range(reps):
        for u in users:
            t = time.perf_counter()
            fn(u)
            out.append(time.perf_counter() - t)
    a = np.array(out) * 1e6
    return float(np.median(a)), float(np.percentile(a, 99))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=300_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--history", type=int, default=200)
    ap.add_argument("--heavy", type=int, default=300, help="viewers with --history items each (latency sample)")
    ap.add_argument("--no-anchor", action="store_true", help="skip the v1 hybrid fit anchor")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    ev, cat = generate(a.users, a.items, a.events, a.history, a.heavy)
    log(f"generated {len(ev):,} events, {a.items:,} items in {time.perf_counter() - t:.1f}s")
    ref = ev["ts"].max()
    load0 = os.getloadavg()
    t = time.perf_counter()
    m = fit_recipe(ev, cat, ref, progress=log)
    fit_s = time.perf_counter() - t
    anchor_fit = None
    h = None
    if not a.no_anchor:
        t = time.perf_counter()
        h = HybridRecommender(**DEFAULT_RECIPE["base"]).fit_events(ev, cat, reference_time=ref)
        anchor_fit = time.perf_counter() - t
    heavy = [f"u{u}" for u in range(a.heavy)]
    m.recommend(heavy[0], 10)  # compile / warm
    med, p99 = latency(lambda u: m.recommend(u, 10), heavy, 3)
    smed, sp99 = latency(lambda u: m.recommend(u, 10, stream_id="s7"), heavy, 1)
    hist = np.diff(m.base.user_items_.indptr)[m.base._user_index.get_indexer(heavy)]
    print(
        f"data: {len(ev):,} events, {a.items:,} items, {a.users:,} users; latency viewers' history "
        f"median {int(np.median(hist))} items (capped at {m.max_history})"
    )
    print(f"fit_recipe (whole train recipe: state twice + label queries + ranker): {fit_s:7.1f} s")
    if anchor_fit is not None:
        print(f"  anchor: v1 HybridRecommender.fit_events on the same events:          {anchor_fit:7.1f} s")
    print(f"RoomRanker.recommend, k=10, catalogue:  median {med:7.0f} µs  p99 {p99:7.0f} µs")
    print(f"RoomRanker.recommend, k=10, with stream: median {smed:7.0f} µs  p99 {sp99:7.0f} µs")
    if h is not None:
        hmed, hp99 = latency(lambda u: h.recommend(u, 10), heavy, 3)
        print(f"  anchor: v1 HybridRecommender.recommend:  median {hmed:7.0f} µs  p99 {hp99:7.0f} µs")
    print(f"load average before / after: {load0[0]:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
