"""The production recipe: ``fit_recipe(events, items, reference_time) -> RoomRanker``.

The train function and ``python -m devtools.evaluate --model served`` both call this function, so
what is evaluated is what is served.

1. **Label split** inside the given events: the last ``label_frac`` (by time quantile of purchases) is
   the *label window*, everything before it the *feature window*.
2. **State on the feature window** (``RoomRanker.fit_state``): the hybrid's CF / content / popularity,
   repeat statistics, per-viewer purchase / cart / click history, room counts.
3. **Training queries from the label window**, the two questions the product answers:
   * *catalogue*: each viewer who bought in the label window, asked at its start; positives = what
     they bought in the window, the items of their next purchase (first purchase day after the cut)
     with weight 1 and later ones with ``later_weight`` (default 0: the next purchase is the question);
   * *room*: each (viewer, stream) with a purchase in the label window, asked at the viewer's entry
     into the stream; candidates = the stream's showcase; the room's counts so far are the room
     features; positives = what the viewer bought in that stream after entering.
   Each query's candidates get the feature rows ``RoomRanker.candidates_and_features`` computes at
   serving time (one code path), labelled 1 if bought.
4. **Ranker**: L2 logistic regression (``C``, default 1; exact Newton steps, ``logistic_newton``: deterministic) on standardised features,
   each query weighted equally, one per head: ``room`` (queries with a stream / showcase) and
   ``catalogue``, and ``*_new`` heads for requests restricted to items the viewer never touched;
   ``features_off`` (a list of feature names) zeroes features and ``filter_seen: true`` never serves a
   touched item (the v1 habit; ablations and tests).  No labels -> ``PRIOR_WEIGHTS`` (recorded as ``ranker.kind = prior``).
5. **State again on all events** up to ``reference_time`` with the learned weights: the served model.

No grid search: one fixed regularisation, so the knobs cannot flip from run to run; the features
carry the scale (room features are shares and logs, CF is max-normalised per request).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from shared.reco.arrays import unique

from .event_types import ROOM_WINDOWS, room_key
from .interactions import _category_strings
from .protocol import _type_codes
from .ranker import FEATURES, HEADS, PRIOR_WEIGHTS, RoomRanker
from .rebuy import ts_ns, ts_ns1
from .roomlog import RoomLog

__all__ = ["DEFAULT_RECIPE", "env_recipe", "fit_recipe", "merge_recipe", "label_queries", "room_so_far"]

DEFAULT_RECIPE: dict[str, Any] = {
    "base": {
        "cf": "ease",
        # neighbours kept per item, chosen on validation splits only (bench/eval_neighbours.py, docs/serving.md
        # "Fewer neighbours"): CF 50 (were 100: EASE's pruned rows up to max_dense_items = 10k items, the
        # cosine fallback's above), text 20 (was 50)
        "cf_params": {"lam": 200.0, "neighbours": 50, "fallback_neighbours": 50},
        "content_params": {"neighbours": 20},
        "content_weight": 0.1,
        "popularity_weight": 0.2,
    },
    "label_frac": 0.2,
    "C": 1.0,
    "max_queries": 2000,
    "later_weight": 0.0,
    "half_life_days": 30.0,
    "target": "purchase",
    "max_history": None,  # the viewer's strongest history items scored per request; None: DAIHUO_RECOMMEND_MAX_HISTORY
}


def merge_recipe(overrides: dict | None = None) -> dict:
    """``DEFAULT_RECIPE`` updated by ``overrides`` (dicts merged one level deep)."""
    p = json.loads(json.dumps(DEFAULT_RECIPE))
    for k, v in (overrides or {}).items():
        p[k] = {**p[k], **v} if isinstance(v, dict) and isinstance(p.get(k), dict) else v
    return p


def env_recipe() -> dict:
    """The recipe the train function serves: ``DEFAULT_RECIPE`` + ``$DAIHUO_TRAIN_PARAMS`` (JSON)."""
    from shared.settings import settings

    return merge_recipe(settings().train_params or None)


def _md5_first(keys: list[str], n: int) -> np.ndarray:
    if len(keys) <= n:
        return np.arange(len(keys))
    h = np.array([hashlib.md5(k.encode()).hexdigest() for k in keys])
    return np.sort(np.argsort(h, kind="stable")[:n])


def _s(x: pd.Series) -> np.ndarray:
    return (
        x.astype(str).to_numpy()
        if not isinstance(x.dtype, pd.CategoricalDtype)
        else x.astype(object).astype(str).to_numpy()
    )


def _col_codes(x: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(codes int64, -1 where missing; the codes' strings)`` of an id column: a categorical column (the
    train job's reader hands arrow dictionaries over as ``pd.Categorical``) maps its categories once per
    categories object, not every row to a Python string (``_s``: 10M strings cost seconds)."""
    if isinstance(x.dtype, pd.CategoricalDtype):
        return x.cat.codes.to_numpy().astype(np.int64), _category_strings(x.cat.categories)
    codes, uniques = pd.factorize(x.astype(str).to_numpy(), sort=False)  # as ``_s``: ids compared as strings
    codes = codes.astype(np.int64)
    codes[x.isna().to_numpy()] = -1
    return codes, np.asarray(uniques, dtype=str)


# what the ranker reads of a room (counts so far, and recent windows "<type>@<minutes>m"):
# ROOM_WINDOWS in shared.reco.event_types


def room_so_far(
    events: pd.DataFrame, keys: list[tuple[str, pd.Timestamp]], item_index: pd.Index | None = None
) -> list[dict]:
    """Per (stream, time): ``{"purchase": counts, "product_click": counts, "purchase@10m": counts, ...}``
    (``ROOM_WINDOWS``) of the stream's events strictly before that time (and within the window), each
    ``("idx", positions, n)`` with ``item_index`` else ``(item ids, n)`` (``RoomRanker.recommend(room=)``
    also takes ``{item: n}`` dicts, as ``shared.reco.protocol`` builds them)."""
    types = sorted({t for t, _ in ROOM_WINDOWS})
    out: list[dict] = [{} for _ in keys]
    if not keys or events.empty:
        return out
    # codes, not strings: a row's stream / type / item as category codes (the stream's code is only a
    # slot: any numbering gives its counts)
    scode_all, streams = _col_codes(events["stream_id"])
    icode_all, icats = _col_codes(events["item_id"])
    tcode_all = _type_codes(events["type"], types)
    rows = np.flatnonzero((scode_all >= 0) & (icode_all >= 0) & (tcode_all >= 0))
    if rows.size == 0:
        return out
    scode, tcode, icode = scode_all[rows], tcode_all[rows], icode_all[rows]
    tsv = ts_ns(events["ts"])[rows]
    if item_index is not None:  # model positions: ("idx", sorted positions, counts), no per-query id lookups
        codes, names = item_index.get_indexer(icats).astype(np.int64)[icode], None
    else:  # ids: codes in the ids' sorted order (counts listed by id, as np.unique lists them)
        present = unique(icode)
        by_name = np.argsort(icats[present], kind="stable")
        names = icats[present][by_name]
        remap = np.full(len(icats), -1, dtype=np.int64)
        remap[present[by_name]] = np.arange(present.size)
        codes = remap[icode]
    log = RoomLog(scode, tsv, codes, tcode, len(streams), len(types))
    spos = {x: k for k, x in enumerate(streams.tolist())}
    todo = []
    for q, (s, t) in enumerate(keys):
        k = spos.get(str(s))
        if k is not None:
            todo.append((k, ts_ns1(t), q))
    # in (stream, time) order: each room prefix extends the one before it (RoomLog counts the rows in between)
    todo.sort()
    for k, tq, q in todo:
        for tname, minutes in ROOM_WINDOWS:
            u, c = log.counts(types.index(tname), k, None if minutes is None else tq - minutes * 60 * 10**9, tq)
            if u.size:
                key = room_key(tname, minutes)
                if names is None:
                    ok = u >= 0
                    out[q][key] = ("idx", u[ok], c[ok].astype(float))
                else:
                    out[q][key] = (names[u], c.astype(float))
    return out


def label_queries(
    before: pd.DataFrame,
    after: pd.DataFrame,
    cut,
    *,
    target: str = "purchase",
    max_queries: int = 3000,
    showcases: dict[str, list[str]] | None = None,
    item_index: pd.Index | None = None,
    events: pd.DataFrame | None = None,
) -> list[dict]:
    """Training queries of the label window (see the module docstring): dicts with ``user_id, ts,
    stream_id, allowed (item ids or None), relevant (set), room``. ``events``: the frame ``before`` and
    ``after`` were cut from (their rows, in any order), read instead of a concatenated copy."""
    tgt_rows = ((after["type"] == target) & after["item_id"].notna() & after["user_id"].notna()).to_numpy()
    tgt = after[tgt_rows]
    queries: list[dict] = []
    if tgt.empty:
        return queries
    u, i = _s(tgt["user_id"]), _s(tgt["item_id"])
    # catalogue question: what the viewer buys in the label window, the NEXT purchase (first purchase
    # day after the cut) weighted fully and later ones by `later_weight` ("when", not only "what")
    day = ts_ns(tgt["ts"]) // (86400 * 10**9)
    cat = pd.DataFrame({"u": u, "i": i, "d": day})
    nxt = cat[cat["d"] == cat.groupby("u")["d"].transform("min")].drop_duplicates(["u", "i"])
    dd = cat.drop_duplicates(["u", "i"])
    users = dd.groupby("u").size().index.tolist()  # (sorted, as a groupby's keys)
    pick = _md5_first(users, max_queries).tolist()
    # the item sets of the sampled viewers only (a set per viewer of the window cost ~1 s at 10M events),
    # each built from its rows in the frame's order, as a groupby over all of them builds it
    chosen = {users[k] for k in pick}
    rel = dd[dd["u"].isin(chosen)].groupby("u")["i"].agg(set)
    first = nxt[nxt["u"].isin(chosen)].groupby("u")["i"].agg(set)
    for k in pick:
        queries.append(
            {
                "user_id": users[k],
                "ts": pd.Timestamp(cut),
                "stream_id": None,
                "allowed": None,
                "relevant": rel[users[k]],
                "next": first.get(users[k], set()),
                "kind": "catalogue",
            }
        )
    if "stream_id" in after and tgt["stream_id"].notna().any():
        # every event of both windows (``events``: the frame they were cut from, no copy of it)
        ts_all = events if events is not None else pd.concat([before, after])
        if showcases is None:  # each stream's items in order of first appearance (codes, then strings)
            sc, scats = _col_codes(ts_all["stream_id"])
            ic, icats = _col_codes(ts_all["item_id"])
            ok = (sc >= 0) & (ic >= 0)
            span = len(icats) + 1
            uk = pd.unique(sc[ok] * span + ic[ok])
            sh = pd.DataFrame({"s": scats[uk // span].astype(object), "i": icats[uk % span].astype(object)})
            showcases = sh.groupby("s")["i"].agg(list).to_dict()
        st_rows = tgt["stream_id"].notna().to_numpy()
        st = tgt[st_rows]
        # the viewer's entry into each stream: its first event there in the label window, by codes
        ua, _ = _col_codes(after["user_id"])
        sa, s_names = _col_codes(after["stream_id"])
        n_s = len(s_names) + 1
        ok = (ua >= 0) & (sa >= 0)
        entry = pd.Series(ts_ns(after["ts"])[ok]).groupby(ua[ok] * n_s + sa[ok]).min()
        pairs = pd.DataFrame(
            {
                "u": _s(st["user_id"]),
                "s": _s(st["stream_id"]),
                "i": _s(st["item_id"]),
                "t": ts_ns(st["ts"]),
                "k": (ua[tgt_rows][st_rows] * n_s + sa[tgt_rows][st_rows]),
            }
        )
        grp = pairs.groupby(["u", "s"])
        keys = grp.size().index.tolist()  # (the groups' keys in sorted order, without their row lists)
        # each (viewer, stream)'s rows as one slice (group numbers follow the keys' sorted order)
        ng = grp.ngroup().to_numpy()
        by = np.argsort(ng, kind="stable")
        ptr = np.searchsorted(ng[by], np.arange(len(keys) + 1))
        p_t, p_i = pairs["t"].to_numpy()[by], pairs["i"].to_numpy()[by]
        p_k = pairs["k"].to_numpy()[by]
        pick = _md5_first([f"{a}|{b}" for a, b in keys], max_queries)
        sel = [keys[k] for k in pick.tolist()]
        t_min = pairs["t"].min()
        times = [pd.Timestamp(int(entry.get(int(p_k[ptr[k]]), t_min)), tz="UTC") for k in pick.tolist()]
        rooms = room_so_far(ts_all, [(s, t) for (_, s), t in zip(sel, times)], item_index)
        for k, (uu, ss), t, room in zip(pick.tolist(), sel, times, rooms):
            a, b = ptr[k], ptr[k + 1]
            r = set(p_i[a:b][p_t[a:b] >= ts_ns1(t)].tolist())
            if not r:
                continue
            queries.append(
                {
                    "user_id": uu,
                    "ts": t,
                    "stream_id": ss,
                    "allowed": showcases.get(ss, []),
                    "relevant": r,
                    "room": room,
                    "kind": "room",
                }
            )
    return queries


_HESSIAN_BLOCK = 32768  # rows per block: 26 float32 columns -> 3.4 MB per operand


def _hessian(AT32: np.ndarray, s32: np.ndarray) -> np.ndarray:
    """``A^T diag(s) A`` (float64) for ``AT32 = A^T`` in float32: each block of rows in float32, the
    blocks summed in float64."""
    H = np.zeros((AT32.shape[0], AT32.shape[0]))
    for a in range(0, AT32.shape[1], _HESSIAN_BLOCK):
        blk = AT32[:, a : a + _HESSIAN_BLOCK]
        H += (blk * s32[a : a + _HESSIAN_BLOCK]) @ blk.T
    return H


def logistic_newton(
    Z: np.ndarray, y: np.ndarray, w: np.ndarray, C: float, *, tol: float = 1e-8, max_iter: int = 50
) -> tuple[np.ndarray, float, int]:
    """L2 logistic regression by Newton's method: argmin over (coef, b) of
    ``sum_i w_i * logloss(y_i, Z_i @ coef + b) + ||coef||^2 / (2 C)`` (the intercept is not penalised) —
    the objective sklearn's ``LogisticRegression(C=C).fit(Z, y, sample_weight=w)`` minimises (strictly
    convex: one optimum), solved exactly instead of by lbfgs (a handful of ``F x F`` systems, each step
    halved until the objective decreases; the gradient and objective in float64, so the optimum is
    exact whatever the Hessian's precision). Returns ``(coef, intercept, iterations)``."""
    n, f = Z.shape
    A = np.empty((n, f + 1), dtype=np.float64)
    A[:, :f] = Z
    A[:, f] = 1.0
    # the Hessian (the step's direction only) in float32 over row blocks of the transposed matrix, the
    # blocks summed in float64: a block's operands stay in cache (one pass over 1.4M rows x 26 columns
    # with a full-size float32 temporary cost ~4x more) and the sum is closer to the float64 Hessian
    AT32 = np.ascontiguousarray(A.T, dtype=np.float32)
    yv = y.astype(np.float64)
    reg = np.full(f + 1, 1.0 / float(C))
    reg[f] = 0.0
    beta = np.zeros(f + 1)

    def objective(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = A @ b
        # logloss = log(1 + e^z) - y z, computed stably
        return float(w @ (np.logaddexp(0.0, z) - yv * z) + 0.5 * (reg * b) @ b), z

    obj, z = objective(beta)
    iters = 0
    for iters in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
        g = A.T @ (w * (p - yv)) + reg * beta
        H = _hessian(AT32, (w * p * (1.0 - p)).astype(np.float32))
        H[np.diag_indices_from(H)] += reg + 1e-12
        step = np.linalg.solve(H, g)
        t = 1.0
        while True:
            cand = beta - t * step
            new_obj, new_z = objective(cand)
            if new_obj <= obj + 1e-12 * abs(obj) or t < 1e-6:
                break
            t *= 0.5
        beta, z, done = cand, new_z, obj - new_obj <= tol * max(abs(new_obj), 1.0)
        obj = new_obj
        if done and float(np.max(np.abs(t * step))) < 1e-6:
            break
    return beta[:f], float(beta[f]), iters


def _fit_head(rows, ys, ws, C: float, off: list[int]) -> tuple[dict, dict]:
    X = np.vstack(rows)
    X[:, off] = 0.0
    y = np.concatenate(ys)
    w = np.concatenate(ws)
    w = w * (len(w) / w.sum())
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd < 1e-9] = 1.0
    Z = (X - mu) / sd
    coef, bias, iters = logistic_newton(Z, y, w, float(C))
    head = {
        "weights": dict(zip(FEATURES, coef.tolist())),
        "mu": mu.tolist(),
        "sigma": sd.tolist(),
        "bias": bias,
    }
    return head, {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "queries": len(rows),
        "iterations": int(iters),
        "solver": "newton",
    }


def _fit_heads(
    state: RoomRanker, queries: list[dict], C: float, features_off=(), later_weight: float = 0.3
) -> tuple[dict, dict]:
    """One logistic regression per head (``room``: queries with a stream / showcase; ``catalogue``;
    ``room_new`` / ``catalogue_new``: the same queries restricted to items the viewer never touched)."""
    data: dict[str, tuple[list, list, list]] = {h: ([], [], []) for h in HEADS}
    shown: dict[str, np.ndarray] = {}  # stream -> showcase positions (computed once per stream)
    for q in queries:
        allowed = None
        if q.get("allowed") is not None:
            key = str(q.get("stream_id"))
            if key not in shown:
                shown[key] = unique(state.base._item_idx_fast(list(q["allowed"])))
            allowed = shown[key]
            if allowed.size == 0:
                continue
        cand, F, info = state.candidates_and_features(
            q["user_id"], stream_id=q.get("stream_id"), allowed_idx=allowed, room=q.get("room"), now=q["ts"]
        )
        if cand.size == 0:
            continue
        y = np.isin(cand, state.base._item_idx_fast(list(q["relevant"])))
        if not y.any():
            continue
        w = np.full(cand.size, 1.0 / cand.size)
        if q.get("next") is not None:  # later purchases of the window count less than the next one
            later = y & ~np.isin(cand, state.base._item_idx_fast(list(q["next"])))
            w[later] *= later_weight
        rows, ys, ws = data[info["head"]]
        rows.append(F)
        ys.append(y)
        ws.append(w)
        # the *_new head: the same question among the items the viewer never touched (filter_seen)
        row = info.get("row")
        new = ~np.isin(cand, state.seen_items(row)) if row is not None else np.ones(cand.size, bool)
        if new.any() and y[new].any():
            rows, ys, ws = data[info["head"] + "_new"]
            rows.append(F[new])
            ys.append(y[new])
            ws.append(w[new] * (cand.size / int(new.sum())))
    off = [FEATURES.index(f) for f in features_off if f in FEATURES]
    heads, info = {}, {"kind": "logistic_regression", "C": float(C), "features_off": list(features_off), "heads": {}}
    fitted = {h: _fit_head(*data[h], C, off) for h in HEADS if len(data[h][0]) >= 10}
    for h in HEADS:
        if h in fitted:
            heads[h], info["heads"][h] = fitted[h]
        elif fitted:  # too few queries of this kind: share the closest fitted head
            other = next(o for o in (h.replace("_new", ""), h + "_new", *fitted) if o in fitted)
            heads[h], info["heads"][h] = fitted[other][0], {"shared_with": other}
        else:
            heads[h] = {"weights": {f: (0.0 if f in features_off else v) for f, v in PRIOR_WEIGHTS.items()}}
            info["heads"][h] = {
                "kind": "prior",
                "why": "fewer than 10 label queries with a purchase among the candidates",
            }
    if not fitted:
        info["kind"] = "prior"
    return heads, info


def heads_dict(model: RoomRanker) -> dict[str, dict]:
    """A fitted model's ranker heads in the form ``RoomRanker.set_heads`` takes (and ``meta`` records)."""
    return {
        h: {
            "weights": dict(hd["weights"]),
            "mu": list(map(float, hd["mu"])),
            "sigma": list(map(float, hd["sigma"])),
            "bias": float(hd["bias"]),
        }
        for h, hd in model.heads.items()
    }


def _split_at(events: pd.DataFrame, cut) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(events[ts <= cut], events[ts > cut])``. The train function's frames are in time order (the
    reader sorts them): then the two are row slices (copy-on-write views), not two boolean takes of
    every column (~1.4 s at 8M rows); any other frame is masked."""
    ts = events["ts"]
    if ts.is_monotonic_increasing:
        k = int(ts.searchsorted(cut, side="right"))
        return events.iloc[:k], events.iloc[k:]
    return events[ts <= cut], events[ts > cut]


def fit_recipe(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    reference_time,
    params: dict | None = None,
    *,
    content=None,
    item_ids=None,
    progress: Callable[[str], None] | None = None,
    cf_neighbours=None,
    heads_of: RoomRanker | None = None,
) -> RoomRanker:
    """Fit the served recipe on ``events`` (all up to ``reference_time``); see the module docstring.
    ``cf_neighbours``: the CF part's top-N cosine matrix over ``item_ids`` for the fit on ALL the events
    (step 5; precomputed by the Beam job, ``shared.neighbour_lists``); the label-window state (step 2)
    is a fit on other events and is always computed here. ``heads_of``: a model fitted by this recipe on
    an earlier part of the same events (the gate's candidate) whose ranker heads are taken as they are —
    steps 1-4 skipped, only the state on all events fitted. Measured and not served: heads taken from the
    gate's candidate lose to heads learned on the newest label window (``bench/eval_heads.py``)."""
    p = {**DEFAULT_RECIPE, **(params or {})}
    say = progress or (lambda m: None)
    t0 = time.perf_counter()
    if item_ids is None:
        from .hybrid import HybridRecommender

        item_ids = HybridRecommender.catalogue_ids(events, items)
    if content is None and items is not None and len(items):
        from .hybrid import HybridRecommender

        content = HybridRecommender(**p["base"]).fit_content(item_ids, items)
    cap = p.get("max_history")
    if cap is None:
        from shared.settings import settings

        cap = settings().recommend_max_history
    kw = dict(
        base_params=p["base"],
        item_ids=item_ids,
        content=content,
        half_life_days=p["half_life_days"],
        max_history=int(cap),
    )
    tgt_ts = events.loc[(events["type"] == p["target"]) & events["item_id"].notna(), "ts"]
    off = list(p.get("features_off") or [])
    heads = {h: {"weights": {f: (0.0 if f in off else v) for f, v in PRIOR_WEIGHTS.items()}} for h in HEADS}
    info: dict[str, Any] = {"kind": "prior", "why": "fewer than 20 purchases"}
    if heads_of is not None:
        heads, info = heads_dict(heads_of), dict(heads_of.ranker_info)
        info.pop("recipe", None), info.pop("fit_seconds", None)
        info["heads_from"] = "an earlier fit (the gate's candidate): its label window, its weights"
    elif len(tgt_ts) >= 20:
        cut = tgt_ts.quantile(1.0 - float(p["label_frac"]))
        before, after = _split_at(events, cut)
        if before["item_id"].notna().any() and len(after):
            state = RoomRanker.fit_state(before, items, cut, **kw)
            t1 = time.perf_counter()
            queries = label_queries(
                before,
                after,
                cut,
                target=p["target"],
                max_queries=int(p["max_queries"]),
                item_index=state.base._item_index,
                events=events,
            )
            say(f"recipe: state on {len(before):,} events ({t1 - t0:.1f}s), {len(queries)} label queries")
            heads, info = _fit_heads(state, queries, p["C"], off, float(p["later_weight"]))
            info["label_cut"] = pd.Timestamp(cut).isoformat()
            info["seconds"] = round(time.perf_counter() - t1, 3)
    model = RoomRanker.fit_state(events, items, reference_time, cf_neighbours=cf_neighbours, **kw)
    model.set_heads(heads, info)
    model.always_filter_seen = bool(p.get("filter_seen", False))
    model.ranker_info["recipe"] = {k: v for k, v in p.items()}
    model.ranker_info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    say(f"recipe: fitted in {time.perf_counter() - t0:.1f}s ({info.get('kind')})")
    return model
