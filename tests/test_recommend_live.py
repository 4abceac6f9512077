"""recommend with the live state (shared/serving/live.py) against Google's Bigtable emulator: events
written by the live writer change the answer served by functions-framework over HTTP (the item on
stage first with its reason, a sold-out item gone, "selling fast" with the real count, "you just
looked at it" for a verified viewer's click); Bigtable stopped or a tiny deadline -> 200 with the
batch answer and ``live.used`` false."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import requests

from devtools import emulators
from devtools.simulator import SimConfig, simulate
from shared import identity
from shared.adapters.storage import open_store
from shared.live import schema
from shared.live.apply import LiveWriter
from shared.live.reader import LiveReader
from shared.serving.data import write_clean_from_frames
from shared.serving.live import LiveSource, LiveState
from shared.serving.recommend import ModelHolder, Recommender
from shared.serving.registry import Registry
from shared.serving.train import run_train
from tests.live_helpers import ev, fresh_config, ndjson
from tests.logdir import LOGS
from tests.waiting import wait_for

PRIVATE, PUBLIC = identity.keygen()
VIEWER_KEYS = json.dumps({"k1": identity.b64url(PUBLIC)})
SIM = SimConfig(seed=5, n_streams=6, n_users=1200, n_items=150, mean_viewers_per_stream=250)


@pytest.fixture(scope="module")
def model_store(tmp_path_factory):
    sim = simulate(SIM)
    root = tmp_path_factory.mktemp("reco-live-store")
    store = open_store(str(root))
    write_clean_from_frames(store, sim.truth.expected_clean(), sim.truth.catalog_frame())
    res = run_train(store, None)
    assert res.promoted
    served = Registry(store).load(res.version)
    return {"root": root, "store": store, "served": served}


def _env(cfg, root, host: str, **extra) -> dict[str, str]:
    return {
        "DAIHUO_STORE": str(root),
        "BIGTABLE_EMULATOR_HOST": host,
        "DAIHUO_BIGTABLE_PROJECT": cfg.project,
        "DAIHUO_BIGTABLE_INSTANCE": cfg.instance,
        "DAIHUO_LIVE_TABLE": cfg.table,
        "DAIHUO_VIEWER_KEYS": VIEWER_KEYS,
        "DAIHUO_RECOMMEND_LIVE": "on",
        "DAIHUO_RECOMMEND_LIVE_ROOM_CACHE_S": "0",  # a room read per request: each event shows at once
        **extra,
    }


def _wait_model(url: str, params: dict) -> requests.Response:
    def ready():
        r = requests.get(url, params=params, timeout=10)
        return r if r.status_code == 200 else None

    assert wait_for(ready, 60), "recommend did not load the model"

    def live_open():  # the instance opens its Bigtable client in the background (~2 s of imports)
        r = requests.get(url, params=params, timeout=10)
        return r if r.json()["live"]["used"] else None

    r = wait_for(live_open, 60)
    assert r, "recommend did not open its live reader"
    return r


@pytest.fixture(scope="module")
def served(bigtable_emulator, model_store):
    cfg = fresh_config()
    table = schema.open_table(cfg)
    # a generous deadline: this module tests behaviour on a busy shared machine, not latency
    env = _env(cfg, model_store["root"], bigtable_emulator.host, DAIHUO_RECOMMEND_LIVE_TIMEOUT_S="2")
    fn = emulators.start_function("recommend", env=env, log_dir=LOGS)
    url = f"http://{fn.host}/"
    _wait_model(url, {"stream_id": "nothing-live-here"})
    yield {"url": url, "cfg": cfg, "writer": LiveWriter(table, cfg), **model_store}
    fn.stop()
    schema.drop_table(cfg)


def _send(writer: LiveWriter, events: list[dict]) -> None:
    res = writer.apply_message(ndjson(events), {"type": events[0]["type"]}, message_id=uuid.uuid4().hex)
    assert not res.rejected, res.rejected


def _stream_with_showcase(served_model, min_items: int = 6) -> tuple[str, list[str]]:
    ids = served_model.model.item_ids_
    for s, idx in sorted(served_model.showcase.items()):
        if min_items <= len(idx) <= 90:
            return s, [str(x) for x in ids[idx]]
    raise AssertionError("no stream with a showcase of 6..90 items")


def _get(url, user: str | None = None, **params) -> dict:
    headers = {"Authorization": "Bearer " + identity.mint(PRIVATE, "k1", user)} if user else {}
    if user:
        params["user_id"] = user
    r = requests.get(url, params=params, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_live_events_change_the_answer_over_http(served):
    url, writer = served["url"], served["writer"]
    stream, showcase = _stream_with_showcase(served["served"])
    now = time.time()
    before = _get(url, stream_id=stream, k=5)
    assert before["live"]["used"] is True and before["live"]["room"] == "used"
    assert before["live"]["on_stage"] is None and before["live"]["sold_out_removed"] == []
    assert before["live"]["viewer"] == "anonymous"  # no verified viewer: no session read
    top = [it["item_id"] for it in before["items"]]
    assert not any(it["reason"]["kind"] in ("on_stage", "selling_fast", "just_viewed") for it in before["items"])

    # the host presents an item the batch answer did not rank: it comes first, with its reason
    stage = next(i for i in reversed(showcase) if i not in top)
    _send(writer, [ev("slot_start", stream, now - 30, slot_id="slot-a", item_id=stage)])
    after = _get(url, stream_id=stream, k=5)
    first = after["items"][0]
    assert first["item_id"] == stage and after["live"]["on_stage"] == stage
    assert first["reason"]["kind"] == "on_stage" and first["reason"]["slot_id"] == "slot-a"
    assert (
        first["reason"]["text_zh"] == "主播正在讲解" and first["reason"]["text_en"] == "the host is presenting it now"
    )
    assert first["reason"]["model_reason"]["kind"] and first["reason"]["model_reason"]["text_en"]
    assert len(after["items"]) == 5 and after["live"]["as_of"]

    # a sold-out item disappears
    gone = top[0] if top[0] != stage else top[1]
    _send(writer, [ev("showcase_update", stream, now - 20, item_id=gone, change="sold_out")])
    after = _get(url, stream_id=stream, k=5)
    assert gone not in [it["item_id"] for it in after["items"]]
    assert after["live"]["sold_out_removed"] == [gone]
    everything = _get(url, stream_id=stream, showcase_only="true", k=100)
    assert gone not in [it["item_id"] for it in everything["items"]]
    assert {it["item_id"] for it in everything["items"]} == set(showcase) - {gone}

    # selling fast: three orders of one item in the last minutes -> its crowd reason names the real count
    hot = next(i for i in showcase if i not in (stage, gone))
    _send(
        writer,
        [ev("purchase", stream, now - 40 + k, user=f"buyer{k}", item=hot, price=9.9, quantity=1) for k in range(3)],
    )
    answer = _get(url, stream_id=stream, showcase_only="true", k=100)
    it = next(x for x in answer["items"] if x["item_id"] == hot)
    assert it["reason"]["kind"] == "selling_fast" and it["reason"]["orders"] == 3
    assert it["reason"]["text_zh"] == "本场热卖 · 近5分钟 3 单"
    assert it["reason"]["text_en"] == "selling fast in this room: 3 orders in the last 5 minutes"
    assert it["reason"]["model_reason"]["kind"] in ("popular", "popular_in_stream")
    assert answer["live"]["last_event_at"] is not None  # the latest viewer event's time

    # a verified viewer's click in this session: "you just looked at it" (and only for that viewer)
    looked = next(i for i in showcase if i not in (stage, gone, hot))
    _send(writer, [ev("product_click", stream, now - 5, user="viewer-1", item=looked)])
    mine = _get(url, user="viewer-1", stream_id=stream, showcase_only="true", k=100)
    assert mine["personal"] is True and mine["live"]["viewer"] == "used" and mine["live"]["session_items"] == 1
    it = next(x for x in mine["items"] if x["item_id"] == looked)
    assert it["reason"]["kind"] == "just_viewed" and it["reason"]["action"] == "product_click"
    assert (it["reason"]["text_zh"], it["reason"]["text_en"]) == ("你刚看过", "you just looked at it")
    assert mine["items"][0]["item_id"] == stage  # the stage still comes first
    other = _get(url, user="viewer-2", stream_id=stream, showcase_only="true", k=100)
    assert next(x for x in other["items"] if x["item_id"] == looked)["reason"]["kind"] != "just_viewed"
    # an unverified user_id is answered as a stranger: nobody else's session is read
    r = requests.get(url, params={"user_id": "viewer-1", "stream_id": stream, "showcase_only": "true", "k": 100})
    assert r.status_code == 200 and r.json()["live"]["viewer"] == "anonymous"
    assert all(x["reason"]["kind"] != "just_viewed" for x in r.json()["items"])

    # the slot ends: nothing is pinned any more
    _send(writer, [ev("slot_end", stream, now - 1, slot_id="slot-a", item_id=stage)])
    after = _get(url, stream_id=stream, k=5)
    assert after["live"]["on_stage"] is None and all(x["reason"]["kind"] != "on_stage" for x in after["items"])


def test_bigtable_stopped_answers_200_from_the_batch_model(model_store):
    own = emulators.start_bigtable(log_dir=LOGS)  # this test's emulator: it is stopped mid-test
    try:
        cfg = fresh_config_on(own.host)
        fn = emulators.start_function(
            "recommend",
            env=_env(cfg, model_store["root"], own.host, DAIHUO_RECOMMEND_LIVE_TIMEOUT_S="0.5"),
            log_dir=LOGS,
        )
        try:
            url = f"http://{fn.host}/"
            stream, showcase = _stream_with_showcase(model_store["served"])
            _wait_model(url, {"stream_id": stream})
            writer = LiveWriter(open_table_on(own.host, cfg), cfg)
            _send(writer, [ev("slot_start", stream, time.time() - 10, slot_id="s1", item_id=showcase[-1])])
            live = _get(url, stream_id=stream, k=5)
            assert live["live"]["used"] is True, live["live"]
            assert live["items"][0]["item_id"] == showcase[-1]
            own.stop()
            batch = batch_answer(model_store, stream_id=stream, k=5)
            end = time.monotonic() + 30
            while time.monotonic() < end:  # failing reads, then the back-off: every answer a 200, batch
                t = time.perf_counter()
                down = _get(url, stream_id=stream, k=5)
                assert time.perf_counter() - t < 10
                assert down["live"]["used"] is False and down["live"]["room"] == "unavailable"
                assert down["live"]["reason"]
                assert [i["item_id"] for i in down["items"]] == [i["item_id"] for i in batch["items"]]
                assert all(i["reason"]["kind"] != "on_stage" for i in down["items"])
                if "retrying in" in down["live"]["reason"]:
                    break
            assert "retrying in" in down["live"]["reason"]  # after 3 failures: no read attempted
        finally:
            fn.stop()
    finally:
        own.stop()


def fresh_config_on(host: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGTABLE_EMULATOR_HOST", host)
        return fresh_config()


def open_table_on(host: str, cfg):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIGTABLE_EMULATOR_HOST", host)
        return schema.open_table(cfg)


def batch_answer(model_store, **params) -> dict:
    rec = Recommender(ModelHolder(model_store["store"], refresh_s=3600), LiveSource(enabled=False))
    try:
        a = rec.handle("GET", params)
        assert a.status == 200
        return a.json
    finally:
        rec.holder.stop()


def test_slow_bigtable_within_the_deadline_gives_the_batch_answer_and_says_so(bigtable_emulator, model_store):
    """A Bigtable that accepts connections and never answers (a listening socket nobody serves):
    every answer is a 200 from the batch model within the deadline, ``live.used`` false; after three
    failures in a row no read is attempted for the back-off."""
    stream, _ = _stream_with_showcase(model_store["served"])
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    try:
        cfg = fresh_config()  # on the real emulator; the reader below talks to the black hole
        table = open_table_on(f"127.0.0.1:{hole.getsockname()[1]}", cfg)
        source = LiveSource(LiveReader(table, cfg, timeout_s=0.05), enabled=True, timeout_s=0.05, backoff_s=60)
        rec = Recommender(ModelHolder(model_store["store"], refresh_s=3600), source)
        source._warm.result(timeout=60)  # the client is open: what follows is the deadline, not the start
        batch = batch_answer(model_store, stream_id=stream, k=5)
        assert batch["live"] == {
            "used": False,
            "room": "not_read",
            "viewer": "not_read",
            "reason": "live state disabled (DAIHUO_RECOMMEND_LIVE)",
            "ms": 0.0,
        }
        rec.handle("GET", {"stream_id": stream, "k": "5"})  # the model is loaded
        bodies, took = [], []
        end = time.monotonic() + 30
        while time.monotonic() < end:  # until the failed reads (each after its 1 s read timeout) trip the back-off
            t = time.perf_counter()
            a = rec.handle("GET", {"stream_id": stream, "k": "5"})
            took.append(time.perf_counter() - t)
            assert a.status == 200
            bodies.append(a.json)
            if "retrying in" in a.json["live"]["reason"]:
                break
        for body in bodies:
            assert body["live"]["used"] is False and body["live"]["room"] == "unavailable"
            assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in batch["items"]]
        assert "room: no answer within 50 ms" in bodies[0]["live"]["reason"]
        assert "retrying in" in bodies[-1]["live"]["reason"]  # the back-off: no read, no wait
        assert max(took) < 1.0  # the deadline bounds every wait (generous: a loaded machine)
        rec.holder.stop()
        source.close()
    finally:
        hole.close()
        schema.drop_table(cfg)


def test_room_counts_merge_the_batch_counts_and_the_live_windows():
    class Room:
        trending = [
            {"item_id": "a", "window": {"orders": 2, "clicks": 5, "impressions": 9}, "previous": {"orders": 1}},
            {"item_id": "b", "window": {"orders": 0, "clicks": 1, "impressions": 0}, "previous": {"orders": 0}},
        ]
        on_stage = {"item_id": "b", "slot_id": "s"}
        sold_out = ["c"]

    st = LiveState(room=Room(), room_status="used").derive()
    assert st.orders_5m == {"a": 2} and st.on_stage["item_id"] == "b" and st.sold_out == ["c"]
    rc = st.room_counts({"purchase": (["a", "z"], [4.0, 1.0]), "product_click": ([], [])})
    assert rc["purchase@10m"] == {"a": 3.0} and rc["product_click@5m"] == {"a": 5.0, "b": 1.0}
    assert rc["product_impression@5m"] == {"a": 9.0}
    assert rc["purchase"] == (["a", "z", "a"], [4.0, 1.0, 3.0])  # summed by the ranker
    assert rc["product_click"] == (["a", "b"], [5.0, 1.0])
    assert LiveState().room_counts(None) is None


def test_the_room_cache_reuses_a_read_and_refreshes_it_in_the_background(bigtable_emulator):
    cfg = fresh_config()
    table = schema.open_table(cfg)
    writer = LiveWriter(table, cfg)
    try:
        source = LiveSource(LiveReader(table, cfg, timeout_s=5), enabled=True, timeout_s=5, room_cache_s=0.5)
        source.warm()
        source._warm.result(timeout=60)
        _send(writer, [ev("slot_start", "cache-s", time.time() - 5, slot_id="a", item_id="i-a")])
        first = source.read("cache-s", None)
        assert first.room_status == "used" and not first.room_cached and first.on_stage["item_id"] == "i-a"
        _send(writer, [ev("slot_start", "cache-s", time.time() - 1, slot_id="b", item_id="i-b")])
        again = source.read("cache-s", None)  # within the TTL: the same read, no Bigtable call
        assert again.room_cached and again.room is first.room and again.on_stage["item_id"] == "i-a"
        assert again.to_answer()["room_cached"] is True and again.to_answer()["as_of"] == first.room.as_of
        time.sleep(0.6)
        stale = source.read("cache-s", None)  # past the TTL: still answered at once, refreshed behind
        assert stale.room_cached and stale.on_stage["item_id"] == "i-a"

        def fresh():
            st = source.read("cache-s", None)
            return st if st.on_stage and st.on_stage["item_id"] == "i-b" else None

        assert wait_for(fresh, 10, interval=0.05), "the background refresh never landed"
        source.close()
    finally:
        schema.drop_table(cfg)
