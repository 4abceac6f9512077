"""shared.layout: every object-store key in one module, and the typed clean manifest with its
generation-checked commit (on the local store, which enforces preconditions across threads)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pydantic
import pytest

from shared import layout
from shared.adapters.storage import LocalStore, NotFound, PreconditionFailed
from shared.layout import Manifest, commit_manifest, load_manifest, update_manifest

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ("raw/", "quarantine/", "clean/", "catalog/", "analytics/", "reports/", "state/", "models/", "neighbours/")


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def test_keys_follow_the_layout():
    assert layout.clean_key("2026-11-27", "r-1") == "clean/date=2026-11-27/r-1.parquet"
    assert layout.quarantine_key("2026-11-27", "r-1") == "quarantine/date=2026-11-27/r-1.ndjson.gz"
    assert layout.raw_key("date=2026-11-27/hour=20", "ab") == "raw/date=2026-11-27/hour=20/ab.ndjson.gz"
    assert layout.replay_key("date=2026-11-27/hour=20", "ab") == "raw/date=2026-11-27/hour=20/replay-ab.ndjson.gz"
    assert (
        layout.ingest_quarantine_key("2026-11-27", 42, "u")
        == "quarantine/ingest/date=2026-11-27/0000000000042-u.ndjson.gz"
    )
    assert layout.analytics_key("stream", "r-1") == "analytics/stream/r-1.parquet"
    assert layout.dedupe_key("r-1") == "state/dedupe/r-1.parquet"
    assert layout.catalog_key("r-1") == "catalog/r-1.parquet"
    assert layout.clean_report_key("r-1") == "reports/clean/r-1.json"
    assert layout.charts_key("r-1") == "analytics/charts/r-1.json"
    assert layout.model_meta_key("v1") == "models/v1/meta.json" and layout.model_arrays_key("v1").endswith(".npz")
    assert layout.MODEL_META_RE.match(layout.model_meta_key("v1")).group(1) == "v1"
    assert not layout.MODEL_META_RE.match(layout.LATEST)
    assert layout.neighbours_arrays_key("n1") == "neighbours/n1/arrays.npz"
    assert layout.neighbours_meta_key("n1") == "neighbours/n1/meta.json"
    assert layout.NEIGHBOURS_LATEST == "neighbours/LATEST.json"
    assert not layout.MODEL_META_RE.match(layout.neighbours_meta_key("n1"))  # (not a model version)
    for key in (layout.clean_key("2026-11-27", "r"), layout.ingest_quarantine_key("2026-11-27", 1, "u")):
        assert layout.partition_date(key) == "2026-11-27"
    assert layout.partition_date(layout.catalog_key("r")) is None
    # the retention prefixes are date-partitioned prefixes of the layout; every personal prefix is one
    assert all(p + "/" in (layout.RAW, layout.CLEAN, layout.QUARANTINE) for p in layout.RETENTION_PREFIXES)
    assert all(p.startswith(PREFIXES) for p in layout.PERSONAL_PREFIXES)


def test_window_keys_are_the_partitions_a_window_reaches():
    keys = [layout.clean_key(d, "r") for d in ("2026-11-01", "2026-11-20", "2026-11-22", "2026-11-27")]
    keys.append("clean/undated.parquet")
    # newest 2026-11-27, 5-day window: partitions from 2026-11-21 (ceil(5) + 1 days before), undated always
    assert layout.window_keys(keys, 5.0) == sorted([keys[2], keys[3], keys[4]])
    assert layout.window_keys(keys, 4.5) == layout.window_keys(keys, 5.0)
    assert layout.window_keys(keys, 30.0, newest="2026-11-20") == sorted([keys[0], keys[1], keys[4]])
    assert layout.window_keys([], 30.0) == []


def _key_literals(path: Path):
    """String constants (not docstrings; f-strings by their first literal part) that start with a
    layout prefix."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            docs.add(id(node.values[0]))
            if str(node.values[0].value).startswith(PREFIXES):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value.startswith(PREFIXES) and " " not in node.value:
                yield node.lineno, node.value


def test_no_module_spells_a_key_but_the_layout():
    """Shipped code and the dev tools name keys through shared.layout, never by a literal."""
    offenders = []
    for base in ("shared", "functions", "devtools"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "shared/layout.py":
                continue
            offenders += [f"{rel}:{n}: {s}" for n, s in _key_literals(path)]
    assert not offenders, "\n".join(offenders)


def test_manifest_is_typed_and_keeps_what_it_does_not_know():
    m = Manifest.parse(
        b'{"clean_files": [{"key": "clean/a.parquet", "streams": ["s1"]}, "clean/b.parquet"],'
        b' "runs": [{"run_id": "r-1", "report": "reports/clean/r-1.json"}], "future_field": 3}'
    )
    assert [f.key for f in m.clean_files] == ["clean/a.parquet", "clean/b.parquet"]  # a bare key: no streams
    assert m.clean_files[1].streams == [] and m.runs[0].published is False and m.seq == 0
    # read like the JSON object it is
    assert m["clean_files"][0]["key"] == "clean/a.parquet" and m.get("nope", 5) == 5 and "done" in m
    assert dict(m)["future_field"] == 3
    back = Manifest.parse(m.to_json())
    assert back == m and "at" not in m.to_dict()["runs"][0]  # an unset ``at`` stays absent
    # an optional part is absent until written: not in it, not in its JSON; typed once present
    assert "host_files" not in m and m.get("host_files", []) == [] and "host_files" not in m.to_dict()
    h = Manifest.parse({"host_files": [{"key": "clean_host/date=2026-11-27/r-1.parquet", "streams": ["s1"]}]})
    assert "host_files" in h and h.host_files[0].streams == ["s1"] and "host_files" in h.to_dict()
    assert "charts" not in m and "charts" not in m.to_dict()  # the pre-rendered charts: absent until named
    c = Manifest.parse({"charts": layout.charts_key("r-1")})
    assert c["charts"] == "analytics/charts/r-1.json" and Manifest.parse(c.to_json()).charts == c.charts
    with pytest.raises(pydantic.ValidationError):
        Manifest.parse({"seq": "many"})
    with pytest.raises(pydantic.ValidationError):
        Manifest.parse({"runs": [{"report": "x"}]})  # a run without its id


def test_commit_is_generation_checked(store):
    m, gen = load_manifest(store)
    assert gen is None and m == Manifest()
    g1 = commit_manifest(store, Manifest(seq=1, done=["raw/a"]), None)
    with pytest.raises(PreconditionFailed):  # "only if absent", but it exists
        commit_manifest(store, Manifest(seq=9), None)
    g2 = commit_manifest(store, {"seq": 2, "done": ["raw/a", "raw/b"]}, g1)  # a dict is validated too
    with pytest.raises(PreconditionFailed):  # a stale generation: another run committed first
        commit_manifest(store, Manifest(seq=3), g1)
    m, gen = load_manifest(store)
    assert (m.seq, m.done, gen) == (2, ["raw/a", "raw/b"], g2)
    with pytest.raises(pydantic.ValidationError):  # never writes a malformed manifest
        commit_manifest(store, {"seq": "x"}, g2)
    assert load_manifest(store)[1] == g2


def test_update_retries_a_lost_race(store):
    commit_manifest(store, Manifest(), None)

    def add(i):
        for j in range(10):
            update_manifest(store, lambda m, k=f"raw/{i}-{j}": {**m, "done": m["done"] + [k]})

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(load_manifest(store)[0].done) == sorted(f"raw/{i}-{j}" for i in range(6) for j in range(10))


def test_update_needs_a_manifest(store):
    with pytest.raises(NotFound):
        update_manifest(store, lambda m: m)
