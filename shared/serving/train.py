"""The training job: clean/ window -> HybridRecommender -> models/<version>/ -> (maybe) LATEST.

Steps (``run_train``):

1. read the window (``data.read_training_data``: last ``window_days`` of event ``ts``, anchored at the
   newest event, + the catalog) and derive the **version id** from a hash of the input objects
   (keys + generations), the parameters and the code version. Same input -> same version;
2. if ``models/<version>/meta.json`` exists (a redelivered event), do not fit again: finish what a
   crashed attempt may have left (move LATEST if the recorded decision says so and LATEST has not
   moved since), and publish the same message again;
3. time-based holdout: the last ``holdout_frac`` of the data's time span is held out; a candidate is
   fitted on the rest; the candidate, the CURRENT served model and popularity are scored on the same
   holdout users (histories from the training part, relevant = positive-weight items they touched in
   the holdout that were not already in their history): NDCG/HitRate/Precision/Recall@k, coverage;
4. the served model is **refitted on the full window** (the newest part of a live-stream evening is
   the most valuable: new items, the current streams) and written as ``arrays.npz`` + ``meta.json``;
5. promotion: ``LATEST.json`` moves (compare-and-swap on its generation) iff there is no current
   model, or the current one is unreadable, or ``ndcg(candidate) >= ndcg(current) - tolerance``
   on the same holdout. Otherwise the old pointer stays and the reason is recorded;
6. publish ``model-published`` with ``{version, promoted, reason, metrics}``.

Any exception propagates (the function answers 500, Pub/Sub retries, then dead-letters).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from itertools import chain
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared.log import get_logger
from shared.reco import DEFAULT_ACTION_WEIGHTS, HybridRecommender, build_user_items
from shared.reco.instream import catalogue_topk, instream_parts, stream_pairs, tune_blend
from shared.reco.recipe import fit_recipe, merge_recipe
from shared.serving.gate import current_factory, decide, evaluate_candidate
from shared.reco.metrics import ranking_metrics
from shared.serving.data import TrainingData, read_training_data
from shared.serving.registry import Registry, Served, encode_arrays, showcase_extras

log = get_logger("train")

DEFAULT_PARAMS: dict[str, Any] = {
    "cf": "ease", "cf_params": {"lam": 200.0, "neighbours": 100},
    "content_weight": 0.1, "popularity_weight": 0.2,
}
POSITIVE_TYPES = tuple(t for t, w in DEFAULT_ACTION_WEIGHTS.items() if w > 0)
TUNE_CONTENT_WEIGHTS = (0.0, 0.1, 0.3, 0.5, 1.0)
TUNE_POPULARITY_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)   # capped: also used outside streams (not validated there)
TUNE_STREAM_POP_MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)   # share of GLOBAL popularity in the popularity part


def _envf(name: str, default: float) -> float:
    v = os.environ.get(name)
    return default if v in (None, "") else float(v)


@dataclass
class TrainConfig:
    window_days: float = field(default_factory=lambda: _envf("DAIHUO_TRAIN_WINDOW_DAYS", 30.0))
    holdout_frac: float = field(default_factory=lambda: _envf("DAIHUO_TRAIN_HOLDOUT_FRAC", 0.2))
    tolerance: float = field(default_factory=lambda: _envf("DAIHUO_PROMOTE_TOLERANCE", 0.02))
    strict: bool = field(default_factory=lambda: os.environ.get("DAIHUO_GATE_STRICT", "0").lower() in ("1", "true", "yes"))
    k: int = 10
    max_eval_users: int = field(default_factory=lambda: int(_envf("DAIHUO_EVAL_MAX_USERS", 5000)))
    half_life_days: float = field(default_factory=lambda: _envf("DAIHUO_TRAIN_HALF_LIFE_DAYS", 30.0))
    params: dict = field(default_factory=lambda: json.loads(os.environ["DAIHUO_TRAIN_PARAMS"])
                         if os.environ.get("DAIHUO_TRAIN_PARAMS") else {})   # recipe overrides (DEFAULT_RECIPE)
    topic: str = field(default_factory=lambda: os.environ.get("DAIHUO_MODEL_TOPIC", "model-published"))
    # blend tuning on a validation split carved from the TRAINING part (never the holdout)
    tune: bool = field(default_factory=lambda: os.environ.get("DAIHUO_TRAIN_TUNE", "1").lower() not in ("0", "false", "no"))
    tune_content_weights: list = field(default_factory=lambda: list(TUNE_CONTENT_WEIGHTS))
    tune_popularity_weights: list = field(default_factory=lambda: list(TUNE_POPULARITY_WEIGHTS))
    tune_stream_pop_mixes: list = field(default_factory=lambda: list(TUNE_STREAM_POP_MIXES))
    tune_max_pairs: int = 3000


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``$DAIHUO_CODE_VERSION`` (e.g. a git sha set at deploy) or a hash of the model + serving code."""
    global _CODE_VERSION
    if os.environ.get("DAIHUO_CODE_VERSION"):
        return os.environ["DAIHUO_CODE_VERSION"]
    if _CODE_VERSION is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for p in sorted(list((root / "reco").glob("*.py")) + list((root / "serving").glob("*.py"))):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        _CODE_VERSION = "src-" + h.hexdigest()[:12]
    return _CODE_VERSION


def version_id(data: TrainingData, cfg: TrainConfig) -> str:
    spec = {"inputs": [[i["key"], str(i["generation"])] for i in data.inputs], "params": cfg.params,
            "window_days": cfg.window_days, "holdout_frac": cfg.holdout_frac, "k": cfg.k,
            "half_life_days": cfg.half_life_days, "max_eval_users": cfg.max_eval_users, "code": code_version(),
            "tune": [cfg.tune, list(cfg.tune_content_weights), list(cfg.tune_popularity_weights), cfg.tune_max_pairs,
                     list(cfg.tune_stream_pop_mixes)]}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    end = data.window.get("end")
    stamp = pd.Timestamp(end).strftime("%Y%m%dT%H%M%SZ") if end else "empty"
    return f"{stamp}-{digest}"


def catalog_items(catalog: pd.DataFrame) -> pd.DataFrame | None:
    return catalog[["item_id", "title", "description", "category", "price"]] if len(catalog) else None


def fit_model(events: pd.DataFrame, catalog: pd.DataFrame, cfg: TrainConfig, reference_time,
              params: dict | None = None, content=None, item_ids=None) -> HybridRecommender:
    """``params`` overrides ``cfg.params``; ``content`` (+ the ``item_ids`` it was fitted on) reuses one
    prefit ``ContentModel`` (it depends only on the catalogue) instead of fitting it again."""
    return HybridRecommender(**(params or cfg.params)).fit_events(
        events, catalog_items(catalog), half_life_days=cfg.half_life_days, reference_time=reference_time,
        item_ids=item_ids, content=content)


def build_showcases(events: pd.DataFrame, catalog: pd.DataFrame) -> dict[str, list[str]]:
    """Showcase per stream = catalog ``stream_ids`` ∪ items with events in that stream in the window."""
    showcases: dict[str, set] = {}
    if len(catalog) and "stream_ids" in catalog:
        for item, sids in zip(catalog["item_id"], catalog["stream_ids"]):
            for s in (sids if sids is not None else ()):
                showcases.setdefault(s, set()).add(item)
    if "stream_id" in events:
        seen = events.loc[events["stream_id"].notna() & events["item_id"].notna(), ["stream_id", "item_id"]]
        seen = seen.drop_duplicates()  # (stream, item) pairs first: per-row strings are never built
        for s, it in zip(seen["stream_id"].astype(str).tolist(), seen["item_id"].astype(str).tolist()):
            showcases.setdefault(s, set()).add(it)
    return {k: sorted(v) for k, v in showcases.items()}


def time_split(events: pd.DataFrame, frac: float):
    item_ts = events.loc[events["item_id"].notna(), "ts"]
    return item_ts.quantile(1.0 - frac) if len(item_ts) else events["ts"].max()


def evaluate_in_stream(model: HybridRecommender, pairs, showcases: dict, k: int, baselines: bool = True) -> dict:
    """In-stream metrics (``shared.reco.instream``): the model's blend ranks each pair's showcase, as
    ``recommend(user, stream_id=s, allowed_items=showcase)`` does; plus the baselines."""
    parts = instream_parts(model, pairs, showcases)
    n = model.n_items_
    cw = model.content_weight if model.content_model_ is not None else 0.0
    mix = float(getattr(model, "stream_pop_mix", 0.0))
    out = {"model": score_ranking(parts.top_ids(model.cf_weight, cw, model.popularity_weight, k, mix=mix),
                                  pairs, k, n)}
    if baselines:
        out["stream_bestsellers"] = score_ranking(parts.top_ids(0.0, 0.0, 1.0, k), pairs, k, n)
        out["showcase_popularity"] = score_ranking(parts.top_ids(0.0, 0.0, 1.0, k, "global"), pairs, k, n)
    return out


def tune_params(train_part: pd.DataFrame, catalog: pd.DataFrame, cfg: TrainConfig, showcases: dict,
                content=None, item_ids=None) -> tuple[dict, dict]:
    """Blend weights (content, popularity, stream_pop_mix; cf fixed) by in-stream NDCG@k on a validation
    split carved from the TRAINING part (its last ``holdout_frac`` of item events), never from the
    holdout.  At most ``cfg.tune_max_pairs`` validation (user, stream) pairs (deterministic sample)."""
    split = time_split(train_part, cfg.holdout_frac)
    fit_part, val = train_part[train_part["ts"] <= split], train_part[train_part["ts"] > split]
    report: dict[str, Any] = {"split_ts": split.isoformat(), "pairs": 0}
    if fit_part["item_id"].notna().sum() == 0 or val.empty:
        report["skipped"] = "empty validation split"
        return {}, report
    t0 = time.perf_counter()
    m = fit_model(fit_part, catalog, cfg, split, content=content, item_ids=item_ids)
    t1 = time.perf_counter()
    pairs = stream_pairs(m, val, showcases, cfg.tune_max_pairs)
    report["pairs"] = len(pairs)
    report["pairs_available"] = pairs.n_available
    if len(pairs) < 20:
        report["skipped"] = f"only {len(pairs)} validation (user, stream) pairs"
        return {}, report
    parts = instream_parts(m, pairs, showcases)
    t2 = time.perf_counter()
    cws = list(cfg.tune_content_weights) if m.content_model_ is not None else [0.0]
    best, table = tune_blend(parts, cws, list(cfg.tune_popularity_weights), cfg.k, cf_weight=m.cf_weight,
                             stream_pop_mixes=list(cfg.tune_stream_pop_mixes) or [m.stream_pop_mix])
    report["seconds"] = {"fit": round(t1 - t0, 3), "parts": round(t2 - t1, 3), "grid": round(time.perf_counter() - t2, 3)}
    report.update({"best": best, "grid": table,
                   "default": {"content_weight": m.content_weight, "popularity_weight": m.popularity_weight,
                               "stream_pop_mix": m.stream_pop_mix}})
    return {"content_weight": best["content_weight"], "popularity_weight": best["popularity_weight"],
            "stream_pop_mix": best["stream_pop_mix"]}, report


# ------------------------------------------------------------------------------- evaluation
@dataclass
class Holdout:
    users: np.ndarray                # user ids evaluated
    history: list[dict[str, float]]  # per user: item_id -> affinity from the training part
    relevant: list[list[str]]        # per user: held-out positive items not in the history
    split_ts: str
    n_holdout_events: int


def make_holdout(events: pd.DataFrame, cfg: TrainConfig, model: HybridRecommender | None = None
                 ) -> tuple[pd.DataFrame, Holdout]:
    """Split by time at the ``1 - holdout_frac`` quantile of the item events' ``ts``: everything after
    it is the holdout. (A quantile, not a fraction of the span: the span is dominated by sparse tails
    such as refunds days later, which would leave an empty holdout.)  ``model``: a model fitted on the
    training part with ``reference_time = split`` (the candidate): its user x item matrix is the
    histories' one, so it is not built a second time."""
    split = time_split(events, cfg.holdout_frac)
    train, hold = events[events["ts"] <= split], events[events["ts"] > split]
    if model is not None:
        from shared.reco.interactions import Interactions
        inter = Interactions(model.user_items_, model.user_ids_, model.item_ids_)
    else:
        inter = build_user_items(train, half_life_days=cfg.half_life_days, reference_time=split)
    X = inter.matrix.tocsr()
    uindex = pd.Index(inter.user_ids)
    pos = hold.loc[hold["type"].isin(POSITIVE_TYPES) & hold["item_id"].notna() & hold["user_id"].notna(),
                   ["user_id", "item_id"]]
    pos = pos.drop_duplicates(["user_id", "item_id"])
    rows = uindex.get_indexer(pos["user_id"].to_numpy())
    pos = pos[rows >= 0].assign(_row=rows[rows >= 0])
    pos = pos[np.diff(X.indptr)[pos["_row"].to_numpy()] > 0] if len(pos) else pos
    users, history, relevant = [], [], []
    if len(pos):
        order = sorted(pos["user_id"].astype(str).unique().tolist(), key=lambda u: hashlib.md5(u.encode()).hexdigest())
        keep = set(order[: cfg.max_eval_users])
        sel = pos[pos["user_id"].astype(str).isin(keep)]
        u_arr = sel["user_id"].to_numpy().astype(str)
        i_list = sel["item_id"].to_numpy().astype(str)
        r_arr = sel["_row"].to_numpy()
        o = np.lexsort((np.arange(u_arr.size), u_arr))
        u_arr, i_list, r_arr = u_arr[o], i_list[o].tolist(), r_arr[o]
        head = np.ones(u_arr.size, dtype=bool)
        head[1:] = u_arr[1:] != u_arr[:-1]
        starts = np.flatnonzero(head).tolist() + [u_arr.size]
        ids = inter.item_ids
        for a0, a1 in zip(starts[:-1], starts[1:]):
            r = int(r_arr[a0])
            a, b = X.indptr[r], X.indptr[r + 1]
            hist = {str(j): float(w) for j, w in zip(ids[X.indices[a:b]].tolist(), X.data[a:b].tolist())}
            rel = [i for i in i_list[a0:a1] if i not in hist]
            if rel:
                users.append(str(u_arr[a0]))
                history.append(hist)
                relevant.append(rel)
    return train, Holdout(np.array(users, dtype=str), history, relevant, split.isoformat(), int(len(hold)))


def _topk_rows(S: np.ndarray, k: int) -> np.ndarray:
    k = min(k, S.shape[1])
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(S, part, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    top = np.take_along_axis(part, order, 1)
    return np.where(np.isfinite(np.take_along_axis(vals, order, 1)), top, -1)


def rank_for(model: HybridRecommender | None, ho: Holdout, k: int, chunk: int = 512) -> list[list[str]]:
    """Top-k item ids per holdout user over the whole catalogue, history items excluded
    (``shared.reco.instream.catalogue_topk``: neighbour entries + the popularity head only)."""
    index = model._item_pos
    ids = model.item_ids_
    out: list[list[str]] = []
    for c0 in range(0, len(ho.users), chunk):
        hs = ho.history[c0:c0 + chunk]
        rows, cols, vals = [], [], []
        for r, h in enumerate(hs):
            for it, w in h.items():
                j = index.get(it, -1)
                if j >= 0:
                    rows.append(r)
                    cols.append(j)
                    vals.append(w)
        X = sp.csr_matrix((vals, (rows, cols)), shape=(len(hs), model.n_items_), dtype=np.float32)
        out += [[str(x) for x in ids[top]] for top in catalogue_topk(model, X, k)]
    return out


def popularity_for(model: HybridRecommender, ho: Holdout, k: int) -> list[list[str]]:
    g = np.asarray(model.popularity_.global_, dtype=np.float64)
    order = np.argsort(-g, kind="stable")[: k + 256]
    ids = [str(x) for x in model.item_ids_[order]]
    return [[i for i in ids if i not in h][:k] for h in ho.history]


def score_ranking(recs: list[list[str]], ho: Holdout, k: int, n_items: int) -> dict[str, float]:
    flat_recs = list(chain.from_iterable(recs))  # (sum(lists, []) is quadratic)
    flat_rel = list(chain.from_iterable(ho.relevant))
    vocab = pd.Index(pd.unique(np.concatenate([np.array(flat_recs, dtype=str), np.array(flat_rel, dtype=str)])))
    R = np.full((len(recs), k), -1, dtype=np.int64)
    for u, r in enumerate(recs):
        if r:
            R[u, : len(r)] = vocab.get_indexer(r)
    lens = [len(r) for r in ho.relevant]
    cols = vocab.get_indexer(np.array(flat_rel, dtype=str)) if lens else np.empty(0, dtype=np.int64)
    rel = sp.csr_matrix((np.ones(len(cols)), cols, np.concatenate([[0], np.cumsum(lens)])),
                        shape=(len(recs), max(len(vocab), 1)))
    m = ranking_metrics(R, rel, k)
    m["coverage"] = float(len(set(flat_recs)) / n_items) if n_items else 0.0
    return {key: round(float(v), 6) if isinstance(v, float) else v for key, v in m.items()}


# ------------------------------------------------------------------------------------- run
@dataclass
class TrainResult:
    version: str | None
    promoted: bool
    reason: str
    metrics: dict
    reused: bool = False
    seconds: float = 0.0

    def message(self) -> dict:
        return {"version": self.version, "promoted": self.promoted, "reason": self.reason,
                "metrics": self.metrics, "redelivery": self.reused}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def recipe_params(cfg: "TrainConfig") -> dict:
    """The served recipe's parameters: ``DEFAULT_RECIPE`` updated by ``cfg.params``
    (``DAIHUO_TRAIN_PARAMS``)."""
    return merge_recipe(cfg.params)


def gate_metrics(ev: dict, summary: dict) -> dict:
    """Flat numbers per block (candidate, best baseline, ratio) for the dashboard + the gate summary."""
    out: dict[str, Any] = {"k": ev.get("k"), "gate": summary, "primary": ev.get("primary")}
    for name, b in (ev.get("blocks") or {}).items():
        if "rankers" not in b:
            continue
        key = b["metric"]
        tag = name.replace("/purchase", "").replace("/", "_")
        out[f"{tag}_{key}"] = round(b["rankers"]["candidate"][key], 6)
        out[f"{tag}_best_baseline_{key}"] = round(b["rankers"][b["best_baseline"]][key], 6)
        out[f"{tag}_queries"] = b["n_queries"]
    if summary.get("vs_best_baseline"):
        out["ratio_vs_best_baseline"] = round(summary["vs_best_baseline"]["ratio"], 4)
    return out


def _decide(metrics: dict, current_version: str | None, current_error: str | None, cfg: TrainConfig) -> tuple[bool, str]:
    """Gate on ``metrics["gate"]``: the in-stream NDCG@k (how ``recommend`` is used in a live room) when
    the holdout has (user, stream) pairs, else the whole-catalogue NDCG@k."""
    key = f"ndcg@{cfg.k}"
    gate = metrics.get("gate") or {}
    proto = gate.get("protocol", "catalogue")
    src = metrics["in_stream"] if proto == "in_stream" else metrics
    n_eval = src.get("pairs", metrics.get("users", 0)) if proto == "in_stream" else metrics.get("users", 0)
    what = "(user, stream) pairs" if proto == "in_stream" else "users"
    if current_version is None:
        return True, "first model (no LATEST yet)"
    if current_error:
        return True, f"current model {current_version} could not be loaded ({current_error}); replacing it"
    if not n_eval or "current" not in src:
        return False, (f"holdout has no evaluable users (no user with history before {metrics.get('split_ts')} "
                       f"and new positive items after it): cannot compare, keeping {current_version}")
    new, old = src["candidate"][key], src["current"][key]
    if new >= old - cfg.tolerance:
        return True, (f"{proto} {key} {new:.4f} vs current {current_version} {old:.4f} on the same holdout "
                      f"({n_eval} {what}): within tolerance {cfg.tolerance}")
    return False, (f"regression: {proto} {key} {new:.4f} < current {current_version} {old:.4f} - tolerance "
                   f"{cfg.tolerance} on the same holdout ({n_eval} {what}); keeping {current_version}")


def _finish(reg: Registry, version: str, meta: dict, bus, cfg: TrainConfig, t0: float, reused: bool) -> TrainResult:
    """Move LATEST if the decision says so and LATEST has not moved since; publish the outcome."""
    d = meta["decision"]
    promoted, reason = False, d["reason"]
    if d["promote"]:
        pointer, gen = reg.latest()
        if pointer and pointer.get("version") == version:
            promoted = True
        elif gen == d.get("latest_generation"):
            try:
                reg.promote({"version": version, "promoted_at": _now(), "previous": d.get("compared_to"),
                             "metrics": meta["metrics"].get("gate", {})}, gen)
                promoted = True
            except Exception as exc:  # PreconditionFailed: someone moved it between read and swap
                reason = f"not promoted: LATEST moved concurrently ({type(exc).__name__}); {reason}"
                if type(exc).__name__ != "PreconditionFailed":
                    raise
        else:
            reason = (f"not promoted: LATEST moved to {pointer and pointer.get('version')} since the decision "
                      f"(was {d.get('compared_to')}); {reason}")
    res = TrainResult(version, promoted, reason, meta["metrics"], reused, time.perf_counter() - t0)
    log.info("train done", extra={"version": version, "promoted": promoted, "reason": reason, "reused": reused,
                                  "metrics": meta["metrics"], "seconds": round(res.seconds, 3)})
    if bus is not None:
        bus.publish(cfg.topic, json.dumps(res.message(), ensure_ascii=False).encode(),
                    version=version or "", promoted=str(promoted).lower())
    return res


def run_train(store, bus=None, cfg: TrainConfig | None = None, trigger: dict | None = None) -> TrainResult:
    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    reg = Registry(store)
    data = read_training_data(store, cfg.window_days)
    t_read = time.perf_counter() - t0
    if data.events.empty or data.events["item_id"].notna().sum() == 0:
        res = TrainResult(None, False, "no clean events with items in the window; nothing to train", {})
        log.warning("train skipped", extra={"reason": res.reason, "inputs": len(data.inputs)})
        if bus is not None:
            bus.publish(cfg.topic, json.dumps(res.message()).encode(), version="", promoted="false")
        return res
    version = version_id(data, cfg)
    if reg.exists(version):
        log.info("version already written (redelivery); not fitting again", extra={"version": version})
        return _finish(reg, version, reg.read_meta(version), bus, cfg, t0, reused=True)

    # -- once per run: item index, content neighbours (catalogue only), showcases
    t1 = time.perf_counter()
    items = catalog_items(data.catalog)
    recipe = recipe_params(cfg)
    item_ids = HybridRecommender.catalogue_ids(data.events, items)
    content = HybridRecommender(**recipe["base"]).fit_content(item_ids, items)
    showcases = build_showcases(data.events, data.catalog)
    t_content = time.perf_counter() - t1

    def candidate(tr, it, ref):  # exactly what `python -m shared.reco.evaluate --model served` fits
        return fit_recipe(tr, it, ref, recipe)

    # -- the gate: candidate vs current vs baselines on a time-based holdout (shared.serving.gate)
    t1 = time.perf_counter()
    pointer, latest_gen = reg.latest()
    current_version = pointer.get("version") if pointer else None
    current_error, cur_factory = None, None
    if current_version:
        try:
            cur_factory = current_factory(reg.read_meta(current_version))
        except Exception as exc:
            current_error = f"{type(exc).__name__}: {exc}"
            log.error("current model unreadable", extra={"version": current_version, "error": current_error})
    ev = evaluate_candidate(data.events, items, candidate=candidate, current=cur_factory, k=cfg.k,
                            holdout_frac=cfg.holdout_frac, max_queries=cfg.max_eval_users)
    promote, reason, summary = decide(ev, current_version, current_error, cfg.tolerance, cfg.strict)
    metrics = gate_metrics(ev, summary)
    t_eval = time.perf_counter() - t1

    # -- the served model: the same recipe on the full window
    t2 = time.perf_counter()
    end = pd.Timestamp(data.window["end"])
    model = fit_recipe(data.events, items, end, recipe, content=content, item_ids=item_ids)
    t_fit = time.perf_counter() - t2
    titles = pd.Series(data.catalog["title"].astype(str).to_numpy(), index=data.catalog["item_id"]) \
        if len(data.catalog) else pd.Series(dtype=str)
    extras = {"item_title": np.array(titles.reindex(model.item_ids_).fillna("").astype(str).tolist() or [""],
                                     dtype=str)[: len(model.item_ids_)]}
    extras.update(showcase_extras(model.item_ids_, showcases))
    blob = encode_arrays(model, extras)
    meta = {
        "version": version, "created_at": _now(), "code_version": code_version(),
        "params": recipe, "config": {k: v for k, v in asdict(cfg).items() if k != "params"},
        "window": data.window, "inputs": data.inputs,
        "data": {"events": int(len(data.events)), "users": int(len(model.user_ids_)), "items": int(model.n_items_),
                 "catalog_items": int(len(data.catalog)), "streams": len(showcases)},
        "metrics": metrics, "evaluation": ev,
        "metrics_note": "holdout of the last holdout_frac of purchases (global-time cut); the candidate is the "
                        "recipe fitted before the cut, the current model's recipe refitted on the same part; "
                        "evaluation.blocks: every protocol with all baselines and paired bootstrap intervals; "
                        "metrics.gate: what promotion compared. The served model is the recipe refitted on the "
                        "full window.",
        "decision": {"promote": promote, "reason": reason, "compared_to": current_version,
                     "latest_generation": latest_gen, "tolerance": cfg.tolerance, "strict": cfg.strict,
                     "below_baseline": bool(summary.get("below_baseline", False))},
        "timing_s": {"read": round(t_read, 3), "content": round(t_content, 3), "evaluate": round(t_eval, 3),
                     "fit": round(t_fit, 3)},
        "trigger": trigger or {}, "arrays_bytes": len(blob), "model": model.meta,
    }
    written = reg.write_version(version, blob, meta)
    if not written:  # a twin committed it first: use its record
        meta = reg.read_meta(version)
    return _finish(reg, version, meta, bus, cfg, t0, reused=not written)
