"""The experiment tables on both clean engines: the same raw objects (a simulated evening plus the
reactions of simulated viewers to recommendations, over two runs) through the DuckDB path and the Beam
one (``pipelines/beam``, in .venv-beam), and the two stores identical row for row, the ``rec_viewer``
and ``experiment`` tables included (``devtools.beam_check.compare_stores``). Skipped only when the Beam
environment is absent (``make venv-beam``; ``.ci/run`` creates it)."""

from __future__ import annotations

import gzip
import uuid

import numpy as np
import orjson
import pytest

from devtools import beam_check
from devtools.rec_sim import RecTraffic
from devtools.simulator import simulate
from shared.adapters.storage import open_store
from shared.pipeline.clean import read_analytics, run_clean
from shared.serving import experiments as sx

pytestmark = pytest.mark.skipif(
    beam_check.beam_python() is None,
    reason=f"the Beam environment is absent ({beam_check.BEAM_PYTHON}): run `make venv-beam` (CI does)",
)

REC = "2026-11-29T00:00:00.000Z"
NOW = 1795881600.0  # 2026-11-29T00:00:00Z
EXP = sx.Experiment.parse(
    {"experiment": "beam", "arms": [{"name": "control", "weight": 1}, {"name": "b", "weight": 1}]}
)


@pytest.fixture(scope="module")
def world():
    sim = simulate(seed=5, n_streams=3, n_users=400, n_items=80)
    w = sim.world
    traffic = RecTraffic(sim, seed=9)
    reqs = traffic.requests(600)
    rng = np.random.default_rng(1)
    show = {s["stream_id"]: s["showcase"] for s in w.streams}
    answers = []
    for user, stream in reqs:  # answers as recommend would give them: popular first vs a random list
        arm = EXP.assign(user).name
        items = show[stream]
        order = np.argsort(-w.item_pop[items]) if arm == "control" else rng.permutation(items.size)
        ids = [w.item_ids[int(items[j])] for j in order[:6]]
        answers.append({"rec_id": sx.rec_id(EXP.experiment, arm), "items": [{"item_id": i} for i in ids]})
    events, _ = traffic.react(reqs, answers)

    def lines(rows):
        return [orjson.dumps(dict(r, received_at=REC)) for r in rows]

    base = lines(sim.catalog) + lines(sim.events)
    half = len(events) // 2
    return base, lines(events[:half]), lines(events[half:])


def _put(store, key, lines):
    store.put(key, gzip.compress(b"\n".join(lines) + b"\n", mtime=0))


def test_experiment_tables_equal_on_both_engines(world, gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("DAIHUO_CLEAN_THREADS", "2")
    base, first, second = world
    duck = open_store(tmp_path / "duck")
    url = f"gs://daihuo-default/beam-exp-{uuid.uuid4().hex[:8]}"
    beam = open_store(url)
    for run, parts in ((1, {"a": base, "b": first}), (2, {"c": second})):
        for name, lines in parts.items():
            for store in (duck, beam):
                _put(store, f"raw/date=2026-11-27/hour=0{run}/{name}.ndjson.gz", lines)
        a = run_clean(duck, now=NOW + run)
        b = beam_check.run_beam(url, now=NOW + run)
        assert a["status"] == b["status"] == "committed"
        diffs = beam_check.compare_stores(duck, beam)
        assert not diffs, "\n".join(diffs)
    t = read_analytics(duck, "experiment").to_pandas().set_index("arm")
    assert set(t.index) == {"control", "b"} and (t["impressions"] > 0).all() and (t["clicks"] > 0).all()
    assert read_analytics(duck, "rec_viewer").num_rows > 0
