"""The Pub/Sub Cloud Storage subscription as archive's replacement (infra/pubsub.tf, var.raw_writer):
objects written exactly as the subscription documents them -- text format: each message's data
followed by a newline, not compressed; names <filename_prefix><datetime>_<uuid><filename_suffix> with
the prefix, datetime format and suffix Terraform configures (shared.layout.RAW_SUBSCRIPTION_*) -- are
cleaned by the real clean to the same rows, quarantine and counters as archive's objects."""

from __future__ import annotations

import gzip
import os
import subprocess
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from devtools import beam_check
from devtools.simulator import simulate
from shared import layout
from shared.adapters.storage import open_store
from shared.pipeline.clean import load_manifest, read_clean, run_clean
from tests.test_clean import REC, cfg, quarantine_rows, raw_objects
from tests.test_infra import _load


@pytest.fixture(scope="module")
def sim():
    return simulate(seed=5, n_streams=2, n_users=200, n_items=60, faults="default")


def _lines(sim) -> list[bytes]:
    return [ln for _, body in raw_objects(sim, n_parts=1) for ln in gzip.decompress(body).split(b"\n") if ln]


def _messages(lines: list[bytes], per_message: int = 40) -> list[bytes]:
    """Pub/Sub message data as ingest published it until 2026-12-03 (one message per (type, stream_id)
    group of a request; now one per stream, shared/ingest.py): NDJSON without a trailing newline. The
    writer and clean do not depend on the grouping."""
    groups: dict[tuple, list[bytes]] = defaultdict(list)
    for ln in lines:
        try:
            obj = orjson.loads(ln)
            key = (obj.get("type"), obj.get("stream_id")) if isinstance(obj, dict) else ("?", None)
        except orjson.JSONDecodeError:
            key = ("?", None)
        groups[str(key)].append(ln)
    out = []
    for _, g in sorted(groups.items()):
        out += [b"\n".join(g[i : i + per_message]) for i in range(0, len(g), per_message)]
    return out


def _datetime(fmt: str, t: datetime) -> str:
    """The subscription's filename_datetime_format rendered (YYYY MM DD hh mm ss, the rest literal)."""
    for token, value in (
        ("YYYY", f"{t:%Y}"),
        ("MM", f"{t:%m}"),
        ("DD", f"{t:%d}"),
        ("hh", f"{t:%H}"),
        ("mm", f"{t:%M}"),
        ("ss", f"{t:%S}"),
    ):
        fmt = fmt.replace(token, value)
    return fmt


def subscription_objects(messages: list[bytes], start: datetime, per_object: int = 7) -> list[tuple[str, bytes]]:
    """What the Cloud Storage subscription writes: a batch of messages per object (by max_duration /
    max_bytes), text format (data + "\\n" per message, no compression), named
    <prefix><datetime>_<uuid><suffix>."""
    objs = []
    for n, i in enumerate(range(0, len(messages), per_object)):
        t = start + timedelta(minutes=5 * n)
        name = (
            layout.RAW_SUBSCRIPTION_PREFIX
            + _datetime(layout.RAW_SUBSCRIPTION_DATETIME_FORMAT, t)
            + "_"
            + str(uuid.uuid4())
            + layout.RAW_SUBSCRIPTION_SUFFIX
        )
        objs.append((name, b"".join(m + b"\n" for m in messages[i : i + per_object])))
    return objs


def _outcome(store):
    manifest = load_manifest(store)[0]
    # every column but run_id (a hash of the run's raw object names)
    rows = [{k: v for k, v in r.items() if k != "run_id"} for r in read_clean(store, manifest).to_pylist()]
    clean = sorted(rows, key=lambda r: r["event_id"])
    q = sorted(
        (r["reason"], r["field"], r["event_id"] or "", r["raw"].rstrip("\n")) for r in quarantine_rows(store, manifest)
    )
    return clean, q


def test_subscription_names_match_terraform():
    csc = _load()["resource"]["google_pubsub_subscription"]["raw_writer"]["cloud_storage_config"][0]
    assert csc["filename_prefix"] == layout.RAW_SUBSCRIPTION_PREFIX
    assert csc["filename_suffix"] == layout.RAW_SUBSCRIPTION_SUFFIX
    assert csc["filename_datetime_format"] == layout.RAW_SUBSCRIPTION_DATETIME_FORMAT
    assert "avro_config" not in csc  # text format: what clean reads


def test_subscription_objects_clean_like_archive(sim, tmp_path):
    lines = _lines(sim)
    archive = open_store(tmp_path / "archive")
    for k, b in raw_objects(sim):
        archive.put(k, b)
    s_arch = run_clean(archive, None, cfg())

    sub = open_store(tmp_path / "sub")
    start = datetime.fromisoformat(REC.replace("Z", "+00:00")).astimezone(UTC)
    objs = subscription_objects(_messages(lines), start)
    assert len(objs) > 3 and all(b[:2] != b"\x1f\x8b" for _, b in objs)
    for k, b in objs:
        assert layout.is_raw_object(k) and layout.partition_date(k) == "2026-11-29", k
        sub.put(k, b)
    s_sub = run_clean(sub, None, cfg())
    assert s_sub["status"] == s_arch["status"] == "committed"
    assert sorted(s_sub["raw_objects"]) == sorted(k for k, _ in objs)
    for counter in ("rows_in", "rows_out", "dropped", "duplicates", "catalog_rows", "late", "ts_corrected"):
        assert s_sub[counter] == s_arch[counter], counter
    assert s_sub["rows_in"] == len(lines)
    assert _outcome(sub) == _outcome(archive)
    assert run_clean(sub, None, cfg())["status"] == "noop"  # listed once, then done


def test_mixed_writers_and_redelivery(sim, tmp_path):
    """archive's objects, then the subscription's (the switch-over), one message delivered twice (at
    least once): every event once."""
    lines = _lines(sim)
    half = len(lines) // 2
    store = open_store(tmp_path / "mixed")
    store.put("raw/date=2026-11-27/hour=00/a.ndjson.gz", gzip.compress(b"\n".join(lines[:half]) + b"\n"))
    assert run_clean(store, None, cfg())["status"] == "committed"
    msgs = _messages(lines[half:])
    objs = subscription_objects(msgs + msgs[:3], datetime(2026, 11, 29, 0, 5, tzinfo=UTC))
    for k, b in objs:
        store.put(k, b)
    s = run_clean(store, None, cfg())
    assert s["status"] == "committed" and len(s["raw_objects"]) == len(objs)
    ref = open_store(tmp_path / "ref")
    for k, b in raw_objects(sim):
        ref.put(k, b)
    run_clean(ref, None, cfg())
    assert _outcome(store)[0] == _outcome(ref)[0]  # the redelivered messages' events once


def test_raw_listing_accepts_only_raw_suffixes():
    assert layout.is_raw_object("raw/pubsub/2026-12-02/19_37_05Z_0f.ndjson")
    assert layout.is_raw_object("raw/date=2026-12-02/hour=19/ab.ndjson.gz")
    for k in ("raw/pubsub/2026-12-02/x.avro", "raw/pubsub/2026-12-02/x.ndjson.tmp", "clean/date=2026-12-02/x.ndjson"):
        assert not layout.is_raw_object(k)
    assert layout.partition_date("raw/pubsub/2026-12-02/19_37_05Z_0f.ndjson") == "2026-12-02"
    assert layout.partition_date("quarantine/pubsub/2026-12-02/x") is None


@pytest.mark.skipif(beam_check.beam_python() is None, reason="the Beam environment is absent: run `make venv-beam`")
def test_beam_engine_from_the_flex_template_context_cleans_subscription_objects(sim, tmp_path, monkeypatch):
    """The Beam clean, started as the Flex Template launcher would (the generated main.py, --name=value,
    from the build context alone: only the files the image ships on PYTHONPATH), over the
    subscription's objects: the same store as the DuckDB engine's, object by object."""
    from devtools import flex_template as ft

    monkeypatch.setenv("DAIHUO_CLEAN_UNKNOWN_ITEMS", "quarantine")
    monkeypatch.setenv("DAIHUO_CLEAN_THREADS", "2")
    objs = subscription_objects(_messages(_lines(sim)), datetime(2026, 11, 29, 0, 5, tzinfo=UTC))
    duck, beam = open_store(tmp_path / "duck"), open_store(tmp_path / "beam")
    for k, b in objs:
        duck.put(k, b)
        beam.put(k, b)
    now = datetime(2026, 11, 29, 1, tzinfo=UTC).timestamp()
    a = run_clean(duck, now=now)
    ctx = Path(ft.build(ft.TEMPLATES[0], tmp_path / "dataflow")["context"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ctx)}
    out = subprocess.run(
        [
            str(beam_check.beam_python()),
            "-B",
            str(ctx / "main.py"),
            f"--store={tmp_path / 'beam'}",
            f"--now={now!r}",
            "--publish=false",
        ],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    b = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert a["status"] == b["status"] == "committed" and a["run_id"] == b["run_id"]
    assert not (diffs := beam_check.compare_stores(duck, beam)), "\n".join(diffs)
