"""Offline evaluation CLI.

Two modes.  The honest protocols of issue 9 (``shared.reco.protocol``; docs/evaluation.md)::

    python -m devtools.evaluate --data FILE [--format auto|csv|parquet|tafeng|movielens]
        [--user-col C --item-col C --time-col C --type-col C --stream-col C --weight-col C]
        [--items PATH] [--target purchase|cart|any] [--split leave-last,global-time]
        [--variant all,new] [--in-stream | --no-in-stream] [--model served,hybrid]
        [--max-queries 5000] [--k 10] [--json out.json]

one table block per (split, variant): NDCG / HR / Recall@k of every baseline and model, and each
model's NDCG ratio to the best baseline with its 95 % paired-bootstrap interval.  They run for
every non-MovieLens file, and for MovieLens when any of those flags is given.

The legacy MovieLens protocols (``make evaluate``, unchanged)::

    python -m devtools.evaluate [--data PATH] [--format movielens|csv|parquet]
                                   [--items PATH] [--k 10] [--json out.json]
                                   [--protocols temporal,random_item,random_user]

``--data`` is an interactions file (CSV / Parquet with user, item, timestamp
and optional weight / type columns) or a MovieLens-100k directory (``u.data``
+ ``u.item``; titles + genres become the item text).  Without ``--data`` the
MovieLens-100k copy at ``../shared/data/ml-100k`` (relative to the repository)
is used when present; it is read in place, never copied.

Protocols (every interaction is an implicit positive; the user's training
items are filtered from the recommendations; top-k):

* ``temporal``    — per-user leave-last-out (last interaction by time -> test)
* ``random_item`` — MS Recommenders stratified random split, 75 % of every
                    ITEM's interactions to train, seed 42 (the issue's protocol)
* ``random_user`` — the same stratified per USER (MS Recommenders' default)

Hyper-parameters (EASE λ, number of neighbours, hybrid content weight) are
tuned on a validation split carved from the training part with the same
protocol; the test part is only used for the final figures.
Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.reco.content import ContentModel
from shared.reco.ease import EASE
from shared.reco.hybrid import HybridRecommender
from shared.reco.interactions import DEFAULT_ACTION_WEIGHTS, Interactions
from shared.reco.itemknn import ItemItemCF
from shared.reco.metrics import ranking_metrics
from shared.reco.popularity import Popularity
from shared.reco.splits import stratified_split, temporal_leave_last_out, validation_split

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ML100K = REPO_ROOT.parent / "shared" / "data" / "ml-100k"

EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 800.0, 1200.0)
KNN_NEIGHBOURS = (20, 50, 100, 200, None)
CONTENT_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.2)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------- loading
def load_movielens(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = Path(path)
    df = pd.read_csv(path / "u.data", sep="\t", names=["user_id", "item_id", "rating", "ts"])
    genres = []
    gfile = path / "u.genre"
    if gfile.exists():
        g = pd.read_csv(gfile, sep="|", names=["genre", "gid"], encoding="latin-1").dropna()
        genres = g.sort_values("gid")["genre"].tolist()
    cols = ["item_id", "title", "release", "video_release", "url"] + (genres or [f"g{k}" for k in range(19)])
    items = pd.read_csv(path / "u.item", sep="|", names=cols, encoding="latin-1")
    gmat = items[cols[5:]].to_numpy(dtype=bool)
    gnames = np.array(cols[5:], dtype=object)
    items["category"] = [" ".join(gnames[row]) for row in gmat]
    items["title"] = items["title"].fillna("")
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].astype(str),
            "item_id": df["item_id"].astype(str),
            "ts": df["ts"].astype(np.float64),
            "w": 1.0,
        }
    )
    it = pd.DataFrame({"item_id": items["item_id"].astype(str), "title": items["title"], "category": items["category"]})
    return out, it


def _pick(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in df.columns:
            return n
    return None


def load_table(path: Path, fmt: str, items_path: Path | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    u = _pick(df, ("user_id", "user", "userId", "userID"))
    i = _pick(df, ("item_id", "item", "itemId", "itemID", "movieId"))
    t = _pick(df, ("ts", "timestamp", "time"))
    if u is None or i is None:
        raise SystemExit(f"{path}: need user and item columns, got {list(df.columns)}")
    ts = df[t] if t else pd.Series(np.arange(len(df)), index=df.index)
    if not pd.api.types.is_numeric_dtype(ts):
        ts = (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    if "weight" in df:
        w = df["weight"].astype(np.float64)
    elif "type" in df:
        w = df["type"].map(DEFAULT_ACTION_WEIGHTS).fillna(0.0).astype(np.float64)
    else:
        w = pd.Series(1.0, index=df.index)
    out = pd.DataFrame(
        {"user_id": df[u].astype(str), "item_id": df[i].astype(str), "ts": ts.astype(np.float64), "w": w}
    )
    out = out[out["w"] > 0].reset_index(drop=True)
    items = None
    if items_path is not None:
        items = pd.read_parquet(items_path) if str(items_path).endswith(".parquet") else pd.read_csv(items_path)
        ic = _pick(items, ("item_id", "item", "itemId", "movieId"))
        items = items.rename(columns={ic: "item_id"})
        items["item_id"] = items["item_id"].astype(str)
    return out, items


# -------------------------------------------------------------- evaluation
class Space:
    """Global id -> index mapping shared by train / validation / test."""

    def __init__(self, df: pd.DataFrame):
        self.users = pd.Index(pd.unique(df["user_id"]))
        self.items = pd.Index(pd.unique(df["item_id"]))

    def matrix(self, d: pd.DataFrame, binary: bool = False) -> sp.csr_matrix:
        u = self.users.get_indexer(d["user_id"])
        i = self.items.get_indexer(d["item_id"])
        w = np.ones(len(d)) if binary else d["w"].to_numpy(dtype=np.float64)
        X = sp.coo_matrix((w, (u, i)), shape=(len(self.users), len(self.items))).tocsr()
        X.data = np.maximum(X.data, 0)
        X.eliminate_zeros()
        X.sort_indices()
        return X.astype(np.float32)


def _topk_from_scores(scores: np.ndarray, Xtrain_rows: sp.csr_matrix, k: int) -> np.ndarray:
    from shared.reco._core import top_k_rows

    scores = np.array(scores, dtype=np.float64, copy=True)
    r, c = Xtrain_rows.nonzero()
    scores[r, c] = -np.inf
    ids, vals = top_k_rows(scores, k)
    return np.where(np.isfinite(vals), ids, -1)


def _eval_users(Xtest: sp.csr_matrix) -> np.ndarray:
    return np.flatnonzero(np.diff(Xtest.indptr) > 0)


def _score(model, X: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
    """Top-k item indices for ``users`` (training items filtered)."""
    rows = X[users]
    if isinstance(model, ImplicitCosine):
        return model.topk(users, rows, k)
    return _topk_from_scores(model.score_batch(rows), rows, k)


class ImplicitCosine:
    """Baseline: implicit.nearest_neighbours.CosineRecommender."""

    def __init__(self, K: int = 20):
        self.K = K

    def fit(self, X):
        from implicit.nearest_neighbours import CosineRecommender

        self.m = CosineRecommender(K=self.K)
        self.m.fit(sp.csr_matrix(X, dtype=np.float64), show_progress=False)
        return self

    def topk(self, users, rows, k):
        ids, scores = self.m.recommend(users, rows, N=k, filter_already_liked_items=True)
        return np.where(np.isfinite(scores) & (scores > -1e30), ids, -1)

    def latency_call(self, u, row):
        return lambda: self.m.recommend(int(u), row, N=10, filter_already_liked_items=True)


def _fit_eval(make, Xtr, Xte, k, n_items):
    t0 = time.perf_counter()
    model = make().fit(Xtr)
    fit_s = time.perf_counter() - t0
    users = _eval_users(Xte)
    rec = _score(model, Xtr, users, k)
    m = ranking_metrics(rec, Xte[users], k, n_items)
    return model, m, fit_s


def _latency(model, Xtr: sp.csr_matrix, users: np.ndarray, hybrid_ids=None, n: int = 300) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    sample = rng.choice(users, size=min(n, users.size), replace=False) if users.size else users
    times = []
    for u in sample:
        row = Xtr[u]
        if isinstance(model, ImplicitCosine):
            call = model.latency_call(u, row)
        elif isinstance(model, HybridRecommender):
            uid = hybrid_ids[u]
            call = lambda uid=uid: model.recommend(uid, 10)
        elif isinstance(model, Popularity):
            call = lambda row=row: model.recommend(row, 10)
        else:
            idx, w = row.indices.astype(np.int64), row.data.astype(np.float64)
            call = lambda idx=idx, w=w: model.recommend_indices(idx, w, 10)
        call()  # warm
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    if not times:
        return float("nan"), float("nan")
    t = np.array(times) * 1e6
    return float(np.median(t)), float(np.percentile(t, 99))


def _tune(name, candidates, make, Xtr2, Xval, k, n_items):
    """Pick the candidate with the best validation NDCG@k."""
    best = None
    for c in candidates:
        _, m, _ = _fit_eval(lambda: make(c), Xtr2, Xval, k, n_items)  # noqa: B023 (called in this iteration)
        log(f"    tune {name} {c!r}: val ndcg@{k}={m[f'ndcg@{k}']:.4f} p@{k}={m[f'precision@{k}']:.4f}")
        if best is None or m[f"ndcg@{k}"] > best[1]:
            best = (c, m[f"ndcg@{k}"])
    return best[0]


def split(df: pd.DataFrame, protocol: str, seed: int = 42):
    if protocol == "temporal":
        return temporal_leave_last_out(df, user_col="user_id", time_col="ts")
    if protocol == "random_item":
        return stratified_split(df, 0.75, filter_by="item", seed=seed)
    if protocol == "random_user":
        return stratified_split(df, 0.75, filter_by="user", seed=seed)
    raise ValueError(protocol)


def run_protocol(df, items, protocol, k=10, binary=True, seed=42, models=None, truth=None, truth_users=500):
    log(f"== protocol {protocol}")
    space = Space(df)
    n_items = len(space.items)
    train, test = split(df, protocol, seed)
    tr2, val = validation_split(
        train,
        "temporal" if protocol == "temporal" else "random",
        seed=seed,
        filter_by="user" if protocol == "random_user" else "item",
    )
    Xtr, Xte = space.matrix(train, binary), space.matrix(test, True)
    Xtr2, Xval = space.matrix(tr2, binary), space.matrix(val, True)
    log(
        f"  train {len(train)} test {len(test)} (validation: {len(tr2)} / {len(val)}) users {len(space.users)} items {n_items}"
    )
    texts = None
    if items is not None:
        it = items.drop_duplicates("item_id").set_index("item_id").reindex(space.items)
        from shared.reco.content import item_texts

        texts = item_texts(it)

    specs = {}
    specs["most_popular"] = (lambda: Popularity(binary=True), {})
    lam = _tune("EASE lam", EASE_LAMBDAS, lambda c: EASE(lam=c), Xtr2, Xval, k, n_items)
    specs["ease"] = (lambda: EASE(lam=lam), {"lam": lam})
    for sim in ("cosine", "jaccard", "lift"):
        nb = _tune(
            f"itemknn-{sim} neighbours", KNN_NEIGHBOURS, lambda c, sim=sim: ItemItemCF(sim, c), Xtr2, Xval, k, n_items
        )
        specs[f"itemknn_{sim}"] = (lambda sim=sim, nb=nb: ItemItemCF(sim, nb), {"neighbours": nb})
    K = _tune("implicit-cosine K", (20, 50, 100, 200), lambda c: ImplicitCosine(c), Xtr2, Xval, k, n_items)
    specs["implicit_cosine (baseline)"] = (lambda: ImplicitCosine(K), {"K": K})
    if texts is not None:
        specs["content_tfidf"] = (lambda: _ContentOnly(texts), {"analyzer": "char_wb(1,3)"})

        def make_h(cw, Xfit_ids=None):
            return _HybridEval(lam, cw, texts, space)

        cw = _tune("hybrid content_weight", CONTENT_WEIGHTS, make_h, Xtr2, Xval, k, n_items)
        specs["hybrid (ease+content+pop)"] = (
            lambda: _HybridEval(lam, cw, texts, space),
            {"lam": lam, "content_weight": cw},
        )

    rows = []
    users = _eval_users(Xte)
    for name, (make, params) in specs.items():
        if models and not any(m in name for m in models):
            continue
        log(f"  fit+eval {name} {params}")
        model, m, fit_s = _fit_eval(make, Xtr, Xte, k, n_items)
        lat_model = model.h if isinstance(model, _HybridEval) else model
        med, p99 = _latency(lat_model, Xtr, users, hybrid_ids=np.asarray(space.users).astype(str))
        row = {
            "protocol": protocol,
            "model": name,
            **m,
            "fit_s": fit_s,
            "latency_us_median": med,
            "latency_us_p99": p99,
            "params": params,
        }
        if truth is not None:  # simulator: the true tastes of the recommended items
            row.update(_truth_metrics(model, Xtr, users[:truth_users], k, space, truth))
        rows.append(row)
    return rows


def _truth_metrics(model, Xtr, users, k, space, truth) -> dict:
    """Mean TRUE affinity / purchase probability (``sim.truth``) of each user's top-k (training items
    excluded), averaged over users — the ground truth the simulator knows and real data never has."""
    top = _score(model, Xtr, users, k)
    aff, pp = [], []
    for u, r in zip(users, top):
        ids = [str(x) for x in space.items[r[r >= 0]]]
        if ids:
            uid = str(space.users[u])
            aff.append(float(np.mean(truth.affinity(uid, ids))))
            pp.append(float(np.mean(truth.purchase_prob(uid, ids))))
    return {
        "true_affinity": float(np.mean(aff)) if aff else 0.0,
        "true_purchase_prob": float(np.mean(pp)) if pp else 0.0,
    }


_SIM_CACHE: dict = {}


def load_simulator(seed: int, n_streams: int, n_users: int, n_items: int, viewers: float):
    """A simulated world: clean events (typed, action weights) + catalogue + the ground truth."""
    from devtools.simulator import SimConfig, simulate

    sim = simulate(
        SimConfig(seed=seed, n_streams=n_streams, n_users=n_users, n_items=n_items, mean_viewers_per_stream=viewers)
    )
    ev = sim.truth.expected_clean()
    _SIM_CACHE.update(events=ev, catalog=sim.truth.catalog_frame())
    ev = ev[ev["item_id"].notna() & ev["user_id"].notna()]
    w = ev["type"].astype(str).map(DEFAULT_ACTION_WEIGHTS).fillna(0.0).astype(np.float64)
    ts = (pd.to_datetime(ev["ts_utc"], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    df = pd.DataFrame(
        {
            "user_id": ev["user_id"].astype(str).to_numpy(),
            "item_id": ev["item_id"].astype(str).to_numpy(),
            "ts": ts.to_numpy(np.float64),
            "w": w.to_numpy(),
        }
    )
    df = df[df["w"] > 0].reset_index(drop=True)
    cat = sim.truth.catalog_frame()
    items = cat[[c for c in ("item_id", "title", "description", "category") if c in cat]].copy()
    items["item_id"] = items["item_id"].astype(str)
    return df, items, sim.truth


def run_instream(
    sim_events: pd.DataFrame,
    catalog: pd.DataFrame,
    k: int = 10,
    holdout_frac: float = 0.2,
    max_pairs: int = 5000,
    reasons_pairs: int = 300,
) -> list[dict]:
    """The in-stream protocol of the train job (``shared.reco.instream``) on simulator events: time split
    at the ``1 - holdout_frac`` quantile of item events; the blend (content, popularity weights and
    ``stream_pop_mix``) is tuned on a validation split carved from the TRAINING part the same way; then
    every (user, stream) pair of the holdout ranks its stream's showcase.  Baselines: stream
    bestsellers and showcase (global) popularity.  ``reasons_match``: share of ``recommend`` items (on
    ``reasons_pairs`` pairs) whose reason names their largest score part."""
    from shared.reco.instream import instream_parts, stream_pairs, tune_blend

    ev = sim_events.copy()
    ev["ts"] = pd.to_datetime(ev["ts_utc"] if "ts_utc" in ev else ev["ts"], utc=True)
    items = catalog[[c for c in ("item_id", "title", "description", "category", "price") if c in catalog]].copy()
    items["item_id"] = items["item_id"].astype(str)
    showcases: dict[str, set] = {}
    if "stream_ids" in catalog:
        for it, sids in zip(catalog["item_id"].astype(str), catalog["stream_ids"]):
            for s_ in sids if sids is not None else ():
                showcases.setdefault(str(s_), set()).add(it)
    seen = ev.loc[ev["stream_id"].notna() & ev["item_id"].notna(), ["stream_id", "item_id"]].drop_duplicates()
    for s_, it in zip(seen["stream_id"].astype(str), seen["item_id"].astype(str)):
        showcases.setdefault(s_, set()).add(it)
    showcases = {key: sorted(v) for key, v in showcases.items()}

    def qsplit(d):
        return d.loc[d["item_id"].notna(), "ts"].quantile(1.0 - holdout_frac)

    ids = HybridRecommender.catalogue_ids(ev, items)
    base = dict(cf="ease", cf_params={"lam": 200.0, "neighbours": 100}, content_weight=0.1, popularity_weight=0.2)
    content = HybridRecommender(**base).fit_content(ids, items)
    split = qsplit(ev)
    train, hold = ev[ev["ts"] <= split], ev[ev["ts"] > split]
    vsplit = qsplit(train)
    m = HybridRecommender(**base).fit_events(
        train[train["ts"] <= vsplit], items, reference_time=vsplit, item_ids=ids, content=content
    )
    vp = stream_pairs(m, train[train["ts"] > vsplit], showcases, 3000)
    vparts = instream_parts(m, vp, showcases)
    grid_c, grid_p, grid_m = (0.0, 0.1, 0.3, 0.5, 1.0), (0.0, 0.05, 0.1, 0.2, 0.3, 0.5), (0.0, 0.25, 0.5, 0.75, 1.0)
    best, _ = tune_blend(vparts, grid_c, grid_p, k, stream_pop_mixes=grid_m)
    best_nomix, _ = tune_blend(vparts, grid_c, grid_p, k)
    log(f"  in-stream: validation {len(vp)} pairs, tuned {best}, without the mix {best_nomix}")
    rows = []
    for name, params in (
        (
            "hybrid (tuned, stream_pop_mix)",
            {k_: best[k_] for k_ in ("content_weight", "popularity_weight", "stream_pop_mix")},
        ),
        (
            "hybrid (tuned, stream popularity only)",
            {k_: best_nomix[k_] for k_ in ("content_weight", "popularity_weight")},
        ),
    ):
        t0 = time.perf_counter()
        h = HybridRecommender(**{**base, **params}).fit_events(
            train, items, reference_time=split, item_ids=ids, content=content
        )
        fit_s = time.perf_counter() - t0
        pairs = stream_pairs(h, hold, showcases, max_pairs)
        parts = instream_parts(h, pairs, showcases)
        res = {
            "model": (h.cf_weight, h.content_weight, h.popularity_weight, "stream", h.stream_pop_mix),
            "stream_bestsellers": (0.0, 0.0, 1.0, "stream", 0.0),
            "showcase_popularity": (0.0, 0.0, 1.0, "global", 0.0),
        }
        if not rows:  # baselines once (same pairs for every model fitted on the same part)
            for bname in ("stream_bestsellers", "showcase_popularity"):
                rows.append(_instream_row(bname, parts, pairs, res[bname], k, 0.0, {}))
        row = _instream_row(name, parts, pairs, res["model"], k, fit_s, params)
        # reasons vs parts on recommend itself
        ok = tot = 0
        for u, s_ in list(zip(pairs.users, pairs.streams))[:reasons_pairs]:
            for it in h.recommend(u, k, stream_id=s_, allowed_items=showcases[s_])["items"]:
                part = max(it["parts"], key=lambda p_: it["parts"][p_])
                kind = it["reason"]["kind"]
                tot += 1
                if part in ("cf", "content") and it["parts"][part] > 0:
                    ok += kind in ("because_you", "similar_to") and it["reason"].get("via") == part
                else:
                    ok += kind in ("popular_in_stream", "popular")
        row["reasons_match"] = ok / tot if tot else 1.0
        rows.append(row)
    return rows


def _instream_row(name, parts, pairs, blend, k, fit_s, params) -> dict:

    w_cf, w_ct, w_p, kind, mix = blend
    top = parts.topk(w_cf, w_ct, w_p, k, kind, mix)
    rel_pos = [
        set(np.flatnonzero(parts.rel[parts.ptr[p] : parts.ptr[p + 1]]) + parts.ptr[p]) for p in range(len(pairs))
    ]
    hits = np.array([[t in rel_pos[p] for t in row] for p, row in enumerate(top)], dtype=bool)
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    nrel = parts.n_rel
    idcg = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(nrel, k)]
    ndcg = np.divide((hits * disc).sum(1), idcg, out=np.zeros(len(nrel)), where=idcg > 0)
    cov_items = set(parts.item[top[top >= 0]].tolist())
    return {
        "protocol": "in_stream",
        "model": name,
        f"precision@{k}": float(hits.sum(1).mean() / k),
        f"recall@{k}": float(np.mean(hits.sum(1) / np.maximum(nrel, 1))),
        f"ndcg@{k}": float(ndcg.mean()),
        f"map@{k}": float("nan"),
        f"hitrate@{k}": float(hits.any(1).mean()),
        "coverage": len(cov_items) / max(len(parts.item_ids), 1),
        "fit_s": fit_s,
        "latency_us_median": float("nan"),
        "latency_us_p99": float("nan"),
        "params": params,
        "pairs": len(pairs),
        "ndcg_check": ndcg_fast_value(parts, blend, k),
    }


def ndcg_fast_value(parts, blend, k):
    from shared.reco.instream import ndcg_fast

    w_cf, w_ct, w_p, kind, mix = blend
    return ndcg_fast(parts, w_cf, w_ct, w_p, k, kind, mix)


class _ContentOnly(ContentModel):
    def __init__(self, texts=None, **kw):
        super().__init__(**kw)
        self._texts = texts

    def get_params(self):
        return {}

    def fit(self, X):
        return super().fit(self._texts)


class _HybridEval:
    """Adapter: fit a HybridRecommender on a matrix of the evaluation space."""

    def __init__(self, lam, content_weight, texts, space):
        self.lam, self.cw, self.texts, self.space = lam, content_weight, texts, space

    def fit(self, X):
        inter = Interactions(
            matrix=X,
            user_ids=np.asarray(self.space.users).astype(str),
            item_ids=np.asarray(self.space.items).astype(str),
        )
        items = pd.DataFrame({"item_id": np.asarray(self.space.items).astype(str), "title": self.texts})
        self.h = HybridRecommender(cf="ease", cf_params={"lam": self.lam}, content_weight=self.cw).fit(inter, items)
        return self

    def score_batch(self, rows):
        return self.h.score_batch(rows)


def format_table(rows, k=10) -> str:
    hdr = f"{'protocol':<12} {'model':<28} {'P@' + str(k):>7} {'R@' + str(k):>7} {'NDCG@' + str(k):>8} {'MAP@' + str(k):>7} {'HR@' + str(k):>7} {'cov':>6} {'fit s':>7} {'lat µs':>8} {'p99 µs':>8}  params"
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        lines.append(
            f"{r['protocol']:<12} {r['model']:<28} {r[f'precision@{k}']:7.4f} {r[f'recall@{k}']:7.4f} {r[f'ndcg@{k}']:8.4f} "
            f"{r[f'map@{k}']:7.4f} {r[f'hitrate@{k}']:7.4f} {r['coverage']:6.3f} {r['fit_s']:7.3f} "
            f"{r['latency_us_median']:8.0f} {r['latency_us_p99']:8.0f}  {json.dumps(r['params'])}"
            + (
                f"  true_aff {r['true_affinity']:.3f} true_pbuy {r['true_purchase_prob']:.4f}"
                if "true_affinity" in r
                else ""
            )
            + (f"  pairs {r['pairs']}" if "pairs" in r else "")
            + (f"  reasons_match {r['reasons_match']:.3f}" if "reasons_match" in r else "")
        )
    return "\n".join(lines)


NEW_FLAGS = (
    "user_col",
    "item_col",
    "time_col",
    "type_col",
    "stream_col",
    "weight_col",
    "target",
    "split",
    "variant",
    "in_stream",
    "model",
    "max_queries",
)


def _quiet():
    """Progress only on stderr: silence library warning floods (implicit / OpenBLAS threads,
    pandas FutureWarnings, numba)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*OpenBLAS.*")
    warnings.filterwarnings("ignore", message=".*thread.*")
    warnings.filterwarnings("ignore", module="implicit")
    warnings.filterwarnings("ignore", module="numba")
    import logging

    for name in ("implicit", "numba", "shared.reco"):
        logging.getLogger(name).setLevel(logging.ERROR)


class ModelUnavailable(RuntimeError):
    pass


def _model_rankers(names: list[str]):
    from shared.reco.protocol import HybridRanker, RecommendRanker

    out = []
    for name in names:
        if name == "served":
            try:
                from shared.reco.recipe import env_recipe, fit_recipe
            except Exception as e:
                raise ModelUnavailable(
                    f"--model served needs shared.reco.recipe.fit_recipe, which cannot be "
                    f"imported: {type(e).__name__}: {e}"
                ) from None
            # the train function's recipe (DEFAULT_RECIPE + $DAIHUO_TRAIN_PARAMS), through the same call
            out.append(RecommendRanker(lambda tr, it, ref, f=fit_recipe, p=env_recipe(): f(tr, it, ref, p), "served"))
        elif name == "hybrid":
            out.append(HybridRanker("hybrid"))
        else:
            raise ModelUnavailable(f"unknown --model {name!r}; known: served, hybrid")
    return out


def run_honest(args, data: Path, fmt: str) -> int:
    """The issue-9 protocols: one block per (split, variant)."""
    from shared.reco import protocol as P

    t0 = time.perf_counter()
    try:
        models = _model_rankers([m.strip() for m in (args.model or "").split(",") if m.strip()])
    except ModelUnavailable as e:
        log(f"error: {e}")
        return 2
    log(f"loading {data} ({fmt})")
    try:
        ev, items = P.load_interactions(
            data,
            fmt=fmt,
            user_col=args.user_col,
            item_col=args.item_col,
            time_col=args.time_col,
            type_col=args.type_col,
            stream_col=args.stream_col,
            weight_col=args.weight_col,
            default_type=args.default_type,
            time_unit=args.time_unit,
        )
        if args.items is not None:
            items = P.load_items(args.items, item_col=args.item_col if args.item_col else None)
    except (P.ColumnError, FileNotFoundError, ValueError) as e:
        log(f"error: {e}")
        return 2
    has_stream = "stream_id" in ev and ev["stream_id"].notna().any()
    in_stream = has_stream if args.in_stream is None else args.in_stream
    types = ev["type"].value_counts().to_dict()
    log(
        f"{len(ev)} events, {ev['user_id'].nunique()} users, {ev['item_id'].nunique()} items, types {types}"
        f"{', streams ' + str(ev['stream_id'].nunique()) if has_stream else ''} ({time.perf_counter() - t0:.1f}s)"
    )
    splits = [x.strip() for x in (args.split or "leave-last,global-time").split(",") if x.strip()]
    variants = [x.strip() for x in (args.variant or "all,new").split(",") if x.strip()]
    if in_stream:
        splits = ["global-time"]  # the in-stream protocol always cuts at a global time
    target = args.target or "purchase"
    blocks = []
    for sp_name in splits:
        for variant in variants:
            t1 = time.perf_counter()
            try:
                s = P.make_split(
                    ev,
                    split=sp_name,
                    target=target,
                    variant=variant,
                    in_stream=in_stream,
                    items=items,
                    max_queries=args.max_queries or 5000,
                    test_frac=args.test_frac,
                    horizon=args.horizon,
                )
            except ValueError as e:
                log(f"error: {e}")
                return 2
            log(
                f"== {s.name}: {s.info['queries']} queries (of {s.info['candidate_queries']}), "
                f"{s.info['train_events']} training events ({time.perf_counter() - t1:.1f}s)"
            )
            rankers = P.baseline_rankers(target, in_stream) + _model_rankers([m.name for m in models])
            rep = P.evaluate(s.train, s.queries, items, rankers, args.k, reference_time=s.reference_time, log=log)
            print(P.format_report(rep, s.name), flush=True)
            print(flush=True)
            blocks.append({"name": s.name, "info": s.info, "report": rep})
    log(f"total {time.perf_counter() - t0:.1f}s")
    if args.json:
        args.json.write_text(json.dumps({"data": str(data), "k": args.k, "blocks": blocks}, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    _quiet()
    ap = argparse.ArgumentParser(
        prog="python -m devtools.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=None, help="interactions file or MovieLens-100k dir")
    ap.add_argument("--format", choices=("auto", "movielens", "csv", "parquet", "tafeng"), default=None)
    ap.add_argument(
        "--items",
        type=Path,
        default=None,
        help="item table (csv/parquet: item_id,title,description,category,price[,stream_ids]) or u.item",
    )
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--protocols", default=None, help="legacy protocols (default temporal,random_item,random_user)")
    ap.add_argument("--models", default=None, help="legacy: comma-separated substrings of model names to run")
    g = ap.add_argument_group("issue-9 protocols (shared.reco.protocol)")
    for role in ("user", "item", "time", "type", "stream", "weight"):
        g.add_argument(f"--{role}-col", default=None, help=f"the file's {role} column (default: guessed)")
    g.add_argument("--default-type", default="purchase", help="event type of every row when there is no type column")
    g.add_argument(
        "--time-unit", default=None, choices=("s", "ms", "us", "ns"), help="unit of numeric times (default: guessed)"
    )
    g.add_argument(
        "--target", choices=("purchase", "cart", "any"), default=None, help="relevant event types (default purchase)"
    )
    g.add_argument("--split", default=None, help="leave-last,global-time (comma list; default both)")
    g.add_argument("--variant", default=None, help="all,new (comma list; default both)")
    g.add_argument(
        "--in-stream",
        dest="in_stream",
        action="store_true",
        default=None,
        help="in-stream protocol (default when the file has a stream column)",
    )
    g.add_argument(
        "--no-in-stream", dest="in_stream", action="store_false", help="catalogue protocols even with streams"
    )
    g.add_argument("--model", default=None, help="models to judge besides the baselines: served,hybrid")
    g.add_argument(
        "--max-queries", type=int, default=None, help="sample at most this many queries (md5 of the key; default 5000)"
    )
    g.add_argument("--test-frac", type=float, default=0.2, help="global-time: share of target events after the cut")
    g.add_argument("--horizon", default=None, help="global-time: test window after the cut (e.g. 7D)")
    ap.add_argument("--weighted", action="store_true", help="use weights instead of binary interactions")
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    ap.add_argument(
        "--simulator",
        action="store_true",
        help="evaluate on a simulated world (devtools.simulator) and "
        "also report the ground truth: mean true affinity / purchase probability of the top-k",
    )
    ap.add_argument("--seed", type=int, default=7, help="--simulator: world seed")
    ap.add_argument("--sim-streams", type=int, default=30)
    ap.add_argument("--sim-users", type=int, default=10000)
    ap.add_argument("--sim-items", type=int, default=1000)
    ap.add_argument("--sim-viewers", type=float, default=300.0)
    ap.add_argument("--no-instream", action="store_true", help="--simulator: skip the in-stream protocol")
    args = ap.parse_args(argv)
    explicit_new = any(getattr(args, f) is not None for f in NEW_FLAGS)
    if args.simulator:
        log(f"simulating seed={args.seed} streams={args.sim_streams} users={args.sim_users} items={args.sim_items}")
        df, items, truth = load_simulator(args.seed, args.sim_streams, args.sim_users, args.sim_items, args.sim_viewers)
        log(f"{len(df)} positive interactions, {df['user_id'].nunique()} users, {df['item_id'].nunique()} items")
        protocols = args.protocols or "temporal,random_item"
        models = args.models.split(",") if args.models else None
        rows = []
        for p in [p.strip() for p in protocols.split(",") if p.strip()]:
            rows += run_protocol(df, items, p, args.k, binary=not args.weighted, models=models, truth=truth)
        if not args.no_instream:
            log("== protocol in_stream (time split, showcase ranked per (user, stream), as the train job's gate)")
            rows += run_instream(_SIM_CACHE["events"], _SIM_CACHE["catalog"], args.k)
        print(format_table(rows, args.k))
        if args.json:
            args.json.write_text(
                json.dumps({"data": f"simulator seed={args.seed}", "k": args.k, "results": rows}, indent=2)
            )
        return 0

    data = args.data
    if data is None:
        if not DEFAULT_ML100K.exists():
            ap.error(f"--data is required ({DEFAULT_ML100K} not found)")
        data = DEFAULT_ML100K
    from shared.reco.protocol import _guess_format

    fmt = args.format if args.format not in (None, "auto") else _guess_format(Path(data))
    if args.protocols is None and (explicit_new or fmt != "movielens"):
        return run_honest(args, Path(data), fmt)
    if fmt == "tafeng":
        ap.error("the legacy --protocols do not read Ta Feng; drop --protocols")
    log(f"loading {data} ({fmt})")
    if fmt == "movielens":
        df, items = load_movielens(Path(data))
        if args.items is not None:
            log("--items ignored for movielens (u.item is used)")
    else:
        df, items = load_table(Path(data), fmt, args.items)
    log(f"{len(df)} interactions, {df['user_id'].nunique()} users, {df['item_id'].nunique()} items")
    models = args.models.split(",") if args.models else None
    rows = []
    t0 = time.perf_counter()
    for p in [p.strip() for p in (args.protocols or "temporal,random_item,random_user").split(",") if p.strip()]:
        rows += run_protocol(df, items, p, args.k, binary=not args.weighted, models=models)
    print(format_table(rows, args.k))
    log(f"total {time.perf_counter() - t0:.1f}s")
    if args.json:
        args.json.write_text(json.dumps({"data": str(data), "k": args.k, "results": rows}, indent=2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
