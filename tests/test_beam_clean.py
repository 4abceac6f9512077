"""The Beam engine (pipelines/beam, run in .venv-beam by subprocess) against the DuckDB engine: the same
raw objects, two runs each (the second with duplicates of committed events, a late catalog and
hand-made edge lines), and the two stores identical object by object, row for row
(``devtools.beam_check.compare_stores``: manifest, clean/, clean_host/, catalog, dedupe index,
quarantine rows with their reasons, every KPI table, the report's counters).

The simulated world carries every fault class of the simulator (checked below). The Beam store is on
the GCS emulator (the storage adapter inside the DoFns), the DuckDB one on the local backend.
Skipped only when the Beam environment is absent (``make venv-beam``; ``.ci/run`` creates it).
"""

from __future__ import annotations

import gzip
import uuid
from collections import Counter

import orjson
import pytest

from devtools import beam_check
from devtools.simulator import FAULT_KINDS, simulate
from shared.adapters.storage import open_store
from shared.pipeline import engine
from shared.pipeline.clean import run_clean

pytestmark = pytest.mark.skipif(
    beam_check.beam_python() is None,
    reason=f"the Beam environment is absent ({beam_check.BEAM_PYTHON}): run `make venv-beam` (CI does)",
)

REC = "2026-11-29T00:00:00.000Z"
NOW = 1795881600.0  # 2026-11-29T00:00:00Z: the runs' clock (the same for both engines)
RUN2 = NOW + 3600


@pytest.fixture(scope="module")
def world():
    sim = simulate(seed=3, n_streams=3, n_users=400, n_items=120, faults="default", host_events=True)
    kinds = Counter(v["kind"] for v in sim.truth.fault_log.values())
    assert set(kinds) == set(FAULT_KINDS), f"every fault class present: {kinds}"
    rows = []
    for r in list(sim.events):
        rows.append(orjson.dumps(dict(r, received_at=REC)) if isinstance(r, dict) else r.encode())
    catalog = [orjson.dumps(dict(r, received_at=REC)) for r in sim.catalog]
    return sim, rows, catalog


def _put(store, key, lines: list[bytes]) -> None:
    store.put(key, gzip.compress(b"\n".join(lines) + b"\n", mtime=0))


# hand-made lines the simulator does not send: each has a defined outcome in both engines
EDGE = [
    b'{"event_id":"e-dupkey","type":"like","ts":"2026-11-27T13:00:00Z","platform":"douyin","stream_id":"s-x",'
    b'"user_id":"u1","user_id":"u2","received_at":"2026-11-29T00:00:00Z"}',
    b"[1, 2]",
    b'"just a string"',
    b'{"event_id":"e-lower","type":"like","ts":"2026-11-27t13:00:00z","platform":"douyin","stream_id":"s-x",'
    b'"user_id":"u1","received_at":"2026-11-29T00:00:00Z"}',
    b'{"event_id":"e-qty","type":"add_to_cart","ts":"2026-11-27T13:00:00+08:00","platform":"douyin",'
    b'"stream_id":"s-x","user_id":"u1","item_id":"i-1","quantity":2.0,"props":{"a":1.5,"b":"x"},'
    b'"received_at":"2026-11-29T00:00:00Z"}',
    b'{"event_id":"e-future","type":"like","ts":"2027-01-01T00:00:00Z","platform":"douyin","stream_id":"s-x",'
    b'"user_id":"u1","count":3}',
    b"   ",
    b'{"event_id":7,"type":"like"}',
]


def _raw(store, world, run: int) -> None:
    sim, rows, catalog = world
    third = len(rows) // 3
    if run == 1:  # the catalog comes late: purchases before it are unknown items (quarantine mode)
        _put(store, "raw/date=2026-11-27/hour=00/a.ndjson.gz", rows[:third])
        _put(store, "raw/date=2026-11-27/hour=01/b.ndjson.gz", rows[third : 2 * third])
    else:  # the rest, the catalog, re-sent copies of committed events, and the edge lines
        _put(store, "raw/date=2026-11-27/hour=02/c.ndjson.gz", rows[2 * third :] + rows[:50])
        _put(store, "raw/date=2026-11-27/hour=03/d.ndjson.gz", catalog + rows[100:120])
        store.put("raw/date=2026-11-27/hour=04/e.ndjson.gz", gzip.compress(b"\n".join(EDGE) + b"\n\n", mtime=0))


def test_beam_equals_duckdb_row_for_row(world, gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("DAIHUO_CLEAN_UNKNOWN_ITEMS", "quarantine")  # the unknown_item fault class is quarantined
    monkeypatch.setenv("DAIHUO_CLEAN_THREADS", "2")
    duck = open_store(tmp_path / "duck")
    url = f"gs://daihuo-default/beam-{uuid.uuid4().hex[:8]}"
    beam = open_store(url)
    summaries = []
    for run, now in ((1, NOW), (2, RUN2)):
        _raw(duck, world, run)
        _raw(beam, world, run)
        a = run_clean(duck, now=now)
        if run == 1:
            b = beam_check.run_beam(url, now=now)
        else:  # the second run through the engine setting, as the clean function runs it
            monkeypatch.setenv("DAIHUO_CLEAN_ENGINE", "beam")
            monkeypatch.setenv("DAIHUO_STORE", url)
            b = engine.run(beam, now=now)
        assert a["status"] == b["status"] == "committed"
        if run == 1:  # (a run id hashes the manifest's generation: local and GCS number them apart)
            assert a["run_id"] == b["run_id"]
        diffs = beam_check.compare_stores(duck, beam)
        assert not diffs, "\n".join(diffs)
        summaries.append(a)
    first, second = summaries
    # the runs exercised what they should (so "identical" is not about empty outputs)
    assert first["dropped_by_reason"].get("unknown_item", 0) > 0
    assert {"unparseable", "schema", "impossible_value"} <= set(first["dropped_by_reason"])
    assert first["duplicates_in_run"] > 0 and first["late"] > 0 and first["ts_corrected"] > 0
    assert first["host_rows"] > 0
    assert second["duplicates_seen_before"] >= 60 and second["catalog_items"] > 0
    assert second["dropped_by_reason"]["unparseable"] >= 3  # [1, 2], a string, a blank line
    assert second["dropped_by_field"].get("schema:user_id", 0) >= 1  # the duplicate key


def test_beam_engine_is_a_noop_without_pending_objects(gcs_emulator, monkeypatch):
    url = f"gs://daihuo-default/beam-empty-{uuid.uuid4().hex[:8]}"
    assert beam_check.run_beam(url, now=NOW) == {"status": "noop", "pending": 0}


def test_a_beam_run_that_crashes_before_the_commit_leaves_nothing_and_reruns_the_same(world, tmp_path, monkeypatch):
    """A crash after every object is written, before the manifest moves (the fault point
    ``clean:write_all``, once per store): nothing is committed; the rerun (the same run id, the same
    object names) commits what the DuckDB engine commits. (On the local backend: the fault's once-only
    marker is a create-only write, which the GCS emulator does not enforce, docs/storage.md.)"""
    from shared.layout import MANIFEST

    duck = open_store(tmp_path / "duck")
    url = str(tmp_path / "beam")
    beam = open_store(url)
    _raw(duck, world, 1)
    _raw(beam, world, 1)
    run_clean(duck, now=NOW)
    monkeypatch.setenv("DAIHUO_TEST_FAULTS", "clean:write_all")
    with pytest.raises(RuntimeError, match="InjectedCrash"):
        beam_check.run_beam(url, now=NOW)
    assert not beam.exists(MANIFEST)
    assert beam_check.run_beam(url, now=NOW)["status"] == "committed"
    diffs = beam_check.compare_stores(duck, beam)
    assert not diffs, "\n".join(diffs)


def test_engine_without_the_beam_environment_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DAIHUO_CLEAN_ENGINE", "beam")
    monkeypatch.setenv("DAIHUO_BEAM_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(RuntimeError, match="make venv-beam"):
        engine.run(open_store(tmp_path))


def test_engine_setting_refuses_a_config_it_cannot_pass(tmp_path, monkeypatch):
    from shared.pipeline.clean import CleanConfig

    monkeypatch.setenv("DAIHUO_CLEAN_ENGINE", "beam")
    with pytest.raises(ValueError, match="settings"):
        engine.run(open_store(tmp_path), cfg=CleanConfig())


# ----------------------------------------------------------------------------- events-cleaned
def _topic(bus, name: str) -> str:
    bus.ensure_topic(name)
    bus.ensure_subscription(f"{name}-pull", name)
    return f"{name}-pull"


def _drain(bus, sub: str, want: int, timeout: float = 30.0) -> list:
    """Every message on ``sub`` (acked): until ``want`` arrived, then one more empty pull (no extra copies)."""
    from tests.waiting import wait_for

    got: list = []

    def more():
        msgs = bus.pull(sub, 10, timeout_s=2)
        if msgs:
            bus.ack(sub, [m.ack_id for m in msgs])
        got.extend(msgs)
        return len(got) >= want

    wait_for(more, timeout=timeout, interval=0.2)
    more()
    return got


def _published(store) -> list[tuple[str, bool]]:
    from shared.pipeline.clean import load_manifest

    return [(r["run_id"], r["published"]) for r in load_manifest(store)[0]["runs"]]


def test_a_beam_run_publishes_the_summary_the_duckdb_engine_publishes_once(world, pubsub_emulator, tmp_path):
    """``python -m pipelines.beam.clean`` run directly (as a Dataflow launch runs it, no clean function
    around it) publishes on events-cleaned the message the DuckDB engine publishes for the same run (data and
    attributes), marks the run published in the manifest as ``run_clean`` does, and a second run with nothing
    new publishes nothing."""
    from shared.adapters.bus import Bus
    from shared.pipeline.clean import CleanConfig

    bus = Bus()
    tag = uuid.uuid4().hex[:8]
    subs = {e: _topic(bus, f"events-cleaned-{e}-{tag}") for e in ("duck", "beam")}
    duck, url = open_store(tmp_path / "duck"), str(tmp_path / "beam")
    beam = open_store(url)
    _raw(duck, world, 1)
    _raw(beam, world, 1)
    a = run_clean(duck, bus, CleanConfig(topic=f"events-cleaned-duck-{tag}"), now=NOW)
    args = [f"--cleaned_topic=events-cleaned-beam-{tag}", f"--pubsub_project={bus.project}"]
    b = beam_check.run_beam(url, now=NOW, publish=True, args=args)
    assert a["status"] == b["status"] == "committed" and a["run_id"] == b["run_id"]
    (ma,) = _drain(bus, subs["duck"], 1)
    (mb,) = _drain(bus, subs["beam"], 1)
    assert orjson.loads(mb.data) == orjson.loads(ma.data) and mb.attributes == ma.attributes == {"run_id": a["run_id"]}
    assert orjson.loads(mb.data)["rows_out"] == a["rows_out"] > 0
    assert _published(beam) == _published(duck) == [(a["run_id"], True)]
    assert not (diffs := beam_check.compare_stores(duck, beam)), "\n".join(diffs)
    # nothing new: no run, no second copy of the summary
    assert beam_check.run_beam(url, now=NOW + 60, publish=True, args=args) == {"status": "noop", "pending": 0}
    assert _drain(bus, subs["beam"], 0, timeout=3) == []
    bus.close()


def test_an_unpublished_beam_run_is_republished_once_by_the_next_run(world, pubsub_emulator, tmp_path, monkeypatch):
    """At least once, as the DuckDB engine: a publish that fails after the commit (the topic does not exist
    yet) fails the job but leaves the run committed and unpublished; the next run -- here through the clean
    function's engine setting, which hands the job its bus's project and topic and publishes nothing itself
    -- republishes it exactly once, and the one after that publishes nothing."""
    from shared.adapters.bus import Bus

    bus = Bus()
    topic = f"events-cleaned-late-{uuid.uuid4().hex[:8]}"
    url = str(tmp_path / "beam")
    beam = open_store(url)
    _raw(beam, world, 1)
    args = [f"--cleaned_topic={topic}", f"--pubsub_project={bus.project}"]
    with pytest.raises(RuntimeError, match="publish to .* failed"):
        beam_check.run_beam(url, now=NOW, publish=True, args=args)
    ((run_id, published),) = _published(beam)
    assert published is False
    sub = _topic(bus, topic)
    monkeypatch.setenv("DAIHUO_CLEAN_ENGINE", "beam")
    monkeypatch.setenv("DAIHUO_STORE", url)
    monkeypatch.setenv("DAIHUO_CLEANED_TOPIC", topic)
    assert engine.run(beam, bus, now=NOW + 60) == {"status": "noop", "pending": 0}
    (m,) = _drain(bus, sub, 1)
    from shared.layout import clean_report_key

    report = orjson.loads(beam.get(clean_report_key(run_id)))
    assert m.attributes == {"run_id": run_id} and orjson.loads(m.data)["rows_in"] == report["rows_in"] > 0
    assert _published(beam) == [(run_id, True)]
    assert engine.run(beam, bus, now=NOW + 120) == {"status": "noop", "pending": 0}
    assert _drain(bus, sub, 0, timeout=3) == []
    bus.close()
