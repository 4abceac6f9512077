"""The recommend function served by functions-framework over a local store: 503 before any model,
answers with titles/parts/reasons, filters, 400s naming the parameter, 405, and model swaps (a new
version, then a broken one) under concurrent load without a single 5xx."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests

from devtools import emulators
from devtools.simulator import SimConfig, simulate
from shared import identity
from shared.adapters.storage import open_store
from shared.reco.ranker import FEATURE_GROUP
from shared.serving.data import write_clean_from_frames
from shared.serving.registry import Registry, arrays_key, meta_key
from shared.serving.train import run_train
from tests.logdir import LOGS

# the platform's viewer-token key pair (shared/identity.py): recommend holds only the public key
PRIVATE, PUBLIC = identity.keygen()
OLD_PRIVATE, OLD_PUBLIC = identity.keygen()  # a second kid: rotation
VIEWER_KEYS = json.dumps({"k2": identity.b64url(PUBLIC), "k1": identity.b64url(OLD_PUBLIC)})
SIM = SimConfig(seed=11, n_streams=12, n_users=3000, n_items=500, mean_viewers_per_stream=400)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = simulate(SIM)
    root = tmp_path_factory.mktemp("reco-store")
    store = open_store(str(root))
    fn = emulators.start_function(
        "recommend",
        env={
            "DAIHUO_STORE": str(root),
            "DAIHUO_MODEL_REFRESH_S": "0.3",
            "THREADS": "8",
            "DAIHUO_VIEWER_KEYS": VIEWER_KEYS,
        },
        log_dir=LOGS,
    )
    url = f"http://{fn.host}/"
    # before any model: 503 with a clear body and Retry-After
    r = requests.get(url, params={"user_id": "u-000001"}, timeout=10)
    assert r.status_code == 503, r.text
    assert "no model" in r.json()["error"] and int(r.headers["Retry-After"]) >= 1
    write_clean_from_frames(store, sim.truth.expected_clean(), sim.truth.catalog_frame())
    res = run_train(store, None)
    assert res.promoted
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # picked up by the background refresh, no restart
        r = requests.get(url, params={"user_id": "u-000001"}, timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    yield {"url": url, "store": store, "sim": sim, "version": res.version, "fn": fn}
    fn.stop()


def token(user_id: str, **kw) -> str:
    return identity.mint(PRIVATE, "k2", user_id, **kw)


def get(world, token_for: str | None = "user", **params):
    """GET as the viewer app does: with a fresh token for ``user_id`` (``token_for=None``: none)."""
    headers = {}
    if token_for and params.get("user_id"):
        headers["Authorization"] = "Bearer " + token(str(params["user_id"]))
    return requests.get(world["url"], params=params, headers=headers, timeout=10)


def _known_user(world, min_items=3):
    m = Registry(world["store"]).load(world["version"]).model
    counts = np.diff(m.user_items_.indptr)
    return str(m.user_ids_[int(np.flatnonzero(counts >= min_items)[0])])


def test_answer_shape_with_reasons(world):
    user = _known_user(world)
    r = get(world, user_id=user, k=5)
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == world["version"] == r.headers["X-Model-Version"]
    assert body["strategy"] == "personal" and body["fallback"] is None and len(body["items"]) == 5
    assert body["timing_ms"]["total"] >= body["timing_ms"]["model"] > 0
    for it in body["items"]:
        assert it["title"] and set(it["parts"]) == {
            "buy_again",
            "history",
            "cf",
            "content",
            "context",
            "room",
            "popular",
            "taste",
        }
        assert it["reason"]["feature"] is None or it["parts"][FEATURE_GROUP[it["reason"]["feature"]]] > 0
        assert it["reason"]["kind"] and it["reason"]["text_zh"] and it["reason"]["text_en"]
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    # (buy-again answers with dates: tests/test_reco_ranker.py; this one-evening world has no rebuys)


def test_post_json_context_and_fallbacks(world):
    r = requests.post(world["url"], json={"context": ["sku-000001", "sku-000002"], "k": 3}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["strategy"] == "context" and body["fallback"]
    context_kinds = ("bought_together", "viewed_together", "similar_to", "related_to")
    assert all(
        it["reason"]["kind"] in (*context_kinds, "popular", "popular_in_stream", "trending") for it in body["items"]
    )
    assert all(it["reason"].get("anchor") in (None, "context") for it in body["items"])
    r = get(world, context="sku-000001,sku-000002", k=3)
    assert [i["item_id"] for i in r.json()["items"]] == [i["item_id"] for i in body["items"]]
    stream = world["sim"].truth.streams["stream_id"].iloc[0]
    r = get(world, user_id="u-nobody", stream_id=stream, k=4)
    assert r.json()["strategy"] == "stream"
    assert {it["reason"]["kind"] for it in r.json()["items"]} <= {"popular_in_stream", "popular", "trending"}
    texts = [it["reason"]["text_zh"] for it in r.json()["items"]]
    assert all(t.startswith(("本场", "本直播间", "主播正在", "全站热销第", "近 7 天", "同第")) for t in texts), texts
    assert len(set(texts)) == len(texts)


def test_filters(world):
    truth = world["sim"].truth
    stream = truth.streams["stream_id"].iloc[1]
    showcase = set(truth.showcase(stream))
    user = _known_user(world)
    r = get(world, user_id=user, stream_id=stream, showcase_only="true", k=100)
    ids = [i["item_id"] for i in r.json()["items"]]
    assert ids and set(ids) <= showcase
    cat = truth.item_category[truth.item_index[ids[0]]]
    r = get(world, user_id=user, category=cat, min_price=10, max_price=200, k=20)
    for it in r.json()["items"]:
        i = truth.item_index[it["item_id"]]
        assert truth.item_category[i] == cat and 10 <= truth.item_price[i] <= 200
    # exclude_purchased=true: a buyer never gets back what they bought (default: repeats allowed)
    ev = truth.expected_clean()
    buys = ev[ev["type"] == "purchase"].groupby("user_id")["item_id"].apply(set)
    buyer = buys.index[0]
    got = {i["item_id"] for i in get(world, user_id=buyer, k=100, exclude_purchased="true").json()["items"]}
    assert not (got & buys[buyer])


def test_diversity_cap_per_request(world):
    """max_per_category=N: at most N items of one category when the catalogue has others (the default,
    DAIHUO_RECOMMEND_MAX_PER_CATEGORY=0, is no cap: tuned on validation, docs/recommendations.md); no
    reason sentence twice in an answer."""
    truth = world["sim"].truth
    user = _known_user(world)

    def cats(body):
        return Counter(truth.item_category[truth.item_index[it["item_id"]]] for it in body["items"])

    for params in ({"user_id": user}, {"user_id": user, "stream_id": truth.streams["stream_id"].iloc[0]}, {}):
        q = {"stream_id": "s-x", "showcase_only": "false", "k": 10} | params
        plain = get(world, **q).json()
        texts = [it["reason"]["text_zh"] for it in plain["items"]]
        assert len(texts) == 10 and len(set(texts)) == len(texts), texts
        capped = get(world, max_per_category=3, **q).json()
        assert len(capped["items"]) == 10 and max(cats(capped).values()) <= 3, cats(capped)
        assert get(world, max_per_category=0, **q).json()["items"] == plain["items"]


def test_showcase_only_is_the_default_with_a_stream(world):
    """A room recommends what it sells: with a stream_id and no showcase_only, only the stream's
    showcase; showcase_only=false lifts it; an unknown stream is not restricted (the note says so),
    unless showcase_only=true asks for it (no items); without a stream the default does nothing."""
    truth = world["sim"].truth
    user = _known_user(world)
    for stream in truth.streams["stream_id"].iloc[:4]:
        showcase = set(truth.showcase(stream))
        body = get(world, user_id=user, stream_id=stream, k=100).json()
        ids = {i["item_id"] for i in body["items"]}
        assert ids and ids <= showcase and "note" not in body
    wide = get(world, user_id=user, stream_id=stream, showcase_only="false", k=100).json()
    assert {i["item_id"] for i in wide["items"]} - showcase  # the catalogue is larger than one showcase
    unknown = get(world, user_id=user, stream_id="s-unknown", k=5).json()
    assert len(unknown["items"]) == 5 and "not restricted" in unknown["note"]
    strict = get(world, user_id=user, stream_id="s-unknown", showcase_only="true", k=5).json()
    assert strict["items"] == [] and "no showcase known" in strict["note"]
    assert len(get(world, user_id=user, k=5).json()["items"]) == 5  # no stream: no showcase to apply


@pytest.mark.parametrize(
    "params,param",
    [
        ({"user_id": "u-1", "k": "0"}, "k"),
        ({"user_id": "u-1", "k": "101"}, "k"),
        ({"user_id": "u-1", "k": "ten"}, "k"),
        ({"user_id": "u-1", "min_price": "cheap"}, "min_price"),
        ({"user_id": "u-1", "min_price": "-1"}, "min_price"),
        ({"user_id": "u-1", "min_price": "50", "max_price": "10"}, "max_price"),
        ({"user_id": "u-1", "showcase_only": "maybe", "stream_id": "s"}, "showcase_only"),
        ({"user_id": "u-1", "showcase_only": "true"}, "stream_id"),
        ({"user_id": "u-1", "exclude_purchased": "2"}, "exclude_purchased"),
        ({"user_id": "u-1", "max_per_category": "-1"}, "max_per_category"),
        ({"user_id": "u-1", "max_per_category": "two"}, "max_per_category"),
        ({"user_id": "u-1", "colour": "red"}, "colour"),
        ({"k": "5"}, "user_id"),
        ({"user_id": "u" * 200}, "user_id"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(world, params, param):
    r = get(world, **params)
    assert r.status_code == 400 and r.json()["param"] == param and param in r.json()["error"]


def test_bad_post_bodies_and_methods(world):
    r = requests.post(world["url"], data=b"[1, 2]", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["param"] == "body"
    r = requests.post(world["url"], json={"user_id": "u-1", "context": [1, 2]}, timeout=10)
    assert r.status_code == 400 and r.json()["param"] == "context"
    r = requests.post(world["url"], json={"user_id": "u-1", "k": 2.5}, timeout=10)
    assert r.status_code == 400 and r.json()["param"] == "k"
    for method in ("PUT", "DELETE", "PATCH"):
        r = requests.request(method, world["url"], timeout=10)
        assert r.status_code == 405 and "GET" in r.headers["Allow"]


@pytest.mark.parametrize(
    "body, status",
    [
        (b'{"user_id": "u-1", "context": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400),  # was a RecursionError 500
        (b"[" * 200_000 + b"]" * 200_000, 413),  # over 16 KiB, by Content-Length
        (b'{"user_id": "u-1", "category": "' + b"x" * 20_000 + b'"}', 413),
        (b'{"user_id": "u-1", "k": 1e999}', 400),
        (b'{"user_id": "\xff"}', 400),
    ],
)
def test_hostile_post_bodies_are_4xx_before_parsing(world, body, status):
    r = requests.post(world["url"], data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == status and r.json()["param"] == "body", r.text
    # chunked (no Content-Length): the cap holds on what arrives
    r = requests.post(
        world["url"],
        data=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status, r.text


def test_beats_popularity_on_ground_truth(world):
    """Mean true affinity (simulator's latent tastes) of the top-10 vs popularity's top-10, both
    excluding what the viewer already touched, for 60 viewers with history."""
    truth, store = world["sim"].truth, world["store"]
    m = Registry(store).load(world["version"]).model
    ev = truth.expected_clean()
    pos = ev[ev["type"].isin(["product_click", "add_to_cart", "purchase"])]
    popular = pos["item_id"].value_counts().index.tolist()
    touched = ev[ev["item_id"].notna()].groupby("user_id")["item_id"].apply(set)
    counts = np.diff(m.user_items_.indptr)
    users = [str(u) for u in m.user_ids_[counts >= 2]][:60]
    ours, pop = [], []
    for u in users:
        items = [i["item_id"] for i in get(world, user_id=u, k=10).json()["items"]]
        base = [i for i in popular if i not in touched.get(u, set())][:10]
        ours.append(truth.affinity(u, items).mean())
        pop.append(truth.affinity(u, base).mean())
    assert len(users) == 60
    assert np.mean(ours) > np.mean(pop) + 0.2, (np.mean(ours), np.mean(pop))


def test_model_swaps_under_load_never_5xx(world):
    store, url = world["store"], world["url"]
    reg = Registry(store)
    users = [f"u-{i:06d}" for i in range(0, 3000, 7)]
    statuses, versions, stop = Counter(), Counter(), threading.Event()
    lock = threading.Lock()

    def hammer(n):
        s = requests.Session()
        i = n
        while not stop.is_set():
            u = users[i % len(users)]
            r = s.get(url, params={"user_id": u, "k": 10}, headers={"Authorization": "Bearer " + token(u)}, timeout=10)
            with lock:
                statuses[r.status_code] += 1
                versions[r.headers.get("X-Model-Version")] += 1
            i += 4

    def move(version):
        _, gen = reg.latest()
        reg.promote({"version": version}, gen)

    def wait_for(version, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if requests.get(url, params={"user_id": users[0]}, timeout=10).headers.get("X-Model-Version") == version:
                return True
            time.sleep(0.05)
        return False

    v1 = world["version"]
    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        # 1) a new good version (same arrays under a new name)
        meta = json.loads(store.get(meta_key(v1)))
        store.put(arrays_key("swap-v2"), store.get(arrays_key(v1)))
        store.put_json(meta_key("swap-v2"), {**meta, "version": "swap-v2"})
        move("swap-v2")
        assert wait_for("swap-v2")
        # 2) a broken version: truncated npz -> logged, the last good model keeps serving
        store.put(arrays_key("broken-v3"), store.get(arrays_key(v1))[:1000])
        store.put_json(meta_key("broken-v3"), {**meta, "version": "broken-v3"})
        move("broken-v3")
        time.sleep(1.5)
        # 3) a pointer to a version that does not exist at all
        move("ghost-v4")
        time.sleep(1.0)
        assert requests.get(url, params={"user_id": users[0]}, timeout=10).headers["X-Model-Version"] == "swap-v2"
        # 4) back to a good one
        move(v1)
        assert wait_for(v1)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert sum(statuses.values()) > 200
    assert set(statuses) == {200}, statuses
    assert set(versions) == {v1, "swap-v2"}, versions
    log = (LOGS / "recommend.log").read_text()
    assert "broken-v3" in log and "ghost-v4" in log and "keeping the last good model" in log


# ------------------------------------------------------------------------------ viewer identity
def _active_user(world) -> str:
    """A viewer with many item events in the simulated evening (independent of the model's internals)."""
    ev = world["sim"].truth.expected_clean()
    return str(ev[ev["item_id"].notna()]["user_id"].value_counts().index[0])


def _personal_kinds(body) -> set[str]:
    """Reasons from the viewer's own history (an anchor in it, a purchase, a touch, their taste)."""
    personal = ("buy_again", "buy_often", "in_history", "taste", "because_you")
    return {
        it["reason"]["kind"]
        for it in body["items"]
        if it["reason"].get("anchor") == "history" or it["reason"]["kind"] in personal
    }


def test_personal_only_with_a_valid_token(world):
    user = _active_user(world)
    ok = get(world, user_id=user, k=5).json()
    assert ok["personal"] is True and ok["identity"] == "verified" and ok["strategy"] == "personal"
    # (which reasons a personal answer carries is the model's business; a stranger's never reveal history)
    anon = get(world, token_for=None, user_id=user, k=5).json()
    assert anon["personal"] is False and anon["identity"] == "no token"
    assert anon["strategy"] == "global" and not _personal_kinds(anon)
    assert not any("你" in it["reason"]["text_zh"] for it in anon["items"]), anon
    # the same request with a stream: that stream's bestsellers, never the viewer's history
    stream = world["sim"].truth.streams["stream_id"].iloc[0]
    anon = get(world, token_for=None, user_id=user, stream_id=stream, k=5).json()
    assert anon["strategy"] == "stream" and not _personal_kinds(anon)
    anon = requests.post(world["url"], json={"user_id": user, "context": ["sku-000001"], "k": 3}, timeout=10).json()
    assert anon["strategy"] == "context" and anon["personal"] is False and not _personal_kinds(anon)


def _forged_tokens(user: str) -> dict[str, tuple[str, str]]:
    now = time.time()
    stranger_priv, _ = identity.keygen()
    good = token(user)
    h, p, sig = good.split(".")
    other = json.loads(identity.unb64url(p))
    other["sub"] = "u-000000"
    return {  # name -> (Authorization header, expected identity reason)
        "forged-key": ("Bearer " + identity.mint(stranger_priv, "k2", user), "bad signature"),
        "unknown-kid": ("Bearer " + identity.mint(PRIVATE, "k9", user), "unknown key id"),
        "payload-swapped": (
            "Bearer " + ".".join([h, identity.b64url(json.dumps(other).encode()), sig]),
            "bad signature",
        ),
        "alg-none": ("Bearer " + ".".join([identity.b64url(b'{"alg":"none","kid":"k2"}'), p, ""]), "malformed token"),
        "alg-hs256": (
            "Bearer " + ".".join([identity.b64url(b'{"alg":"HS256","kid":"k2"}'), p, sig]),
            "unsupported token algorithm",
        ),
        "expired": ("Bearer " + token(user, now=now - 700, ttl_s=600), "token expired"),
        "replayed-after-expiry": ("Bearer " + token(user, now=now - 631, ttl_s=600, jti="j-1"), "token expired"),
        "too-long-lived": ("Bearer " + token(user, ttl_s=86400), "lifetime over 900"),
        "future": ("Bearer " + token(user, now=now + 600), "issued in the future"),
        "wrong-audience": ("Bearer " + token(user, aud="daihuo-analytics"), "wrong audience"),
        "other-subject": ("Bearer " + token("u-000000"), "does not match user_id"),
        "garbage": ("Bearer " + "x" * 5000, "token too long"),
        "not-bearer": ("Basic " + good, "malformed Authorization"),
        "bad-base64": ("Bearer a.b$.c", "malformed token"),
    }


@pytest.mark.parametrize("case", list(_forged_tokens("u-x")))
def test_invalid_tokens_answer_as_a_stranger(world, case):
    user = _active_user(world)
    auth, reason = _forged_tokens(user)[case]
    r = requests.get(world["url"], params={"user_id": user, "k": 5}, headers={"Authorization": auth}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personal"] is False and reason in body["identity"], (case, body["identity"])
    assert body["strategy"] == "global" and not _personal_kinds(body) and body["user_id"] is None


def test_rotated_keys_both_verify(world):
    """Two kids configured (rotation): a token from the outgoing key still verifies until it expires."""
    user = _active_user(world)
    old = identity.mint(OLD_PRIVATE, "k1", user)
    body = requests.get(
        world["url"], params={"user_id": user}, headers={"Authorization": f"Bearer {old}"}, timeout=10
    ).json()
    assert body["personal"] is True
    tok = token(user, jti="once")  # a replay within the lifetime is the same viewer's own answer
    for _ in range(2):
        assert (
            requests.get(
                world["url"], params={"user_id": user}, headers={"Authorization": f"Bearer {tok}"}, timeout=10
            ).json()["personal"]
            is True
        )


def test_current_showcase_joins_the_live_room_updates():
    """The room's current showcase: the model's (training window) + items the live room added since,
    minus the ones it removed; the model's alone without live updates; None when neither knows it."""
    from types import SimpleNamespace

    from shared.serving.live import LiveState
    from shared.serving.recommend import Loaded, current_showcase

    ids = np.array(["a", "b", "c", "d"])
    served = SimpleNamespace(showcase={"s1": np.array([0, 1], dtype=np.int64)}, model=SimpleNamespace(item_ids_=ids))
    loaded = Loaded(served, {str(x): i for i, x in enumerate(ids)}, {}, 0.0)
    assert current_showcase(loaded, "s1", LiveState()).tolist() == [0, 1]
    assert current_showcase(loaded, "s2", LiveState()) is None
    room = SimpleNamespace(
        showcase={
            "c": {"status": "available"},
            "b": {"status": "removed"},
            "d": {"status": "sold_out"},
            "zz": {"status": "available"},  # unknown to the model: no score, not served
        }
    )
    assert current_showcase(loaded, "s1", LiveState(room=room)).tolist() == [0, 2, 3]
    assert current_showcase(loaded, "s2", LiveState(room=room)).tolist() == [2, 3]


def test_a_refreshed_model_has_its_viewer_index_built_before_the_swap(world):
    """A refresh (the loader thread's ``_prepare(warm=True)``) builds the viewer id index's hash table
    (1M viewers: 0.16 s on its first lookup), so the first personal request after a swap does not pay
    it; the first model of a cold instance leaves it to the first request (the cold start stays short)."""
    from shared.serving.recommend import _prepare

    reg = Registry(world["store"])
    cold = _prepare(reg.load(world["version"]))
    index = cold.served.model.base._user_index
    if not hasattr(index._engine, "is_mapping_populated"):
        pytest.skip("this pandas has no is_mapping_populated")
    assert not index._engine.is_mapping_populated
    warm = _prepare(reg.load(world["version"]), warm=True)
    assert warm.served.model.base._user_index._engine.is_mapping_populated
