"""Benchmark: fit time vs implicit's CosineRecommender and single-user latency.

    python bench/bench_recommend.py                       # 50k items, 1M users, 10M events
    python bench/bench_recommend.py --quick               # 20k items, 100k users, 1M events
    python bench/bench_recommend.py --users N --items M --events E [--neighbours 100]

Synthetic data (numpy, seeded): items have power-law (Zipf-like) popularity
and belong to one of ``--clusters`` taste clusters; users have lognormal
activity and a home cluster; 80 % of a user's events fall in the home
cluster (drawn by popularity inside it), 20 % anywhere.  Every event is an
implicit positive; duplicates are summed then binarised.

Measured, in the same process and on the same matrix:
* our ``ItemItemCF(cosine, neighbours=N)`` fit (blockwise co-occurrence +
  top-N pruning) vs ``implicit.nearest_neighbours.CosineRecommender(K=N)``;
* in-process single-user ``recommend_indices`` latency (median / p99 over
  2000 random users with history), and implicit's ``recommend`` for one user;
* optionally (``--hybrid``) the full ``HybridRecommender.recommend`` latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.reco.itemknn import ItemItemCF


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def generate(n_users: int, n_items: int, n_events: int, n_clusters: int = 100, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    # item popularity: Zipf-like power law over a random item order
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    pop = pop[rng.permutation(n_items)]
    item_cluster = rng.integers(0, n_clusters, n_items)
    order = np.argsort(item_cluster, kind="stable")  # items grouped by cluster
    cum = np.cumsum(pop[order])
    cum /= cum[-1]
    bounds = np.searchsorted(item_cluster[order], np.arange(n_clusters + 1))
    lo = np.concatenate(([0.0], cum))[bounds[:-1]]
    hi = cum[np.maximum(bounds[1:] - 1, 0)]
    # users: lognormal activity, home cluster
    act = rng.lognormal(0.0, 1.0, n_users)
    act /= act.sum()
    users = rng.choice(n_users, size=n_events, p=act)
    home = rng.integers(0, n_clusters, n_users)[users]
    u = rng.random(n_events)
    in_home = rng.random(n_events) < 0.8
    target = np.where(in_home, lo[home] + u * (hi[home] - lo[home]), u)
    items = order[np.minimum(np.searchsorted(cum, target), n_items - 1)]
    X = sp.coo_matrix((np.ones(n_events, dtype=np.float32), (users, items)), shape=(n_users, n_items)).tocsr()
    X.data[:] = 1.0
    return X


def latency(fn, users, X):
    times = np.empty(len(users))
    for k, u in enumerate(users):
        row_idx = X.indices[X.indptr[u] : X.indptr[u + 1]].astype(np.int64)
        row_w = X.data[X.indptr[u] : X.indptr[u + 1]].astype(np.float64)
        t0 = time.perf_counter()
        fn(u, row_idx, row_w)
        times[k] = time.perf_counter() - t0
    t = times * 1e6
    return float(np.median(t)), float(np.percentile(t, 99))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--neighbours", type=int, default=100)
    ap.add_argument("--latency-users", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="20k items, 100k users, 1M events")
    ap.add_argument("--no-implicit", action="store_true")
    ap.add_argument("--hybrid", action="store_true", help="also time HybridRecommender.recommend")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.items, args.events = 100_000, 20_000, 1_000_000

    print(
        f"bench_recommend: users={args.users} items={args.items} events={args.events} neighbours={args.neighbours} cpus={os.cpu_count()}"
    )
    t0 = time.perf_counter()
    X = generate(args.users, args.items, args.events, args.clusters, args.seed)
    print(f"generate+csr: {time.perf_counter() - t0:.1f}s  nnz={X.nnz}  max items/user={np.diff(X.indptr).max()}")

    from shared.reco._kernels import HAVE_NUMBA

    t0 = time.perf_counter()  # numba JIT: compiled once, then loaded from its on-disk cache
    ItemItemCF("cosine", neighbours=2).fit(X[:50, :50])
    print(
        f"engine: {'numba' if HAVE_NUMBA else 'scipy'}  (kernel load/compile warm-up {time.perf_counter() - t0:.2f}s, not counted)"
    )
    t0 = time.perf_counter()
    model = ItemItemCF("cosine", neighbours=args.neighbours).fit(X)
    ours_fit = time.perf_counter() - t0
    print(f"ours   ItemItemCF(cosine, {args.neighbours}) fit: {ours_fit:.2f}s  (W nnz={model.W_.nnz})")

    rng = np.random.default_rng(1)
    active = np.flatnonzero(np.diff(X.indptr) > 0)
    sample = rng.choice(active, size=min(args.latency_users, active.size), replace=False)
    hist = np.diff(X.indptr)[sample]
    print(
        f"latency sample: {sample.size} users, items/user median {np.median(hist):.0f} p99 {np.percentile(hist, 99):.0f}"
    )

    med, p99 = latency(lambda u, i, w: model.recommend_indices(i, w, 10), sample, X)
    print(f"ours   single-user recommend_indices (N=10): median {med:.0f} µs  p99 {p99:.0f} µs")

    if not args.no_implicit:
        from implicit.nearest_neighbours import CosineRecommender

        t0 = time.perf_counter()
        imp = CosineRecommender(K=args.neighbours)
        imp.fit(X, show_progress=False)
        imp_fit = time.perf_counter() - t0
        print(
            f"implicit CosineRecommender(K={args.neighbours}) fit: {imp_fit:.2f}s  (ratio ours/implicit {ours_fit / imp_fit:.2f}x)"
        )
        med_i, p99_i = latency(
            lambda u, i, w: imp.recommend(int(u), X[u], N=10, filter_already_liked_items=True), sample, X
        )
        print(f"implicit single-user recommend (N=10): median {med_i:.0f} µs  p99 {p99_i:.0f} µs")

    if args.hybrid:
        import pandas as pd

        from shared.reco.hybrid import HybridRecommender
        from shared.reco.interactions import Interactions

        t0 = time.perf_counter()
        inter = Interactions(
            matrix=X, user_ids=np.arange(X.shape[0]).astype(str), item_ids=np.arange(X.shape[1]).astype(str)
        )
        h = HybridRecommender(cf="itemknn", cf_params={"similarity": "cosine", "neighbours": args.neighbours}).fit(
            inter
        )
        print(f"hybrid fit (itemknn + popularity, no content): {time.perf_counter() - t0:.2f}s")
        ids = np.asarray(inter.user_ids)
        med_h, p99_h = latency(lambda u, i, w: h.recommend(ids[u], 10), sample[:500], X)
        print(f"hybrid single-user recommend (N=10, reasons+parts): median {med_h:.0f} µs  p99 {p99_h:.0f} µs")
        del pd


if __name__ == "__main__":
    main()
