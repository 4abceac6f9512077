"""Training's heavy step on Beam (pipelines/beam/itemknn.py, in .venv-beam by subprocess): the top-N cosine
neighbours of every item from the committed clean/ files, equal to the in-process fit
(``shared.reco.itemknn.ItemItemCF`` on ``build_user_items``) on a small faulty world: the same neighbours
in the same order and the same float32 scores, item by item, once the tie-extended lists are cut to N
(``shared.neighbour_lists.select``). Skipped only without the Beam environment. (Train reading the lists:
tests/test_train_neighbours.py.)"""

from __future__ import annotations

import gzip
import json
import subprocess

import numpy as np
import orjson
import pytest

from devtools import beam_check
from devtools.simulator import simulate
from shared import layout
from shared import neighbour_lists as nl
from shared.adapters.storage import open_store
from shared.pipeline.clean import read_clean, run_clean
from shared.reco.interactions import build_user_items
from shared.reco.itemknn import ItemItemCF

pytestmark = pytest.mark.skipif(
    beam_check.beam_python() is None,
    reason=f"the Beam environment is absent ({beam_check.BEAM_PYTHON}): run `make venv-beam` (CI does)",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    sim = simulate(seed=11, n_streams=4, n_users=300, n_items=80, faults="default")
    rows = [
        orjson.dumps(dict(r, received_at="2026-11-29T00:00:00.000Z")) if isinstance(r, dict) else r.encode()
        for r in list(sim.catalog) + list(sim.events)
    ]
    root = tmp_path_factory.mktemp("knn")
    s = open_store(root)
    half = len(rows) // 2  # two runs: two clean files per date
    s.put("raw/date=2026-11-27/hour=00/a.ndjson.gz", gzip.compress(b"\n".join(rows[:half]) + b"\n"))
    assert run_clean(s, now=1795881600.0)["status"] == "committed"
    s.put("raw/date=2026-11-27/hour=01/b.ndjson.gz", gzip.compress(b"\n".join(rows[half:]) + b"\n"))
    assert run_clean(s, now=1795881600.0 + 60)["status"] == "committed"
    return s, str(root)


@pytest.mark.parametrize("neighbours", [5, 30])
def test_beam_neighbours_equal_the_in_process_fit(store, neighbours):
    store, url = store
    clean = read_clean(store).to_pandas()
    items = np.array(sorted(set(clean["item_id"].dropna().astype(str))))
    inter = build_user_items(clean, half_life_days=None, item_ids=items)
    W = ItemItemCF("cosine", neighbours=neighbours).fit(inter.matrix).W_.tocsr()
    W.sort_indices()
    assert W.nnz > 0
    py = beam_check.beam_python()

    out = subprocess.run(
        [str(py), "-m", "pipelines.beam.itemknn", "--store", url, "--neighbours", str(neighbours)]
        + ["--window-days", "3650", "--half-life-days", "none"],  # (all of the clean data, undecayed: as above)
        cwd=beam_check.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    meta, why = nl.latest(store)
    assert meta is not None and meta["id"] == res["id"] and res["latest"], why
    assert meta["definition"]["neighbours"] == neighbours and meta["definition"]["half_life_days"] is None
    assert {i["key"] for i in meta["inputs"]} == {f.key for f in layout.load_manifest(store)[0].clean_files}
    arrays = nl.load(store, meta)
    assert arrays["item_ids"].tolist() == items.tolist()
    # the rows hold at least N (ties at the N-th score extended), cut to N they are the in-process rows
    counts = np.diff(arrays["indptr"])
    assert (counts >= np.minimum(np.diff(W.indptr), neighbours)).all()
    indptr, indices, data = nl.select(arrays, items, neighbours)
    assert np.array_equal(indptr, W.indptr)
    assert np.array_equal(indices, W.indices)
    assert np.array_equal(data, W.data.astype(np.float32))
    assert np.diff(indptr).max() <= neighbours
