"""The answer's top in compiled code (``shared.reco._kernels.score_rank`` / ``top_rows``, used by
``RoomRanker._top``): numpy's contributions, scores and order bit for bit (the row sums repeat numpy's
pairwise summation, the order is ``lexsort``'s; the group parts to the last bit), for the compiled path and for the numpy fallback, on random rows with ties, zeros,
NaN scores and keep masks; and a request that holds the GIL through them (the reason they exist: see
docs/serving.md §4)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from shared.reco import _kernels as K
from shared.reco.ranker import _GROUP_MATRIX, _GROUP_OF, GROUPS
from shared.serving import experiments


def _reference(F, w, b, cand, keep, order_n):
    """The numpy formulation ``RoomRanker._top`` had before (its results are the contract)."""
    C = F * w
    score = b + C.sum(axis=1)
    sel = np.flatnonzero(keep)
    ranked = sel[np.lexsort((cand[sel], -score[sel]))]
    order = ranked[:order_n]
    Co = C[order]
    P = Co @ _GROUP_MATRIX
    g_order = np.argsort(-P, axis=1, kind="stable")
    return C, score, ranked, Co, F[order], P, g_order, score[order], cand[order]


def _case(rng, n, f=25, ties=False):
    F = rng.standard_normal((n, f)) * (rng.random((n, f)) < 0.6) * 10.0 ** rng.integers(-4, 3, (n, f))
    if ties and n > 3:
        F[1] = F[0]  # equal scores: the item decides
        F[3] = F[2]
    w = rng.standard_normal(f)
    cand = rng.permutation(50_000)[:n].astype(np.int64)
    keep = rng.random(n) < 0.8
    return F, w, float(rng.standard_normal()), cand, keep


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize("n", [1, 2, 7, 10, 50, 333])
def test_same_as_numpy_bit_for_bit(n, numba, monkeypatch):
    if numba and not K.HAVE_NUMBA:
        pytest.skip("numba not installed")
    if not numba:
        monkeypatch.setattr(K, "HAVE_NUMBA", False)
    rng = np.random.default_rng(n)
    for rep in range(20):
        F, w, b, cand, keep = _case(rng, n, ties=rep % 2 == 0)
        C, score, ranked = K.score_rank(F, w, b, cand, keep)
        ref = _reference(F, w, b, cand, keep, 10)
        assert np.array_equal(C, ref[0]) and np.array_equal(score, ref[1])  # bit for bit: == on floats
        assert ranked.tolist() == ref[2].tolist()
        Co, Fo, P, g_order, s_o, c_o = K.top_rows(C, F, score, cand, ranked[:10], _GROUP_OF, len(GROUPS))
        assert np.array_equal(Co, ref[3]) and np.array_equal(Fo, ref[4])
        assert np.array_equal(s_o, ref[7]) and c_o.tolist() == ref[8].tolist()
        # the group sums, in feature order: BLAS's product accumulates in an order of its own that depends
        # on the shape, so the old parts can differ in the last bit (the answer shows 6 decimals)
        assert np.allclose(P, ref[5], rtol=1e-12, atol=1e-300)
        summed = np.zeros_like(P)
        for k, g in enumerate(_GROUP_OF.tolist()):
            summed[:, g] += Co[:, k]
        assert np.array_equal(P, summed)
        exact = np.argsort(-P, axis=1, kind="stable")
        assert g_order.tolist() == exact.tolist()


def test_ties_go_to_the_lower_item_and_nan_scores_rank_last():
    F = np.zeros((5, 3))
    F[:, 0] = [1.0, 2.0, 2.0, np.nan, 0.5]
    w = np.array([1.0, 0.0, 0.0])
    cand = np.array([40, 30, 10, 5, 20], dtype=np.int64)
    _, score, ranked = K.score_rank(F, w, 0.0, cand, np.ones(5, dtype=bool))
    assert ranked.tolist() == [2, 1, 0, 4, 3]  # 2.0 (item 10), 2.0 (item 30), 1.0, 0.5, then NaN
    assert np.isnan(score[3])
    _, _, ranked = K.score_rank(F, w, 0.0, cand, np.array([True, False, True, True, False]))
    assert ranked.tolist() == [2, 0, 3]
    _, _, ranked = K.score_rank(F, w, 0.0, cand, np.zeros(5, dtype=bool))
    assert ranked.size == 0


def test_groups_of_a_row_by_part_desc_nan_last():
    C = np.zeros((1, len(_GROUP_OF)))
    first = {}
    for k, g in enumerate(_GROUP_OF.tolist()):
        first.setdefault(g, k)
    C[0, first[3]] = 2.0
    C[0, first[1]] = 2.0
    C[0, first[5]] = np.nan
    C[0, first[0]] = -1.0
    order = np.zeros(1, dtype=np.int64)
    row = K.top_rows(C, C, np.zeros(1), order, order, _GROUP_OF, len(GROUPS))[3][0].tolist()
    assert row[:2] == [1, 3]  # equal parts: the lower group first
    assert row[-1] == 5 and row[-2] == 0  # then the zeros (groups in order), -1.0, NaN last


def test_rec_ids_unique_across_threads_and_forks():
    got: list[str] = []
    lock = threading.Lock()

    def make():
        mine = [experiments.ulid() for _ in range(3000)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(set(got)) == len(got) == 12_000
    r, w_ = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next ids must not repeat the parent's (its pool is emptied at fork)
        os.close(r)
        os.write(w_, "".join(experiments.ulid()[10:] for _ in range(50)).encode())
        os._exit(0)
    os.close(w_)
    child = os.read(r, 1 << 16).decode()
    os.waitpid(pid, 0)
    parent = "".join(experiments.ulid()[10:] for _ in range(50))
    assert child and child != parent
    assert {child[i : i + 16] for i in range(0, len(child), 16)}.isdisjoint(
        {parent[i : i + 16] for i in range(0, len(parent), 16)}
    )
