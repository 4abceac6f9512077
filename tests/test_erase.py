"""Erasure end to end (docs/privacy.md): real pipeline output (raw -> clean -> quarantine -> dedupe ->
analytics), an ingest quarantine row, a trained model served by recommend over HTTP through
functions-framework; then a viewer asks to be forgotten:

* right after the request (before any rewrite) recommend answers them as a stranger, others still
  get personal results;
* ``python -m shared.pipeline.erase`` rewrites the store: afterwards NO file of the store (walked on
  disk, gz / parquet / npz / json decoded) contains the viewer's id or any of their event ids; the
  manifest names only existing objects; a clean run finds nothing new; a rerun changes nothing;
* recommend serves the retrained model and answers the viewer as a stranger;
* a crash after writing the copies (and one after moving the manifest) is finished by a rerun.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest
import requests

from devtools import emulators
from shared import erasure, identity, signing
from shared.adapters.storage import open_store
from shared.ingest import Ingestor
from shared.pipeline.clean import CleanConfig, load_manifest, run_clean
from shared.pipeline.erase import run_erase
from shared.runtime import InjectedCrash, faults
from shared.serving.registry import Registry
from shared.serving.train import run_train
from tests.data_fixtures import build_pipeline_store
from tests.logdir import LOGS

PRIVATE, PUBLIC = identity.keygen()
VIEWER_KEYS = json.dumps({"k1": identity.b64url(PUBLIC)})
_TOK = re.compile(r"[A-Za-z0-9._:@-]+")


def _texts(path: Path) -> list[str]:
    """Every string a stored file holds, decoded as its reader would (gzip, parquet incl. dictionaries
    and footer statistics, npz string arrays), plus the raw bytes as text (UTF-8 and UTF-32)."""
    data = path.read_bytes()
    out = [data.decode("utf-8", "replace"), data.decode("utf-32-le", "replace") if len(data) % 4 == 0 else ""]
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
        out.append(data.decode("utf-8", "replace"))
    if data[:4] == b"PAR1":
        pf = pq.ParquetFile(io.BytesIO(data))
        t = pf.read()
        for c in t.column_names:
            out.extend(str(v) for v in t[c].to_pylist())
        md = pf.metadata
        for rg in range(md.num_row_groups):
            for ci in range(md.num_columns):
                st = md.row_group(rg).column(ci).statistics
                if st is not None and st.has_min_max:
                    out += [str(st.min), str(st.max)]
    if data[:2] == b"PK":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for name in z.files:
                a = z[name]
                if a.dtype.kind in ("U", "S"):
                    out.extend(str(v) for v in a.ravel().tolist())
    return out


def holders(root: Path, needles: set[str]) -> dict[str, set[str]]:
    """file -> the needles (as whole tokens) it contains; the whole directory, hidden files included."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            hit = {tok for text in _texts(p) for tok in _TOK.findall(text) if tok in needles}
            if hit:
                found[str(p.relative_to(root))] = hit
    return found


def _wait(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("erase-store")
    built = build_pipeline_store(root, seed=5, n_streams=3, n_users=300)
    store = built.store
    ev = built.sim.truth.expected_clean()
    counts = ev["user_id"].value_counts()
    victim, other = str(counts.index[0]), str(counts.index[1])
    # an ingest quarantine row of the victim (a purchase with a negative price), through the real handler
    body = orjson.dumps(
        {
            "event_id": "late-bad-1",
            "type": "purchase",
            "ts": "2026-11-27T21:00:00Z",
            "platform": "douyin",
            "stream_id": "s-1",
            "user_id": victim,
            "item_id": "sku-x",
            "price": -5,
        }
    )
    secret = "s" * 32
    headers = signing.signed_headers("douyin", secret, body)
    ans = Ingestor(None, store, environ={"DAIHUO_SECRET_DOUYIN": secret}).handle("POST", headers, body)
    assert ans.status == 200 and ans.body["rejected"] == 1, ans.body
    assert list(store.list("quarantine/ingest/"))
    res = run_train(store, None)
    assert res.promoted
    fn = emulators.start_function(
        "recommend",
        env={
            "DAIHUO_STORE": str(root),
            "DAIHUO_MODEL_REFRESH_S": "0.3",
            "DAIHUO_ERASURE_REFRESH_S": "0.3",
            "DAIHUO_VIEWER_KEYS": VIEWER_KEYS,
        },
        log_dir=LOGS,
    )
    # every event id the victim ever sent (simulated rows, faults included, and the ingest reject)
    eids = {
        str(r["event_id"])
        for r in built.sim.events
        if isinstance(r, dict) and r.get("user_id") == victim and isinstance(r.get("event_id"), str)
    } | {"late-bad-1"}
    yield {
        "root": root,
        "store": store,
        "victim": victim,
        "other": other,
        "eids": eids,
        "url": f"http://{fn.host}/",
        "version": res.version,
    }
    fn.stop()


def ask(world, user):
    h = {"Authorization": "Bearer " + identity.mint(PRIVATE, "k1", user)}
    r = requests.get(world["url"], params={"user_id": user, "k": 5}, headers=h, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_erasure_end_to_end(world):
    root, store, victim, other = world["root"], world["store"], world["victim"], world["other"]
    needles = {victim} | world["eids"]
    before = holders(root, needles)
    assert any(k.startswith("raw/") for k in before) and any(k.startswith("clean/") for k in before)
    assert any(k.startswith("quarantine/ingest/") for k in before) and any(k.startswith("models/") for k in before)
    assert any(k.startswith("state/dedupe/") for k in before)
    b = _wait(lambda: (lambda x: x if x["personal"] else None)(ask(world, victim)))
    assert b and b["strategy"] == "personal"

    # 1. the request alone: a stranger at once (the model still holds them), the others unaffected
    erasure.request(store, [victim])
    b = _wait(lambda: (lambda x: x if not x["personal"] else None)(ask(world, victim)), timeout=10)
    assert b and b["identity"] == "erased" and b["strategy"] != "personal" and b["user_id"] is None
    assert b["model_version"] == world["version"]
    assert all(it["reason"]["kind"] in ("popular", "popular_in_stream", "trending") for it in b["items"])
    assert ask(world, other)["personal"] is True
    assert victim not in store.get(erasure.ERASURE_KEY).decode()

    # 2. the job, as an operator runs it
    out = subprocess.run(
        [sys.executable, "-m", "shared.pipeline.erase", "--store", str(root), "--user", victim],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=emulators.REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "erased" and summary["rows_removed"] > 0 and not summary["unhandled"]
    assert summary["clean_model"] != world["version"] and world["version"] in summary["models_deleted"]

    # nothing stored holds the viewer or their events any more
    assert holders(root, needles) == {}
    # the manifest is consistent: every key it names exists; the rewritten objects replaced the old
    m, _ = load_manifest(store)
    named = (
        m["done"] + [f["key"] for f in m["clean_files"]] + m["dedupe"] + m["catalog"] + list(m["analytics"].values())
    )
    assert all(store.exists(k) for k in named)
    assert any("~e" in k for k in m["done"]) and any("~e" in f["key"] for f in m["clean_files"])
    # the next clean run sees nothing new (renamed raw objects are in done); the others' data is intact
    assert run_clean(store, None, CleanConfig(threads=2))["status"] == "noop"
    entry = json.loads(store.get(erasure.ERASURE_KEY))["entries"][erasure.user_hash(victim)]
    assert entry["data_erased_at"] and entry["clean_model"] == summary["clean_model"]

    # 3. recommend serves the new model; the viewer is a stranger to it, the others are not
    b = _wait(lambda: (lambda x: x if x["model_version"] == summary["clean_model"] else None)(ask(world, victim)))
    assert b and b["strategy"] != "personal"
    assert all(it["reason"]["kind"] in ("popular", "popular_in_stream", "trending") for it in b["items"])
    assert ask(world, other)["personal"] is True
    users = set(Registry(store).load(summary["clean_model"]).model.user_ids_.tolist())
    assert victim not in users and other in users

    # 4. idempotent: a rerun finds nothing to do
    again = run_erase(store, mode="all", train=False)
    assert again["rows_removed"] == 0 and again["rewritten"] == {} and again["status"] == "erased"


@pytest.mark.parametrize("crash", ["write", "manifest"])
def test_crash_then_rerun_finishes(tmp_path, crash):
    built = build_pipeline_store(tmp_path / "s", seed=6, n_streams=2, n_users=120, runs=1)
    store = built.store
    victim = str(built.sim.truth.expected_clean()["user_id"].value_counts().index[0])
    with faults.installed(f"erase:{crash}"), pytest.raises(InjectedCrash):
        run_erase(store, users=[victim], train=False)
    m, _ = load_manifest(store)  # a reader in between: every named object still exists
    assert all(store.exists(k) for k in m["done"] + [f["key"] for f in m["clean_files"]] + m["dedupe"])
    out = run_erase(store, train=False)
    assert out["status"] == "incomplete"  # no model trained (train=False): the entry stays open
    eids = {str(r["event_id"]) for r in built.sim.events if isinstance(r, dict) and r.get("user_id") == victim}
    assert holders(tmp_path / "s", {victim} | eids) == {}
    m, _ = load_manifest(store)
    assert all(store.exists(k) for k in m["done"] + [f["key"] for f in m["clean_files"]] + m["dedupe"])
    assert len(list(store.list("raw/"))) == len(m["done"])  # no orphan copy, nothing lost
    assert run_clean(store, None, CleanConfig(threads=2))["status"] == "noop"


def test_recommend_refuses_until_a_clean_model(tmp_path):
    store = open_store(str(tmp_path))
    lst = erasure.ErasureList(store, refresh_s=0)
    assert not lst.refuses("u-1", "v1", "2026-11-28T00:00:00+00:00")
    erasure.request(store, ["u-1"], now=1_800_000_000)
    assert lst.refuses("u-1", "v1", "2026-11-28T00:00:00+00:00") and not lst.refuses("u-2", "v1", None)
    # data erased at t: a model built in the same second may predate it; one built later may not
    from shared.adapters.storage import update_json

    h = erasure.user_hash("u-1")
    update_json(
        store,
        erasure.ERASURE_KEY,
        lambda d: (d["entries"][h].update(data_erased_at=erasure.now_iso(1_800_000_100.5)), d)[1],
    )
    assert lst.refuses("u-1", "v1", erasure.now_iso(1_800_000_100))
    assert not lst.refuses("u-1", "v2", erasure.now_iso(1_800_000_101))
    update_json(store, erasure.ERASURE_KEY, lambda d: (d["entries"][h].update(clean_model="v3"), d)[1])
    assert not lst.refuses("u-1", "v3", None)
