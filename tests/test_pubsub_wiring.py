"""Pub/Sub wiring against Google's emulator: push delivery to a real CloudEvent function served by
functions-framework, retry of a failing handler, dead-lettering after max_delivery_attempts, and
pull + ack as the archive function uses it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from devtools import emulators
from shared.adapters.bus import Bus
from tests.logdir import LOGS
from tests.waiting import wait_for

FLAKY = Path(__file__).parent / "fixtures" / "flaky_function" / "main.py"


@pytest.fixture(scope="module")
def bus(pubsub_emulator):
    b = Bus()
    yield b
    b.close()


@pytest.fixture(scope="module")
def pushed(pubsub_emulator, bus, tmp_path_factory):
    """The flaky CloudEvent function behind a push subscription with a dead-letter topic."""
    record_dir = tmp_path_factory.mktemp("deliveries")
    fn = emulators.start_function(
        "flaky",
        "handle",
        signature_type="cloudevent",
        source=FLAKY,
        env={**pubsub_emulator.env, "RECORD_DIR": str(record_dir)},
        log_dir=LOGS,
    )
    bus.ensure_topic("wiring-events")
    bus.ensure_topic("wiring-dead")
    bus.ensure_subscription("wiring-dead-pull", "wiring-dead")
    bus.ensure_subscription(
        "wiring-push",
        "wiring-events",
        push_endpoint=f"http://{fn.host}/",
        dead_letter_topic="wiring-dead",
        max_delivery_attempts=5,
        min_backoff_s=0.1,
        max_backoff_s=1,
    )
    yield record_dir
    fn.stop()


def _deliveries(record_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in record_dir.glob("*.json")]


def test_push_delivers_a_cloudevent_to_the_function(bus, pushed):
    mid = bus.publish("wiring-events", "直播 hello".encode(), kind="ok")
    got = wait_for(lambda: [d for d in _deliveries(pushed) if d["message_id"] == mid])
    assert len(got) == 1
    assert got[0]["data"] == "直播 hello"
    assert got[0]["attributes"] == {"kind": "ok"}
    assert got[0]["ce_type"] == "google.cloud.pubsub.topic.v1.messagePublished"


def test_a_handler_that_fails_once_is_retried(bus, pushed):
    mid = bus.publish("wiring-events", b"retry me", fail="once")
    got = wait_for(lambda: len([d for d in _deliveries(pushed) if d["message_id"] == mid]) >= 2)
    assert got
    time.sleep(2)  # once succeeded, no further delivery comes
    assert len([d for d in _deliveries(pushed) if d["message_id"] == mid]) == 2


def test_a_handler_that_always_fails_is_dead_lettered(bus, pushed):
    mid = bus.publish("wiring-events", b"poison", fail="always")
    dead = wait_for(
        lambda: [m for m in bus.pull("wiring-dead-pull", 10, timeout_s=2) if m.data == b"poison"], timeout=90
    )
    assert len(dead) == 1
    attrs = dead[0].attributes
    assert attrs["fail"] == "always"
    assert attrs["CloudPubSubDeadLetterSourceSubscription"] == "wiring-push"
    assert attrs["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    bus.ack("wiring-dead-pull", [m.ack_id for m in dead])
    assert len([d for d in _deliveries(pushed) if d["message_id"] == mid]) == 5


def test_pull_and_ack(bus):
    bus.ensure_topic("wiring-pull-events")
    bus.ensure_subscription("wiring-archive", "wiring-pull-events", ack_deadline_s=10)
    ids = bus.publish_many("wiring-pull-events", [(f"m{i}".encode(), {"i": str(i)}) for i in range(25)])
    assert len(set(ids)) == 25
    got = []
    for _ in range(20):
        got += bus.pull("wiring-archive", 10, timeout_s=2)
        if len({m.message_id for m in got}) >= 25:
            break
    assert sorted({m.data for m in got}) == sorted(f"m{i}".encode() for i in range(25))
    bus.ack("wiring-archive", [m.ack_id for m in got])
    # acknowledged: nothing comes back, even after the 10 s ack deadline has passed
    time.sleep(11)
    assert bus.pull("wiring-archive", 10, timeout_s=2) == []


def test_unacked_messages_are_redelivered(bus):
    bus.ensure_topic("wiring-redeliver")
    bus.ensure_subscription("wiring-redeliver-sub", "wiring-redeliver", ack_deadline_s=10)
    bus.publish("wiring-redeliver", b"not yet")
    first = wait_for(lambda: bus.pull("wiring-redeliver-sub", 10, timeout_s=2), timeout=10)
    assert [m.data for m in first] == [b"not yet"]
    bus.nack("wiring-redeliver-sub", [m.ack_id for m in first])  # a crash before ack, made immediate
    again = wait_for(lambda: bus.pull("wiring-redeliver-sub", 10, timeout_s=2), timeout=20)
    assert [m.data for m in again] == [b"not yet"]
    bus.ack("wiring-redeliver-sub", [m.ack_id for m in again])


def test_concurrent_publishers_share_rpcs_and_each_gets_its_own_ids(bus):
    """publish_many's group commit: 64 callers on 16 threads, one RPC under way at a time, so callers
    that arrive meanwhile go out together; every caller gets the ids of ITS messages, in order, and
    every message arrives exactly once."""
    from concurrent.futures import ThreadPoolExecutor

    bus.ensure_topic("wiring-group")
    bus.ensure_subscription("wiring-group-pull", "wiring-group")
    b = Bus(max_in_flight=1)

    def publish(i: int) -> tuple[int, list[str]]:
        return i, b.publish_many("wiring-group", [(f"{i}-{j}".encode(), {"i": str(i)}) for j in range(3)])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(publish, range(64)))
    rpcs, messages = b.publish_stats()[f"projects/{b.project}/topics/wiring-group"]
    assert messages == 192 and rpcs < 64  # shared RPCs
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + 20
    while len(got) < 192 and time.monotonic() < deadline:
        msgs = bus.pull("wiring-group-pull", 1000, timeout_s=2)
        bus.ack("wiring-group-pull", [m.ack_id for m in msgs])
        for m in msgs:
            assert m.message_id not in got
            got[m.message_id] = m.data
    assert len(got) == 192
    for i, ids in results:
        assert [got[mid] for mid in ids] == [f"{i}-{j}".encode() for j in range(3)]
    b.close()
