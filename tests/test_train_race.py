"""Two train runs at once on the GCS emulator (two clean runs' notifications): both decide "first
model"; the run on fewer clean objects moves LATEST first. The run on all of them loses the
compare-and-swap, gates again against the version now serving and replaces it; the other order, the
run on older data is refused after its re-gate. A redelivery promotes nothing twice."""

from __future__ import annotations

import json
import threading
import uuid

import pandas as pd
import pytest

from devtools.simulator import SimConfig, simulate
from shared.adapters.storage import open_store
from shared.serving import train as train_mod
from shared.serving.data import write_clean_from_frames
from shared.serving.registry import LATEST, Registry
from shared.serving.train import TrainConfig, run_train

SIM = SimConfig(seed=5, n_streams=10, n_users=2500, n_items=400, mean_viewers_per_stream=400)
WAIT = 600.0


@pytest.fixture(scope="module")
def sim():
    return simulate(SIM)


def _split(sim):
    ev = sim.truth.expected_clean()
    ts = pd.to_datetime(ev["ts_utc"] if "ts_utc" in ev else ev["ts"], utc=True, format="ISO8601")
    cut = ts.quantile(0.8)
    return ev[ts <= cut], ev[ts > cut]


def _race(monkeypatch, url, sim, first: str):
    """Thread "small" reads the early clean run only, thread "big" also the late one (written after
    "small" read). Both gates decide before either moves LATEST; then ``first`` goes on to promote
    while the other waits, then the other finishes."""
    early, late = _split(sim)
    store = open_store(url)
    write_clean_from_frames(store, early, sim.truth.catalog_frame(), run_id="r1")
    decided = {"small": threading.Event(), "big": threading.Event()}
    done = {"small": threading.Event(), "big": threading.Event()}
    calls: dict[str, int] = {"small": 0, "big": 0}
    real_gate = train_mod.run_gate

    def gate(*a, **k):
        name = threading.current_thread().name
        out = real_gate(*a, **k)
        calls[name] += 1
        if calls[name] == 1:  # the first decision of each run: both against "no LATEST"
            decided[name].set()
            other = "big" if name == "small" else "small"
            assert decided[other].wait(WAIT)
            if name != first:
                assert done[first].wait(WAIT)
        return out

    monkeypatch.setattr(train_mod, "run_gate", gate)
    results, errors = {}, []

    def run(name):
        try:
            results[name] = run_train(open_store(url), None, TrainConfig(window_days=30))
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)
            decided[name].set()
        finally:
            done[name].set()

    small = threading.Thread(target=run, args=("small",), name="small")
    small.start()
    assert decided["small"].wait(WAIT)
    write_clean_from_frames(store, late, None, run_id="r2")  # the second clean run commits
    big = threading.Thread(target=run, args=("big",), name="big")
    big.start()
    small.join(WAIT)
    big.join(WAIT)
    assert not errors, errors
    monkeypatch.undo()
    return store, results, calls


def _meta(store, version):
    return Registry(store).read_meta(version)


def test_run_on_more_data_replaces_the_one_that_won_the_race(gcs_emulator, sim, monkeypatch):
    url = f"gs://daihuo-default/race-{uuid.uuid4().hex[:8]}"
    store, res, calls = _race(monkeypatch, url, sim, first="small")
    small, big = res["small"], res["big"]
    assert small.promoted and "first model" in small.reason
    latest = json.loads(store.get(LATEST))
    big_meta = _meta(store, big.version)
    # the decision recorded is the one against the version actually serving when it tried
    assert big_meta["decision"]["compared_to"] == small.version and calls["big"] == 2
    assert [d["compared_to"] for d in big_meta["decisions"]] == [None]  # the stale "first model"
    assert big_meta["decision"]["reason"] == big.reason
    assert big.promoted, big.reason  # same recipe on a superset of the data: it passes the gate
    assert latest["version"] == big.version and latest["previous"] == small.version
    assert big_meta["decision"]["promoted_at"] == latest["promoted_at"]
    assert len(big_meta["inputs"]) > len(_meta(store, small.version)["inputs"])

    # the same clean run's notification again: no fit, no second promotion, LATEST untouched
    gen, keys = store.generation(LATEST), sorted(store.list("models/"))
    again = run_train(store, None, TrainConfig(window_days=30))
    assert again.version == big.version and again.reused and again.promoted
    assert store.generation(LATEST) == gen and sorted(store.list("models/")) == keys


def test_run_on_older_data_is_refused_after_its_regate(gcs_emulator, sim, monkeypatch):
    url = f"gs://daihuo-default/race-{uuid.uuid4().hex[:8]}"
    store, res, calls = _race(monkeypatch, url, sim, first="big")
    small, big = res["small"], res["big"]
    assert big.promoted and "first model" in big.reason
    assert not small.promoted and "older data" in small.reason and big.version in small.reason
    assert calls["small"] == 2
    meta = _meta(store, small.version)
    assert meta["decision"]["compared_to"] == big.version and meta["decision"]["promote"] is False
    assert json.loads(store.get(LATEST))["version"] == big.version
    gen = store.generation(LATEST)
    # a redelivery of the refused run's decision: still refused, LATEST untouched
    again = Registry(store).complete_promotion(small.version, _meta(store, small.version))
    assert again[0] is False and store.generation(LATEST) == gen
