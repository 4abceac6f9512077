"""shared.adapters.storage: one suite run against the local filesystem, S3 (moto as a real server) and GCS
(the gcp-storage-emulator from conftest).

The GCS emulator ignores preconditions, so on GCS the compare-and-swap tests check instead that the
client SENDS ``ifGenerationMatch`` (recorded from the real HTTP traffic) and that the emulator still
does not enforce it (if a future emulator does, those tests fail and ask to be tightened).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.adapters import storage
from shared.adapters.storage import (
    ABSENT,
    GCSStore,
    InvalidKey,
    LocalStore,
    NotFound,
    PreconditionFailed,
    S3Store,
    StorageError,
    get_json,
    open_store,
    put_json,
    update_json,
)

BACKENDS = ["local", "s3", "gcs"]
UNICODE_KEY = "raw/date=2026-11-27/hour=20/批次.ndjson.gz"
GCS_NO_ENFORCEMENT = (
    "gcp-storage-emulator ignores ifGenerationMatch, so compare-and-swap cannot be proven on it; "
    "the test checks that the precondition is sent and that the emulator still ignores it"
)


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def moto_endpoint():
    """moto as a real HTTP server, every request handled under one lock.

    moto's put_object checks If-Match / If-None-Match and then stores, in two steps; on a threaded
    server two conditional writes can interleave between them (a real S3 does the check and the
    write atomically). Serialising requests gives moto S3's atomicity without changing what it checks.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    server = make_server("127.0.0.1", 0, serialised, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    s3 = _s3_client(endpoint)
    s3.create_bucket(Bucket="daihuo-test")
    yield endpoint
    server.shutdown()
    thread.join(5)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _s3_client(endpoint):
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Recorder:
    """Records every HTTP request a google-cloud-storage Client makes (a requests response hook)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()

    def hook(self, response, *args, **kwargs):
        req = response.request
        with self.lock:
            self.requests.append((req.method, req.url, parse_qs(urlsplit(req.url).query)))

    def clear(self):
        with self.lock:
            self.requests.clear()

    def uploads(self):
        with self.lock:
            return [r for r in self.requests if "/upload/" in r[1]]


@pytest.fixture(scope="session")
def gcs_recorded(gcs_emulator):
    """A Client talking to the real emulator through a requests.Session that records traffic."""
    import requests
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    rec = Recorder()
    session = requests.Session()
    session.hooks["response"].append(rec.hook)
    client = gcs.Client(project="daihuo-local", credentials=AnonymousCredentials(), _http=session)
    return client, rec


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def store(backend, request, tmp_path):
    """A fresh, empty store of the given backend (a unique prefix in the shared buckets)."""
    prefix = f"t/{request.node.name.split('[')[0]}-{uuid.uuid4().hex[:8]}"
    if backend == "local":
        return LocalStore(tmp_path / "store")
    if backend == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        return S3Store("daihuo-test", prefix, client=_s3_client(endpoint))
    client, rec = request.getfixturevalue("gcs_recorded")
    rec.clear()
    st = GCSStore("daihuo-default", prefix, client=client)
    st.recorder = rec  # the GCS-only tests read it
    return st


# ------------------------------------------------------------------------------------ the suite
def test_round_trip_binary_and_unicode_keys(store):
    blob = bytes(range(256)) * 3
    gen = store.put(UNICODE_KEY, blob, content_type="application/gzip")
    assert isinstance(gen, str) and gen
    assert store.get(UNICODE_KEY) == blob
    data, gen2 = store.get_with_generation(UNICODE_KEY)
    assert (data, gen2) == (blob, gen)
    assert store.generation(UNICODE_KEY) == gen
    gen3 = store.put(UNICODE_KEY, b"second")
    assert gen3 != gen and store.get(UNICODE_KEY) == b"second"
    store.put("odd chars/a b+c%20&d=e'f\"g.txt", b"")
    assert store.get("odd chars/a b+c%20&d=e'f\"g.txt") == b""


def test_not_found(store):
    with pytest.raises(NotFound):
        store.get("nope/missing.json")
    with pytest.raises(NotFound):
        store.get_with_generation("nope/missing.json")
    with pytest.raises(StorageError):  # NotFound is a StorageError (and a KeyError)
        store.get("nope/missing.json")
    assert store.generation("nope/missing.json") is None
    assert not store.exists("nope/missing.json")


def test_exists(store):
    assert not store.exists("a/b.txt")
    store.put("a/b.txt", b"x")
    assert store.exists("a/b.txt")
    assert not store.exists("a/b")  # no prefix match
    assert not store.exists("a/b.txt.gz")


def test_list_by_prefix_sorted_without_false_matches(store):
    keys = ["raw/a/1", "raw/a/b/3", "raw/a/b/2", "raw/ab/2", "raw/a.x", "raw/a-z", "raw/批次", "raw/z", "clean/x"]
    for k in reversed(keys):
        store.put(k, k.encode())
    assert list(store.list("raw/a/")) == ["raw/a/1", "raw/a/b/2", "raw/a/b/3"]
    assert list(store.list("raw/a/b/")) == ["raw/a/b/2", "raw/a/b/3"]
    assert list(store.list("raw/a")) == ["raw/a-z", "raw/a.x", "raw/a/1", "raw/a/b/2", "raw/a/b/3", "raw/ab/2"]
    assert list(store.list("raw/")) == sorted(k for k in keys if k.startswith("raw/"))
    assert list(store.list()) == sorted(keys)  # code point order == UTF-8 byte order: 批 after z
    assert list(store.list("nothing/")) == []
    assert list(store.list("raw/a/1")) == ["raw/a/1"]


def test_delete_is_idempotent(store):
    store.put("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x")
    store.delete("d/x")
    store.delete("d/never-existed")
    assert list(store.list("d/")) == []


def test_json_helpers(store):
    obj = {"version": "2026-11-27T20:00", "metrics": {"ndcg@10": 0.31}, "名": "值", "list": [1, 2.5, None]}
    gen = put_json(store, "models/LATEST.json", obj)
    assert get_json(store, "models/LATEST.json") == obj
    assert store.get_json("models/LATEST.json") == obj
    assert json.loads(store.get("models/LATEST.json")) == obj
    assert store.generation("models/LATEST.json") == gen
    with pytest.raises(NotFound):
        get_json(store, "models/none.json")


def test_invalid_keys_rejected_everywhere(store):
    for bad in [
        "",
        "/abs",
        "../up",
        "a/../../b",
        "a//b",
        "a/",
        "a/./b",
        "a\\b",
        "a\x00b",
        "a\nb",
        ".daihuo/gen/x",
        "x" * 1025,
    ]:
        with pytest.raises(InvalidKey):
            store.put(bad, b"x")
        with pytest.raises(InvalidKey):
            store.get(bad)
    with pytest.raises(InvalidKey):
        list(store.list("../"))


def test_store_prefix_isolates(store, backend, tmp_path):
    if backend == "local":
        other = LocalStore(store.root, prefix="env-b")
        mine = LocalStore(store.root, prefix="env-a")
    else:
        cls = type(store)
        kwargs = {"client": store.client}
        base = store.prefix.rstrip("/")
        mine, other = (
            cls(store.bucket_name, base + "/env-a", **kwargs),
            cls(store.bucket_name, base + "/env-b", **kwargs),
        )
    mine.put("state/x.json", b"a")
    other.put("state/x.json", b"b")
    assert mine.get("state/x.json") == b"a" and other.get("state/x.json") == b"b"
    assert list(mine.list()) == ["state/x.json"]


# ---------------------------------------------------------------------------- preconditions
def _gcs_sent(store, expected_values):
    """The ifGenerationMatch values the client sent on its uploads, compared to expected_values."""
    sent = [q.get("ifGenerationMatch", [None])[0] for _, _, q in store.recorder.uploads()]
    assert sent == expected_values, store.recorder.requests
    store.recorder.clear()


def test_create_only(store, backend):
    key = "models/LATEST.json"
    gen = store.put_if_unchanged(key, b"v1", None)
    assert store.get(key) == b"v1"
    if backend == "gcs":
        _gcs_sent(store, ["0"])
        # the emulator does not enforce it (if this fails, the emulator learned preconditions:
        # make GCS assert PreconditionFailed like the other backends)
        gen2 = store.put_if_unchanged(key, b"v2", None)
        _gcs_sent(store, ["0"])
        assert gen2 != gen and store.get(key) == b"v2", "gcp-storage-emulator now enforces ifGenerationMatch=0"
        store.put(key, b"v3", if_generation_match=0)
        _gcs_sent(store, ["0"])
        store.put(key, b"v4")  # unconditional: no precondition at all
        _gcs_sent(store, [None])
        pytest.skip(GCS_NO_ENFORCEMENT)
    with pytest.raises(PreconditionFailed):
        store.put_if_unchanged(key, b"v2", None)
    with pytest.raises(PreconditionFailed):
        store.put(key, b"v2", if_generation_match=ABSENT)
    assert store.get(key) == b"v1" and store.generation(key) == gen


def test_swap_with_stale_generation(store, backend):
    key = "state/clean-manifest.json"
    g1 = store.put(key, b"one")
    g2 = store.put_if_unchanged(key, b"two", g1)
    assert g2 != g1 and store.get(key) == b"two"
    if backend == "gcs":
        _gcs_sent(store, [None, g1])
        g3 = store.put_if_unchanged(key, b"three", g1)  # stale: real GCS answers 412
        _gcs_sent(store, [g1])
        assert store.get(key) == b"three" and g3 != g2, "gcp-storage-emulator now enforces ifGenerationMatch"
        pytest.skip(GCS_NO_ENFORCEMENT)
    with pytest.raises(PreconditionFailed):
        store.put_if_unchanged(key, b"stale", g1)
    assert store.get(key) == b"two"
    # swapping an object that was deleted meanwhile fails too; a foreign token never matches
    store.delete(key)
    with pytest.raises(PreconditionFailed):
        store.put_if_unchanged(key, b"gone", g2)
    g4 = store.put_if_unchanged(key, b"again", None)
    assert g4 not in (g1, g2)
    with pytest.raises(PreconditionFailed):
        store.put_if_unchanged(key, b"x", "not-a-generation")


def test_compare_and_swap_concurrent_writers(store, backend):
    """N threads read-modify-write one JSON counter, retrying on PreconditionFailed: no lost update."""
    key = "state/counter.json"
    if backend == "gcs":
        # Two writers that read the same generation both "win" on the emulator. Check that each
        # swap carried the generation it read, and that the emulator let the stale one through.
        gen0 = put_json(store, key, {"n": 0})
        data_a, gen_a = storage.get_json_with_generation(store, key)
        data_b, gen_b = storage.get_json_with_generation(store, key)
        assert gen_a == gen_b == gen0
        downloads = [q for m, u, q in store.recorder.requests if q.get("alt") == ["media"]]
        assert downloads and all(q.get("ifGenerationMatch") == [gen0] for q in downloads)  # reads are pinned
        store.recorder.clear()
        store.put_if_unchanged(key, json.dumps({"n": data_a["n"] + 1}).encode(), gen_a)
        store.put_if_unchanged(key, json.dumps({"n": data_b["n"] + 1}).encode(), gen_b)
        _gcs_sent(store, [gen0, gen0])
        assert get_json(store, key) == {"n": 1}, "gcp-storage-emulator now enforces ifGenerationMatch"
        pytest.skip(GCS_NO_ENFORCEMENT)

    threads, per_thread = 4, 12
    attempts = []  # every call of the update function: more calls than increments = lost races, retried

    def inc(doc):
        attempts.append(1)
        doc["n"] += 1
        return doc

    def work(_):
        for _ in range(per_thread):
            update_json(store, key, inc, default={"n": 0}, max_attempts=500, backoff=0.001)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    assert get_json(store, key) == {"n": threads * per_thread}
    print(f"{backend}: {threads * per_thread} increments took {len(attempts)} attempts")


def _process_worker(root, key, threads, per_thread, barrier):
    store = LocalStore(root)
    barrier.wait()

    def work():
        for _ in range(per_thread):
            update_json(store, key, lambda d: {"n": d["n"] + 1}, default={"n": 0}, max_attempts=1000, backoff=0.001)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_local_compare_and_swap_across_processes(tmp_path):
    """Two processes x 2 threads each, plus a raw-CAS check that someone actually lost a race."""
    ctx = multiprocessing.get_context("fork")
    root, key = str(tmp_path / "store"), "state/counter.json"
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_process_worker, args=(root, key, 2, 15, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert get_json(LocalStore(root), key) == {"n": 2 * 2 * 15}


def test_local_cas_detects_interleaving(tmp_path):
    """The exact race compare-and-swap exists for: two readers of one generation, one winner."""
    st = LocalStore(tmp_path)
    g = put_json(st, "c.json", {"n": 0})
    a, ga = storage.get_json_with_generation(st, "c.json")
    b, gb = storage.get_json_with_generation(st, "c.json")
    assert ga == gb == g
    st.put_if_unchanged("c.json", b'{"n":1}', ga)
    with pytest.raises(PreconditionFailed):
        st.put_if_unchanged("c.json", b'{"n":1}', gb)


# ------------------------------------------------------------------------------- local specifics
def test_local_hostile_keys_cannot_escape(tmp_path):
    root = tmp_path / "root"
    st = LocalStore(root)
    (tmp_path / "secret").write_bytes(b"s")
    for bad in [
        "../secret",
        "a/../../secret",
        "/etc/passwd",
        "..",
        ".",
        "a//b",
        "",
        "a/",
        "/",
        "\\..\\secret",
        ".daihuo/gen/x",
        ".daihuo-tmp-1",
    ]:
        with pytest.raises(InvalidKey) as info:
            st.put(bad, b"x")
        assert str(info.value)  # a clear message
        with pytest.raises(InvalidKey):
            st.get(bad)
        with pytest.raises(InvalidKey):
            st.delete(bad)
    assert (tmp_path / "secret").read_bytes() == b"s"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]  # nothing written outside or inside


def test_local_layout_and_atomic_files(tmp_path):
    st = LocalStore(tmp_path)
    st.put(UNICODE_KEY, b"data")
    assert (tmp_path / "raw" / "date=2026-11-27" / "hour=20" / "批次.ndjson.gz").read_bytes() == b"data"
    leftovers = [p for p in (tmp_path / "raw" / "date=2026-11-27" / "hour=20").iterdir() if p.name != "批次.ndjson.gz"]
    assert leftovers == []  # the temp file was renamed into place
    assert list(st.list()) == [UNICODE_KEY]  # .daihuo metadata is never listed


def test_local_generation_never_reused_after_delete(tmp_path):
    st = LocalStore(tmp_path)
    g1 = st.put("k", b"same")
    st.delete("k")
    g2 = st.put("k", b"same")
    assert g2 != g1
    with pytest.raises(PreconditionFailed):
        st.put_if_unchanged("k", b"x", g1)  # ABA: same bytes, but not the state g1 named


def test_local_file_vs_directory_conflict(tmp_path):
    st = LocalStore(tmp_path)
    st.put("a/b", b"1")
    with pytest.raises(StorageError):
        st.put("a", b"2")
    st.put("x", b"1")
    with pytest.raises(StorageError):
        st.put("x/y", b"2")
    assert not st.exists("a") and st.get("a/b") == b"1"
    st.delete("x")  # once "x" is gone, keys below it are fine (metadata never blocks them)
    st.put("x/y", b"3")
    st.put("x.lock/y", b"4")
    st.put("x.gen/y", b"5")
    assert list(st.list("x")) == ["x.gen/y", "x.lock/y", "x/y"]


def test_local_paths_stay_inside_root_property(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as hs

    st = LocalStore(tmp_path / "r")
    root = os.path.realpath(st.root)

    pieces = hs.sampled_from(["a", "b", ".", "..", "/", "\\", "\x00", " ", "批", ".daihuo", "~", ":"])

    @settings(max_examples=150, deadline=None)
    @given(hs.lists(pieces, max_size=10).map("".join))
    def check(key):
        try:
            storage.validate_key(key)
        except InvalidKey:
            return
        path = os.path.realpath(st._data_path(key))
        assert path.startswith(root + os.sep)

    check()


# ----------------------------------------------------------------------------------- open_store
def test_open_store_urls(tmp_path, monkeypatch):
    s = open_store("gs://bkt/env/dev/")
    assert isinstance(s, GCSStore) and (s.bucket_name, s.prefix, s.url) == ("bkt", "env/dev/", "gs://bkt/env/dev")
    s = open_store("gs://bkt")
    assert (s.bucket_name, s.prefix, s.url) == ("bkt", "", "gs://bkt")
    s = open_store("s3://bkt/p")
    assert isinstance(s, S3Store) and (s.bucket_name, s.prefix, s.url) == ("bkt", "p/", "s3://bkt/p")
    s = open_store(f"file://{tmp_path}/x")
    assert isinstance(s, LocalStore) and s.root == f"{tmp_path}/x" and s.url == f"file://{tmp_path}/x"
    assert open_store(f"file://localhost{tmp_path}").root == str(tmp_path)
    assert open_store(str(tmp_path / "plain")).root == str(tmp_path / "plain")
    assert open_store(tmp_path / "pathlike").root == str(tmp_path / "pathlike")
    monkeypatch.chdir(tmp_path)
    assert open_store("var/store").root == str(tmp_path / "var" / "store")
    assert open_store(f"file://{tmp_path}/sp%20ace").root == str(tmp_path / "sp ace")
    for bad in ["", "gs://", "s3:///p", "ftp://h/x", "file://otherhost/x", "file://rel", "gs://b/../x", "gs://b/p?x=1"]:
        with pytest.raises((ValueError, InvalidKey)):
            open_store(bad)
    assert isinstance(open_store("gs://b"), storage.ObjectStore)  # the Protocol is runtime-checkable


def test_open_store_s3_endpoint_from_env(moto_endpoint, monkeypatch):
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_endpoint)
    s = open_store("s3://daihuo-test/via-env")
    s.put("k.json", b"{}")
    assert _s3_client(moto_endpoint).get_object(Bucket="daihuo-test", Key="via-env/k.json")["Body"].read() == b"{}"
    assert storage.s3_endpoint_url() == moto_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://other:1")
    assert storage.s3_endpoint_url() == "http://other:1"  # AWS_ENDPOINT_URL wins over S3_ENDPOINT_URL


def test_open_store_gcs_uses_emulator_client(gcs_emulator):
    s = open_store("gs://daihuo-default/open-store-" + uuid.uuid4().hex[:6])
    s.put("a.txt", b"hi")
    assert s.get("a.txt") == b"hi" and list(s.list()) == ["a.txt"]
    assert s.client is storage.gcs_client()  # created lazily, shared by the process


def test_local_path_gives_a_readable_file(store, tmp_path):
    """``local_path``: a file with the object's bytes for engines that read files (DuckDB, pyarrow):
    the object's own file on the local backend, a download elsewhere; NotFound if absent."""
    store.put("clean/date=2026-11-27/r-1.parquet", b"first")
    cache = str(tmp_path / "dl")
    path = store.local_path("clean/date=2026-11-27/r-1.parquet", cache)
    assert path.endswith(".parquet") and open(path, "rb").read() == b"first"
    if isinstance(store, LocalStore):  # no copy: the store's own file
        assert not os.path.exists(cache) and path.startswith(store.root)
    else:
        assert os.path.dirname(path) == cache
    with pytest.raises(NotFound):
        store.local_path("clean/date=2026-11-27/r-missing.parquet", cache)
