"""Training job in-process on a local store: versions, npz without pickle, promotion policy,
idempotency, regressions kept out of LATEST, failures raise."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from devtools.simulator import SimConfig, simulate
from shared.adapters.storage import open_store
from shared.serving.data import read_training_data, write_clean_from_frames
from shared.serving.registry import LATEST, Registry, arrays_key, decode_arrays, meta_key
from shared.serving.train import TrainConfig, run_train

SIM = SimConfig.repeat_preset(seed=1, scale=0.3)  # 28 days, repeat consumables, live-room dynamics
#: a repeat-blind recipe (the v1 habit: nothing the viewer touched before is ever served)
BLIND = {"filter_seen": True}


@pytest.fixture(scope="module")
def sim():
    return simulate(SIM)


@pytest.fixture()
def store(sim, tmp_path):
    st = open_store(str(tmp_path / "store"))
    write_clean_from_frames(st, sim.truth.expected_clean(), sim.truth.catalog_frame())
    return st


class FakeBus:
    def __init__(self):
        self.sent = []

    def publish(self, topic, data, **attrs):
        self.sent.append((topic, json.loads(data), attrs))
        return str(len(self.sent))


def test_reader_window_and_catalog(store, sim):
    d = read_training_data(store, 30)
    assert len(d.events) == len(sim.truth.expected_clean())
    assert str(d.events["ts"].dtype).startswith("datetime64") and d.events["event_id"].is_unique
    assert d.catalog["item_id"].is_unique and len(d.catalog) == len(sim.catalog)
    assert [i["key"] for i in d.inputs][-1] == "catalog/sim.parquet"
    short = read_training_data(store, 0.25)  # last 6 hours of event time only
    assert 0 < len(short.events) < len(d.events)
    assert short.events["ts"].min() > d.events["ts"].max() - np.timedelta64(6, "h")


def test_first_model_is_promoted_and_written_without_pickle(store):
    bus = FakeBus()
    res = run_train(store, bus, TrainConfig(window_days=30))
    assert res.promoted and "first model" in res.reason and "BELOW" not in res.reason
    pointer = json.loads(store.get(LATEST))
    assert pointer["version"] == res.version
    with np.load(io.BytesIO(store.get(arrays_key(res.version))), allow_pickle=False) as z:
        assert "model.base.item_ids" in z.files and "serving.item_title" in z.files
        assert all(z[k].dtype != object for k in z.files)
    meta = json.loads(store.get(meta_key(res.version)))
    for k in ("params", "window", "inputs", "metrics", "created_at", "code_version", "decision", "model"):
        assert k in meta
    m = meta["metrics"]
    assert m["primary"] == "room/purchase/all" and m["gate"]["beats_best_baseline"] is True
    assert m["room_all_queries"] >= 100 and m["room_all_ndcg@10"] > m["room_all_best_baseline_ndcg@10"]
    blocks = meta["evaluation"]["blocks"]
    assert {
        "room/purchase/all",
        "room/purchase/new",
        "catalogue/purchase/all",
        "catalogue/purchase/new",
        "room/cart/all",
    } <= set(blocks)
    room = blocks["room/purchase/all"]["rankers"]
    assert {
        "stream_bestsellers",
        "showcase_popularity",
        "own_history",
        "own_then_stream",
        "itemknn",
        "candidate",
    } <= set(room)
    vs = m["gate"]["vs_best_baseline"]
    assert vs["ratio_lo"] <= vs["ratio"] <= vs["ratio_hi"] and vs["n"] == m["room_all_queries"]
    served = Registry(store).load(res.version)
    assert served.model.recommend(str(served.model.user_ids_[0]), 5)["items"]
    [(topic, msg, attrs)] = bus.sent
    assert topic == "model-published" and msg["version"] == res.version and msg["promoted"] is True
    assert attrs == {"version": res.version, "promoted": "true"}


def test_redelivery_is_idempotent(store):
    first = run_train(store, None)
    keys = sorted(store.list("models/"))
    gen = store.generation(LATEST)
    bus = FakeBus()
    again = run_train(store, bus)
    assert again.version == first.version and again.reused and again.promoted
    assert sorted(store.list("models/")) == keys and store.generation(LATEST) == gen
    assert bus.sent[0][1]["version"] == first.version and bus.sent[0][1]["redelivery"] is True


def test_gate_refuses_a_candidate_below_own_history(store):
    """On a repeat-heavy world a repeat-blind candidate loses to the viewer's own history: refused."""
    good = run_train(store, None)
    gen = store.generation(LATEST)
    bus = FakeBus()
    bad = run_train(store, bus, TrainConfig(params=BLIND))
    assert bad.version != good.version and not bad.promoted
    assert "below baseline" in bad.reason and good.version in bad.reason
    assert store.generation(LATEST) == gen and json.loads(store.get(LATEST))["version"] == good.version
    meta = json.loads(store.get(meta_key(bad.version)))
    assert meta["decision"]["promote"] is False and meta["decision"]["reason"] == bad.reason
    g = meta["metrics"]["gate"]
    assert g["block"] == "room/purchase/all" and g["best_baseline"] in ("own_history", "own_then_stream")
    assert g["candidate"] < g["best_baseline_value"] and g["vs_best_baseline"]["diff"] < 0
    room = meta["evaluation"]["blocks"]["room/purchase/all"]["rankers"]
    assert room["current"]["ndcg@10"] > room["candidate"]["ndcg@10"]  # the good recipe, refitted on the same part
    assert bus.sent[0][1]["promoted"] is False and "below baseline" in bus.sent[0][1]["reason"]


def test_crashed_promotion_is_finished_on_redelivery(store, monkeypatch):
    first = run_train(store, None)
    # new data -> new version; crash right after the version is written, before LATEST moves
    d = read_training_data(store, 30)
    store.put("clean/date=2026-11-30/extra.parquet", store.get([i["key"] for i in d.inputs][0]))
    monkeypatch.setattr(Registry, "promote", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        run_train(store, None)
    assert json.loads(store.get(LATEST))["version"] == first.version
    monkeypatch.undo()
    res = run_train(store, None)
    assert res.reused and res.promoted and json.loads(store.get(LATEST))["version"] == res.version != first.version


def test_corrupt_input_raises(store):
    store.put("clean/date=2026-11-29/broken.parquet", b"not parquet at all")
    with pytest.raises(Exception):
        run_train(store, None)
    assert not store.exists(LATEST)


def test_empty_store_trains_nothing(tmp_path):
    bus = FakeBus()
    res = run_train(open_store(str(tmp_path / "empty")), bus)
    assert res.version is None and not res.promoted and "no clean events" in res.reason
    assert bus.sent[0][1]["promoted"] is False


def test_reader_follows_the_clean_manifest(store):
    """With state/clean-manifest.json present only committed objects are read (an uncommitted run's
    leftovers under clean/ are ignored)."""
    keys = sorted(store.list("clean/"))
    store.put_json(
        "state/clean-manifest.json",
        {"clean_files": [{"key": k, "streams": []} for k in keys[:1]], "catalog": ["catalog/sim.parquet"]},
    )
    store.put("clean/date=2026-11-29/r-uncommitted.parquet", store.get(keys[-1]))
    d = read_training_data(store, 30)
    assert [i["key"] for i in d.inputs] == [keys[0], "catalog/sim.parquet"]
    assert d.events["ts"].dt.strftime("%Y-%m-%d").unique().tolist() == [keys[0].split("date=")[1][:10]]


def test_reader_codes_dedupe_and_order(tmp_path):
    """Arrow reader: ids as categoricals (codes, not per-row strings), event_id duplicates across files
    of one date partition dropped (first file wins), (ts, event_id) order also inside runs of equal ts,
    plain-string (not dictionary) columns accepted."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    st = open_store(str(tmp_path / "s"))
    ts = pd.to_datetime(["2026-11-02T10:00:00Z"] * 3 + ["2026-11-02T09:00:00Z"], utc=True).astype("datetime64[us, UTC]")
    a = pd.DataFrame(
        {
            "event_id": ["e-b", "e-a", "e-c", "e-0"],
            "type": "purchase",
            "ts": ts,
            "stream_id": "s1",
            "user_id": ["u1", "u2", "u3", "u1"],
            "item_id": ["i1", "i2", "i1", "i3"],
            "price": 1.0,
        }
    )
    b = a.iloc[[0]].assign(user_id="u9", item_id="i9")  # same event_id in a second file of the same day
    for name, df in (("r1", a), ("r2", b)):
        buf = io.BytesIO()
        t = pa.Table.from_pandas(df, preserve_index=False)
        if name == "r1":
            t = pa.table(
                {c: (t[c].dictionary_encode() if c in ("user_id", "item_id") else t[c]) for c in t.column_names}
            )
        pq.write_table(t, buf)
        st.put(f"clean/date=2026-11-02/{name}.parquet", buf.getvalue())
    ev = read_training_data(st, 30).events
    assert ev["event_id"].tolist() == ["e-0", "e-a", "e-b", "e-c"]
    assert ev.set_index("event_id").loc["e-b", "user_id"] == "u1"
    assert isinstance(ev["user_id"].dtype, pd.CategoricalDtype) and ev["user_id"].astype(str).tolist() == [
        "u1",
        "u2",
        "u1",
        "u3",
    ]


def _served(st, version):
    model, extras = decode_arrays(st.get(arrays_key(version)))
    return model, extras, Registry(st).read_meta(version)


def _timeless(x):
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if not k.endswith(("seconds", "_s"))}
    return [_timeless(v) for v in x] if isinstance(x, list) else x


def test_the_served_fit_in_a_child_process_trains_the_same_model(sim, tmp_path):
    """The served fit runs in a forked child beside the gate (2 CPUs here): the same arrays and heads as
    a fit in process, with the figures of where it ran."""
    stores = {}
    for name in ("child", "inline"):
        stores[name] = open_store(str(tmp_path / name))
        write_clean_from_frames(stores[name], sim.truth.expected_clean(), sim.truth.catalog_frame())
    a = run_train(stores["child"], None, TrainConfig(parallel_fit=True))
    b = run_train(stores["inline"], None, TrainConfig(parallel_fit=False))
    assert a.phases["served_fit"]["mode"] == "child", a.phases["served_fit"]
    assert b.phases["served_fit"] == {**b.phases["served_fit"], "mode": "in_process", "reason": "parallel fit off"}
    assert a.version == b.version  # (where it ran is not part of the version: the same model)
    ma, ea, meta_a = _served(stores["child"], a.version)
    mb, eb, meta_b = _served(stores["inline"], b.version)
    assert ma.keys() == mb.keys() and ea.keys() == eb.keys()
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)
    for k in ea:
        np.testing.assert_array_equal(ea[k], eb[k], err_msg=k)
    assert _timeless(meta_a["model"]) == _timeless(meta_b["model"]) and meta_a["data"] == meta_b["data"]
    assert meta_a["served_fit"]["mode"] == "child" and meta_a["served_fit"]["child_peak_rss_mib"] > 0
    assert a.phases["cpu"]["fit"] >= meta_a["served_fit"]["times"]["fit"][1]  # the child's CPU is counted


def test_a_served_fit_child_that_dies_is_replaced_by_a_fit_in_process(store, monkeypatch):
    """A child killed mid-fit (out of memory, a crash) loses nothing: the parent fits the model itself and
    says why."""
    import os

    from shared.serving import train as T

    parent, real = os.getpid(), T._fit_and_encode

    def dies_in_the_child(*args):
        if os.getpid() != parent:
            os._exit(3)
        return real(*args)

    monkeypatch.setattr(T, "_fit_and_encode", dies_in_the_child)
    res = run_train(store, None, TrainConfig(parallel_fit=True))
    sf = res.phases["served_fit"]
    assert sf["mode"] == "in_process" and "exit code 3" in sf["reason"], sf
    assert res.promoted and Registry(store).latest()[0]["version"] == res.version
    model, _, meta = _served(store, res.version)
    assert meta["served_fit"]["mode"] == "in_process" and len(model) > 0


def test_a_run_whose_gate_fails_stops_its_served_fit_child(store, monkeypatch):
    """The gate raising (a store error, a bug) fails the run as before and leaves no child fitting."""
    import multiprocessing as mp

    from shared.serving import train as T

    def broken_gate(*args, **kwargs):
        raise RuntimeError("gate broke")

    monkeypatch.setattr(T, "_gate", broken_gate)
    with pytest.raises(RuntimeError, match="gate broke"):
        run_train(store, None, TrainConfig(parallel_fit=True))
    assert [p for p in mp.active_children() if p.name == "served-fit"] == []


def test_reader_orders_ties_of_a_file_already_in_time_order(tmp_path):
    """Rows already in ts order: only runs of equal ts are put in event_id order (and rows already so
    ordered are kept as they are, without a reordering copy of the table)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    for ids, want in (
        (["e-0", "e-b", "e-a", "e-c"], ["e-0", "e-a", "e-b", "e-c"]),
        (["e-0", "e-a", "e-b", "e-c"], None),
    ):
        st = open_store(str(tmp_path / ids[1]))
        ts = pd.to_datetime(
            ["2026-11-02T09:00:00Z"] + ["2026-11-02T10:00:00Z"] * 2 + ["2026-11-02T11:00:00Z"], utc=True
        )
        df = pd.DataFrame(
            {
                "event_id": ids,
                "type": "purchase",
                "ts": ts.astype("datetime64[us, UTC]"),
                "stream_id": "s1",
                "user_id": ["u0", "u1", "u2", "u3"],
                "item_id": "i1",
                "price": 1.0,
            }
        )
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
        st.put("clean/date=2026-11-02/r1.parquet", buf.getvalue())
        ev = read_training_data(st, 30).events
        assert ev["event_id"].tolist() == (want or ids)
        assert ev["user_id"].astype(str).tolist() == [df.set_index("event_id").loc[e, "user_id"] for e in (want or ids)]
