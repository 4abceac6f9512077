"""Bus.publish_many's failure path (shared/adapters/bus.py ``_send`` / ``_retry``): the first attempt is
a bare gRPC call, and only its error goes through ``google.api_core`` (mapped, retried when
transient, within ``publish_timeout_s``). Served by a real gRPC server in this process that speaks
the Publish method of ``google.pubsub.v1.Publisher`` and fails the calls it is told to fail, so the
client's real channel, serialisation and status codes are exercised (the emulator cannot be told to
fail one call)."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from google.pubsub_v1.types import pubsub

from shared.adapters.bus import Bus, BusUnavailable


class FailingPublisher:
    """Answers Publish; the first ``len(codes)`` calls fail with those status codes, in order."""

    def __init__(self) -> None:
        self.codes: list[grpc.StatusCode] = []
        self.calls: list[tuple[str, int, dict[str, str]]] = []  # (topic, messages, metadata)
        self.lock = threading.Lock()

    def publish(self, request, context):
        with self.lock:
            self.calls.append((request.topic, len(request.messages), dict(context.invocation_metadata())))
            code = self.codes.pop(0) if self.codes else None
        if code is not None:
            context.abort(code, f"injected {code.name}")
        n = len(self.calls)
        return pubsub.PublishResponse.pb()(message_ids=[f"{n}-{i}" for i in range(len(request.messages))])


@pytest.fixture
def server(monkeypatch):
    svc = FailingPublisher()
    srv = grpc.server(futures.ThreadPoolExecutor(4))
    handler = grpc.unary_unary_rpc_method_handler(
        svc.publish,
        request_deserializer=pubsub.PublishRequest.pb().FromString,
        response_serializer=pubsub.PublishResponse.pb().SerializeToString,
    )
    srv.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", {"Publish": handler})]
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    yield svc
    srv.stop(0)


MESSAGES = [(b'{"event_id":"a"}', {"type": "like", "count": "1"}), (b'{"event_id":"b"}', {"count": "1"})]


def test_a_transient_error_is_retried_and_the_caller_gets_the_ids(server):
    server.codes = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    bus = Bus(project="p", publish_timeout_s=10)
    try:
        assert bus.publish_many("t", MESSAGES) == ["3-0", "3-1"]  # the third attempt answered
    finally:
        bus.close()
    assert [c[:2] for c in server.calls] == [("projects/p/topics/t", 2)] * 3
    assert all(c[2]["x-goog-request-params"] == "topic=projects/p/topics/t" for c in server.calls)


def test_a_permanent_error_fails_at_once_without_retries(server):
    server.codes = [grpc.StatusCode.NOT_FOUND]
    bus = Bus(project="p", publish_timeout_s=10)
    try:
        t0 = time.monotonic()
        with pytest.raises(BusUnavailable, match="NotFound"):
            bus.publish_many("t", MESSAGES)
        assert time.monotonic() - t0 < 2
    finally:
        bus.close()
    assert len(server.calls) == 1


def test_transient_errors_past_the_timeout_fail_the_publish(server):
    server.codes = [grpc.StatusCode.UNAVAILABLE] * 1000
    bus = Bus(project="p", publish_timeout_s=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(BusUnavailable):
            bus.publish_many("t", MESSAGES)
        assert time.monotonic() - t0 < 4
    finally:
        bus.close()
    assert 2 <= len(server.calls) < 50  # retried with backoff, then given up
