"""Train reading the Beam job's neighbour lists (``DAIHUO_TRAIN_NEIGHBOURS=precomputed``,
``shared/neighbour_lists.py``): on a small faulty world cleaned by the clean function, the Beam job
(pipelines/beam/itemknn.py on FnApiRunner, in .venv-beam by subprocess) writes its lists to the local
store, then train runs twice on identical copies of that store, once with the precomputed lists and once
fitting in process: the two versions' arrays are equal, every one of them (the CF neighbour matrix
included), and so are the recommendations. Lists that do not cover the training data (missing, stale
after another clean run, another definition) are not used: train fits in process and says why.
Skipped only without the Beam environment."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess

import numpy as np
import orjson
import pandas as pd
import pytest

from devtools import beam_check
from devtools.simulator import simulate
from shared import layout
from shared import neighbour_lists as nl
from shared.adapters.storage import open_store
from shared.pipeline.clean import run_clean
from shared.reco import HybridRecommender
from shared.serving.data import read_training_data
from shared.serving.registry import Registry, decode_arrays
from shared.serving.train import TrainConfig, run_train

pytestmark = pytest.mark.skipif(
    beam_check.beam_python() is None,
    reason=f"the Beam environment is absent ({beam_check.BEAM_PYTHON}): run `make venv-beam` (CI does)",
)

T0 = 1795881600.0
#: recipes whose CF part is the binary top-N cosine: item-kNN itself and EASE above its dense line (the
#: cosine fallback), with N below the lists' 100 (cut with the model's own tie order; rows reach ~28 here)
RECIPES = {
    "itemknn": {"base": {"cf": "itemknn", "cf_params": {"neighbours": 5}}},
    "ease-fallback": {
        "base": {"cf_params": {"lam": 200.0, "neighbours": 100, "max_dense_items": 10, "fallback_neighbours": 8}}
    },
}


def _raw(sim, part: slice) -> bytes:
    rows = [
        orjson.dumps(dict(r, received_at="2026-11-29T00:00:00.000Z")) if isinstance(r, dict) else r.encode()
        for r in list(sim.catalog) + list(sim.events)
    ][part]
    return gzip.compress(b"\n".join(rows) + b"\n")


def _beam(url: str, *args: str) -> dict:
    out = subprocess.run(
        [str(beam_check.beam_python()), "-m", "pipelines.beam.itemknn", "--store", url, *args],
        cwd=beam_check.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with two committed clean runs and the Beam job's lists (defaults: train's window and the
    recipe's decay, N = 100); the rest of the simulated events kept for a later run."""
    sim = simulate(seed=11, n_streams=4, n_users=300, n_items=80, faults="default")
    n = len(sim.catalog) + len(sim.events)
    root = tmp_path_factory.mktemp("knn-train") / "store"
    s = open_store(root)
    s.put("raw/date=2026-11-27/hour=00/a.ndjson.gz", _raw(sim, slice(0, n // 2)))
    assert run_clean(s, now=T0)["status"] == "committed"
    s.put("raw/date=2026-11-27/hour=01/b.ndjson.gz", _raw(sim, slice(n // 2, n * 9 // 10)))
    assert run_clean(s, now=T0 + 60)["status"] == "committed"
    res = _beam(str(root))
    assert res["latest"] and res["nnz"] > 0
    return root, sim, res


def _copy(root, dst):
    shutil.copytree(root, dst)
    return open_store(dst)


def _served(store, version):
    return Registry(store).load(version)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_precomputed_lists_train_the_same_model(world, tmp_path, recipe):
    root, _, lists = world
    pre, inp = _copy(root, tmp_path / "pre"), _copy(root, tmp_path / "inp")
    params = RECIPES[recipe]
    a = run_train(pre, None, TrainConfig(params=params, neighbours="precomputed"))
    b = run_train(inp, None, TrainConfig(params=params, neighbours="in_process"))
    assert a.neighbours["source"] == "precomputed" and a.neighbours["lists"] == lists["id"], a.neighbours
    assert b.neighbours == {"setting": "in_process", "source": "in_process"}
    assert "neighbours" in a.phases["wall"] and "neighbours" not in b.phases["wall"]
    assert a.version == b.version  # (the source is not part of the version: the same model)
    meta = Registry(pre).read_meta(a.version)
    assert meta["neighbours"]["source"] == "precomputed" and meta["config"]["neighbours"] == "precomputed"
    cf_meta = meta["model"]["base"]["cf"] if "base" in meta["model"] else None
    ma, ea = decode_arrays(pre.get(layout.model_arrays_key(a.version)))
    mb, eb = decode_arrays(inp.get(layout.model_arrays_key(b.version)))
    assert sorted(ma) == sorted(mb) and sorted(ea) == sorted(eb)
    cf_keys = [k for k in ma if ".cf." in f".{k}" and "W" in k]
    assert cf_keys, sorted(ma)  # the CF neighbour matrix is among the arrays compared
    for k in ma:  # (NaN: an item without a price, in both)
        same = np.array_equal(ma[k], mb[k], equal_nan=ma[k].dtype.kind == "f")
        assert ma[k].dtype == mb[k].dtype and same, (k, cf_meta)
    for k in ea:
        assert np.array_equal(ea[k], eb[k]), k
    sa, sb = _served(pre, a.version), _served(inp, b.version)
    W = sa.model.base.cf_model_.W_
    assert W.nnz > 0 and np.diff(W.indptr).max() == (5 if recipe == "itemknn" else 8)
    users = list(sa.model.user_ids_[:: max(1, len(sa.model.user_ids_) // 25)])
    assert len(users) >= 20
    for u in users:
        ra, rb = sa.model.recommend(u, 10), sb.model.recommend(u, 10)
        assert [r["item_id"] for r in ra["items"]] == [r["item_id"] for r in rb["items"]], u
        assert [r["score"] for r in ra["items"]] == [r["score"] for r in rb["items"]], u


def test_missing_lists_fall_back_in_process(world, tmp_path, caplog):
    root, _, _ = world
    store = _copy(root, tmp_path / "s")
    store.delete(layout.NEIGHBOURS_LATEST)
    res = run_train(store, None, TrainConfig(params=RECIPES["itemknn"], neighbours="precomputed"))
    assert res.neighbours["source"] == "in_process" and "no precomputed neighbour lists" in res.neighbours["reason"]
    assert "precomputed neighbours not used" in caplog.text
    assert Registry(store).read_meta(res.version)["neighbours"] == res.neighbours


def test_stale_lists_fall_back_then_a_new_job_serves(world, tmp_path):
    """Another clean run after the job: the lists no longer cover what train reads (not used, said so);
    the job run again on the new state moves the pointer and train uses its lists."""
    root, sim, first = world
    store = _copy(root, tmp_path / "s")
    n = len(sim.catalog) + len(sim.events)
    store.put("raw/date=2026-11-27/hour=02/c.ndjson.gz", _raw(sim, slice(n * 9 // 10, n)))
    assert run_clean(store, now=T0 + 120)["status"] == "committed"
    cfg = TrainConfig(params=RECIPES["itemknn"], neighbours="precomputed")
    res = run_train(store, None, cfg)
    assert res.neighbours["source"] == "in_process" and res.neighbours["reason"].startswith("stale"), res.neighbours
    again = _beam(str(tmp_path / "s"))
    assert again["id"] != first["id"] and again["latest"]
    assert nl.latest(store)[0]["id"] == again["id"]
    res2 = run_train(store, None, cfg)
    assert res2.version == res.version  # the same inputs: a redelivery, not fitted again
    fresh = _copy(tmp_path / "s", tmp_path / "s2")
    for k in list(fresh.list(layout.MODELS)):
        fresh.delete(k)
    res3 = run_train(fresh, None, cfg)
    assert res3.neighbours["source"] == "precomputed" and res3.neighbours["lists"] == again["id"]


@pytest.mark.parametrize(
    "cfg, why",
    [
        (TrainConfig(params=RECIPES["itemknn"], neighbours="precomputed", window_days=10), "window"),
        (TrainConfig(params={**RECIPES["itemknn"], "half_life_days": 7.0}, neighbours="precomputed"), "half_life"),
        (
            TrainConfig(params={"base": {"cf": "itemknn", "cf_params": {"neighbours": 101}}}, neighbours="precomputed"),
            "neighbours per item",
        ),
        (TrainConfig(neighbours="precomputed"), "not the top-N cosine"),  # the default recipe: dense EASE
    ],
    ids=["window", "decay", "too-few", "dense-ease"],
)
def test_lists_of_another_definition_are_not_used(world, tmp_path, cfg, why):
    root, _, _ = world
    store = _copy(root, tmp_path / "s")
    res = run_train(store, None, cfg)
    assert res.neighbours["source"] == "in_process" and why in res.neighbours["reason"], res.neighbours


def test_tampered_arrays_are_refused(world, tmp_path):
    root, _, lists = world
    store = _copy(root, tmp_path / "s")
    key = layout.neighbours_arrays_key(lists["id"])
    store.put(key, store.get(key) + b"x")
    with pytest.raises(ValueError, match="not the object its meta.json recorded"):
        run_train(store, None, TrainConfig(params=RECIPES["itemknn"], neighbours="precomputed"))


def test_select_breaks_ties_by_the_model_order():
    """Ties at the N-th score: the lists carry them all, the model's own order picks (pure numpy)."""
    arrays = {
        "item_ids": np.array(["a", "b", "c", "d"]),
        "indptr": np.array([0, 3, 3, 3, 3]),
        "indices": np.array([1, 2, 3], dtype=np.int32),
        "scores": np.array([0.9, 0.5, 0.5]),
    }
    model = np.array(["x", "d", "a", "c", "b"])  # d before c in the model's index
    indptr, indices, data = nl.select(arrays, model, 2)
    assert indptr.tolist() == [0, 0, 0, 2, 2, 2]  # the row of "a" (position 2)
    assert indices.tolist() == [1, 4] and data.tolist() == [np.float32(0.5), np.float32(0.9)]
    with pytest.raises(ValueError, match="not in the model's item index"):
        nl.select(arrays, np.array(["a", "b", "c"]), 2)
    blob = nl.encode(**arrays)
    assert blob == nl.encode(**arrays)  # the same bytes every time (a re-run rewrites the same object)
    back = nl.decode(blob)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)


def test_lists_map_into_any_item_order(world):
    """The model's item index is the catalogue's order, not the sorted ids the lists use: in a shuffled
    index the lists cut to n are still the in-process fit's rows, ties at the n-th score included (and
    those ties are there: the id order would pick other neighbours)."""
    root, _, _ = world
    store = open_store(root)
    data = read_training_data(store, 30)
    meta, _ = nl.latest(store)
    arrays = nl.load(store, meta)
    ids = HybridRecommender.catalogue_ids(data.events, None)
    ids = ids[np.random.default_rng(3).permutation(len(ids))]
    end = pd.Timestamp(data.window["end"])
    tie_picks = 0
    for n in (2, 3, 5, 8):
        h = HybridRecommender(cf="itemknn", cf_params={"neighbours": n})
        W = h.fit_events(data.events, None, half_life_days=30.0, reference_time=end, item_ids=ids).cf_model_.W_
        W.sort_indices()
        indptr, indices, values = nl.select(arrays, ids, n)
        assert np.array_equal(indptr, W.indptr) and np.array_equal(indices, W.indices), n
        assert np.array_equal(values, W.data), n
        # the same cut under the sorted-id order, mapped back: other neighbours where ties straddle n
        srt = np.sort(ids)
        back = {x: k for k, x in enumerate(ids.tolist())}
        ip2, ix2, _ = nl.select(arrays, srt, n)
        for r, item in enumerate(srt.tolist()):
            mine = set(indices[indptr[back[item]] : indptr[back[item] + 1]].tolist())
            theirs = {back[x] for x in srt[ix2[ip2[r] : ip2[r + 1]]].tolist()}
            tie_picks += mine != theirs
    assert tie_picks > 0
