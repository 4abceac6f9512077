"""The baselines' training index and item-kNN ranking: their fast paths answer what the plain
definitions answer (the gate's figures must not move when they get faster)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from shared.reco import _kernels as K
from shared.reco import protocol as P

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _world(seed=0, n_users=120, n_items=60, n_streams=10) -> pd.DataFrame:
    """Viewers in rooms with showcases; clicks, carts, purchases (repeats), a few refunds."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_streams):
        showcase = rng.choice(n_items, 15, replace=False)
        for u in rng.choice(n_users, 40, replace=False):
            t = s * 24.0 + rng.uniform(0, 2)
            for _ in range(rng.integers(1, 6)):
                it = f"sku{int(rng.choice(showcase[:5] if rng.random() < 0.6 else showcase))}"
                t += rng.uniform(0, 0.3)
                for typ, dt, p in (("product_click", 0, 1), ("add_to_cart", 0.05, 0.5), ("purchase", 0.1, 0.5)):
                    if rng.random() < p:
                        rows.append((f"v{u}", it, T0 + pd.Timedelta(hours=t + dt), typ, f"room{s}"))
                if rng.random() < 0.03:
                    rows.append((f"v{u}", it, T0 + pd.Timedelta(hours=t + 0.2), "refund", f"room{s}"))
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "type", "stream_id"])
    ev["type"] = ev["type"].astype("category")
    return ev


@pytest.mark.parametrize("compiled", [True, False])
def test_segments_sorted_is_the_rows_lexsort(monkeypatch, compiled):
    if compiled and not K.HAVE_NUMBA:
        pytest.skip("numba not installed")
    monkeypatch.setattr(K, "HAVE_NUMBA", compiled)
    rng = np.random.default_rng(1)
    for trial in range(150):
        lens = rng.integers(0, rng.choice([3, 30, 300]), rng.integers(1, 40))
        ptr = np.concatenate([[0], np.cumsum(lens)])
        row = np.repeat(np.arange(lens.size), lens)
        a = rng.integers(0, 3, ptr[-1]).astype(float)  # many ties: the later keys decide
        b = rng.choice([0.0, 0.25, 1.0, rng.random()], ptr[-1])
        c = np.concatenate([rng.permutation(1000)[:n] for n in lens]).astype(np.int64)
        got = K.segments_sorted(ptr, a, b, c)
        assert got.tolist() == np.lexsort((c, -b, -a, row)).tolist(), trial


def _plain_index(train, ref, target_types):
    """The training index's history order and popularity from their definitions, per user in Python."""
    ti = P._TrainIndex(train, ref, target_types)
    own = {}
    for r, user in enumerate(ti.user_pos):
        items = ti.H.indices[ti.H.indptr[r] : ti.H.indptr[r + 1]]
        pc = [
            float(
                (
                    (train["user_id"] == user) & (train["item_id"] == ti.item_ids[i]) & (train["type"] == "purchase")
                ).sum()
            )
            for i in items
        ]
        af = [float(ti.X[r, i]) for i in items]
        own[user] = [ti.item_ids[i] for _, _, i in sorted(zip(pc, af, items), key=lambda x: (-x[0], -x[1], x[2]))]
    return own


def test_own_history_order_and_a_second_target_share_the_frame():
    ev = _world()
    s = P.make_split(ev, split="global-time", in_stream=True, test_frac=0.3)
    P._TrainIndex._cache.clear()
    a = P._TrainIndex.get(s.train, s.reference_time, P.TARGETS["purchase"])
    want = _plain_index(s.train, s.reference_time, P.TARGETS["purchase"])
    assert {u: a.own(u).tolist() for u in want} == want
    assert any(len(v) > 3 for v in want.values())
    # another target on the same frame: the same histories and X (shared), its own popularity
    b = P._TrainIndex.get(s.train, s.reference_time, P.TARGETS["cart"])
    assert b is not a and b.X is a.X and b.own_items is a.own_items and b.knn is a.knn
    fresh = P._TrainIndex(s.train, s.reference_time, P.TARGETS["cart"])
    for k in ("pop", "pop_rank", "pop_order", "own_items", "own_ptr"):
        assert np.array_equal(getattr(b, k), getattr(fresh, k)), k
    assert not np.array_equal(a.pop, b.pop)  # (the targets differ in this world)
    assert P._TrainIndex.get(s.train, s.reference_time, P.TARGETS["purchase"]) is a


def _knn_plain(r: P.ItemKNNRanker, queries, k):
    """Item-kNN's ranking by its definition: every reached item with a positive score, by score desc then
    popularity, through the shared selection (showcase, own items when repeats are off, the fill)."""
    out = []
    for q in queries:
        row = r.t.urow(q.user_id)
        if row is None:
            out.append(r._select(q, k, []))
            continue
        s = (r.t.X[row] @ r.W).toarray().ravel()
        idx = np.flatnonzero(s > 0)
        o = np.lexsort((r.t.pop_rank[idx], -s[idx]))
        out.append(r._select(q, k, r.t.item_ids[idx[o]]))
    return out


@pytest.mark.parametrize("variant", ["all", "new"])
@pytest.mark.parametrize("in_stream", [True, False])
def test_itemknn_ranks_as_its_definition(in_stream, variant):
    ev = _world(seed=2)
    s = P.make_split(ev, split="global-time", in_stream=in_stream, variant=variant, test_frac=0.3)
    P._TrainIndex._cache.clear()
    r = P.ItemKNNRanker(neighbours=8).fit(s.train, None, s.reference_time)
    queries = list(s.queries)
    assert queries and (all(q.allowed is not None for q in queries) if in_stream else True)
    assert all(q.repeats == (variant == "all") for q in queries)
    # and a query of a user the index does not know, and one with a small showcase
    queries.append(dataclasses.replace(queries[0], user_id="nobody"))
    queries.append(dataclasses.replace(queries[1], allowed=np.asarray(["sku1", "sku2", "sku-gone"], dtype=object)))
    for k in (3, 10):
        got = r.rank(queries, k)
        assert got == _knn_plain(r, queries, k)
        assert sum(len(x) for x in got) > 0


def test_first_at_is_the_groupby_minimum():
    rng = np.random.default_rng(7)
    for sort in (True, False):
        keys = rng.integers(0, 50, 3000)
        ts = rng.integers(0, 10**6, 3000)
        if sort:
            ts = np.sort(ts)
        want_keys = np.unique(keys)[::-1]
        want = pd.Series(ts).groupby(keys).min().reindex(want_keys).to_numpy()
        assert P._first_at(keys, ts, want_keys).tolist() == want.tolist()


def test_a_rooms_showcase_is_its_items_in_order_of_appearance_then_the_catalogues():
    ev = _world(seed=4)
    items = pd.DataFrame({"item_id": ["sku-new", "sku3"], "stream_ids": [["room8"], ["room8", "room9"]]})
    s = P.make_split(ev, split="global-time", in_stream=True, test_frac=0.3, items=items)
    seen = {}
    for st, it in zip(ev["stream_id"], ev["item_id"]):
        seen.setdefault(st, [])
        if it not in seen[st]:
            seen[st].append(it)
    for st, extra in (("room8", ["sku-new", "sku3"]), ("room9", ["sku3"])):
        seen[st] += [x for x in extra if x not in seen[st]]
    asked = {q.stream_id: q.allowed.tolist() for q in s.queries}
    assert asked and all(asked[st] == seen[st] for st in asked)
    assert "sku-new" in asked["room8"] and "room9" in asked
