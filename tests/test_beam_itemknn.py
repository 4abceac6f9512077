"""Training's heavy step on Beam (pipelines/beam/itemknn.py, in .venv-beam by subprocess): the top-N cosine
neighbours of every item from the committed clean/ files, equal to the in-process fit
(``shared.reco.itemknn.ItemItemCF`` on ``build_user_items``) on a small faulty world: the same neighbours
in the same order and the same float32 scores, item by item. Skipped only without the Beam environment."""

from __future__ import annotations

import gzip
import io
import subprocess

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from devtools import beam_check
from devtools.simulator import simulate
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
    assert W.nnz > 0
    key = f"models/neighbours/test-{neighbours}.parquet"
    py = beam_check.beam_python()

    out = subprocess.run(
        [str(py), "-m", "pipelines.beam.itemknn", "--store", url, "--out", key, "--neighbours", str(neighbours)],
        cwd=beam_check.ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = {r["item_id"]: r for r in pq.read_table(io.BytesIO(store.get(key))).to_pylist()}
    n_rows = 0
    for i, item in enumerate(items):
        lo, hi = W.indptr[i], W.indptr[i + 1]
        want_ids = [str(items[j]) for j in W.indices[lo:hi]]
        want_scores = W.data[lo:hi].astype(np.float32)
        if not want_ids:
            assert item not in got
            continue
        n_rows += 1
        g = got[item]
        # (the in-process CSR lists a row's neighbours by column = sorted item id, as the Beam rows do)
        assert g["neighbours"] == want_ids, item
        assert np.array_equal(np.asarray(g["scores"], dtype=np.float32), want_scores), item
    assert n_rows == len(got)
