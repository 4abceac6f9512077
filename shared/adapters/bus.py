"""Pub/Sub adapter: publish (batched, waiting for every future), synchronous pull + ack, and the
admin calls the local stack and the tests use to declare topics and subscriptions.

The same code talks to Google Cloud and to the emulator: ``google-cloud-pubsub`` honours
``PUBSUB_EMULATOR_HOST`` itself. Clients are created on first use, not at import, so a cold
function that never publishes never opens a channel.

Failures: a publish that cannot complete within ``publish_timeout_s`` raises ``BusUnavailable``;
callers answer 503 and let the sender retry. Nothing is reported as published before Pub/Sub
returned its message id. Test-only fault points (``shared.runtime.faults``): ``bus:publish`` (the RPC
never leaves: nothing published) and ``bus:published`` (Pub/Sub committed, the caller never heard:
its retry publishes duplicates); both surface as ``BusUnavailable``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

DEFAULT_PROJECT = "daihuo-local"


class BusUnavailable(RuntimeError):
    """Pub/Sub did not accept the messages in time (down, overloaded or misconfigured)."""


def project_id() -> str:
    return (
        os.environ.get("PUBSUB_PROJECT_ID")
        or os.environ.get("GOOGLE_CLOUD_PROJECT")
        or os.environ.get("GCP_PROJECT")
        or DEFAULT_PROJECT
    )


def topic_path(topic: str, project: str | None = None) -> str:
    return topic if topic.startswith("projects/") else f"projects/{project or project_id()}/topics/{topic}"


def subscription_path(sub: str, project: str | None = None) -> str:
    return sub if sub.startswith("projects/") else f"projects/{project or project_id()}/subscriptions/{sub}"


@dataclass
class Message:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    ack_id: str
    delivery_attempt: int = 0


class _Group:
    """One caller's chunk in a topic's publish queue (``Bus._commit``)."""

    __slots__ = ("messages", "size", "taken", "done", "ids", "error")

    def __init__(self, messages: list[tuple[bytes, dict[str, str]]], size: int):
        self.messages, self.size = messages, size
        self.taken = self.done = False
        self.ids: list[str] = []
        self.error: BusUnavailable | None = None


class _Queue:
    __slots__ = ("cond", "pending", "in_flight", "rpcs", "messages")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.pending: deque[_Group] = deque()
        self.in_flight = 0
        self.rpcs = self.messages = 0  # sent so far (publish_stats)


class Bus:
    """Publisher + subscriber for one project. Thread-safe; one per process is enough."""

    def __init__(
        self,
        project: str | None = None,
        *,
        publish_timeout_s: float | None = None,
        max_latency_s: float = 0.001,
        max_messages: int = 1000,
        max_bytes: int = 9 * 1024 * 1024,
        max_in_flight: int = 2,
    ):
        self.project = project or project_id()
        self.max_in_flight = max_in_flight  # Publish RPCs under way per topic (publish_many)
        if publish_timeout_s is None:
            from shared.settings import settings

            publish_timeout_s = settings().publish_timeout_s
        self.publish_timeout_s = float(publish_timeout_s)
        self._batch = (max_bytes, max_latency_s, max_messages)
        self._publisher = None
        self._subscriber = None
        self._rpc = None  # (client, Publish callable, request class, message class), see _publish_call
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}  # topic path -> its publish queue (group commit)

    # -- clients -------------------------------------------------------------------------------
    @property
    def publisher(self):
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from google.cloud import pubsub_v1

                    max_bytes, max_latency, max_messages = self._batch
                    self._publisher = pubsub_v1.PublisherClient(
                        batch_settings=pubsub_v1.types.BatchSettings(
                            max_bytes=max_bytes, max_latency=max_latency, max_messages=max_messages
                        )
                    )
        return self._publisher

    @property
    def subscriber(self):
        """The subscriber client. Against the emulator its channel takes answers of any size, as the
        client's own channel to Google does: the generated client opens the emulator's channel with
        gRPC's default 4 MB limit, which a pull of 1000 messages of a 500-event request (≈ 100 KB
        each) exceeds (``ResourceExhausted``, the pulled messages then held until their ack deadline)."""
        if self._subscriber is None:
            with self._lock:
                if self._subscriber is None:
                    from google.cloud import pubsub_v1

                    host = os.environ.get("PUBSUB_EMULATOR_HOST")
                    if host:
                        import grpc
                        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

                        unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
                        channel = grpc.insecure_channel(host, options=unlimited)
                        self._subscriber = pubsub_v1.SubscriberClient(
                            transport=SubscriberGrpcTransport(channel=channel)
                        )
                    else:
                        self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    # -- publishing ----------------------------------------------------------------------------
    def _publish_call(self):
        """The Publish RPC (built once): ``(client, stub, request class, message class, metadata)``.

        ``stub`` is a plain gRPC callable on the generated client's own channel (its credentials, or
        the emulator's insecure channel: the generated ``google.pubsub_v1`` client honours
        ``PUBSUB_EMULATOR_HOST`` itself), serialising the protobuf request and parsing the answer
        with nothing in between: the client's interceptor chain and ``google.api_core``'s error and
        retry wrappers cost ≈ 180 µs of CPU per RPC (measured against the emulator: ≈ 480 vs 300 µs
        per single-message RPC), so they are only paid on the failure path (``_send``). Errors are
        mapped to ``google.api_core`` exceptions there, so ``Retry`` sees them as the client would.

        Only the generated client is imported on the publishing path: it costs a cold instance less
        than ``google.cloud.pubsub_v1`` (batching, flow control, tracing), which only admin calls load."""
        if self._rpc is None:
            with self._lock:
                if self._rpc is None:
                    from google.pubsub_v1 import PublisherClient
                    from google.pubsub_v1.types import pubsub

                    client = PublisherClient()
                    stub = client.transport.grpc_channel.unary_unary(
                        "/google.pubsub.v1.Publisher/Publish",
                        request_serializer=pubsub.PublishRequest.pb().SerializeToString,
                        response_deserializer=pubsub.PublishResponse.pb().FromString,
                    )
                    self._rpc = (client, stub, pubsub.PublishRequest.pb(), pubsub.PubsubMessage.pb())
        return self._rpc

    def publish_many(self, topic: str, messages: Iterable[tuple[bytes, dict[str, str]]]) -> list[str]:
        """Publish every (data, attributes) pair and wait for all; return the message ids in order.

        Returns only when Pub/Sub has confirmed every message with an id; raises BusUnavailable if
        that does not happen within ``publish_timeout_s`` (per Publish RPC, retries on transient
        errors included). Some messages may then have been published (at-least-once: the caller's
        retry duplicates them and cleaning deduplicates by event_id).

        **Group commit.** The caller's messages (split at the API's limits, <=1000 messages / <=9 MB
        per RPC) join the topic's queue; a caller finding fewer than ``max_in_flight`` Publish RPCs
        under way sends, in ONE RPC, every queued message that fits (its own and those of callers that
        arrived meanwhile), then wakes them. So each caller blocks once (ingest: once per request,
        not per message), an idle instance sends at once (no timer), and a busy one sends fewer, larger
        RPCs. If an RPC fails, every caller in it gets BusUnavailable (each answers 503; nothing of
        theirs was reported accepted). The request is built as protobuf messages (the generated
        client's dict -> proto-plus marshalling cost 0.2 ms of CPU per 10-message request).

        Measured against the alternatives (bench/bench_ingest.py ``--publish-compare``, README
        "Ingest"): one RPC per call without the queue; the client's background batcher
        (``PublisherClient.publish`` futures, awaited once per request: more CPU per request, and its
        ``max_latency`` timer); one message per request (little saved: the emulator's cost is per
        byte; it would lose the per-message ``type`` / ``stream_id`` attributes subscribers filter on).
        """
        path = topic_path(topic, self.project)
        max_bytes, _, max_messages = self._batch
        ids: list[str] = []
        chunk: list[tuple[bytes, dict[str, str]]] = []
        size = 0
        for data, attrs in messages:
            n = len(data) + sum(len(k) + len(v) for k, v in attrs.items())
            if chunk and (len(chunk) >= max_messages or size + n > max_bytes):
                ids += self._commit(path, chunk, size)
                chunk, size = [], 0
            chunk.append((data, attrs))
            size += n
        if chunk:
            ids += self._commit(path, chunk, size)
        return ids

    def _commit(self, path: str, messages: list[tuple[bytes, dict[str, str]]], size: int) -> list[str]:
        """Queue one chunk and wait until an RPC carrying it (sent by this caller or another) ended."""
        with self._lock:
            q = self._queues.get(path)
            if q is None:
                q = self._queues[path] = _Queue()
        mine = _Group(messages, size)
        max_bytes, _, max_messages = self._batch
        with q.cond:
            q.pending.append(mine)
            while not mine.done:
                if mine.taken or q.in_flight >= self.max_in_flight:
                    q.cond.wait()
                    continue
                batch, n, b = [], 0, 0  # the queue's oldest groups that fit in one RPC
                while q.pending and (
                    not batch or (n + len(q.pending[0].messages) <= max_messages and b + q.pending[0].size <= max_bytes)
                ):
                    g = q.pending.popleft()
                    g.taken = True
                    batch.append(g)
                    n, b = n + len(g.messages), b + g.size
                q.in_flight += 1
                q.rpcs, q.messages = q.rpcs + 1, q.messages + n
                q.cond.release()
                try:
                    self._send(path, batch)
                finally:
                    q.cond.acquire()
                    q.in_flight -= 1
                    for g in batch:
                        g.done = True
                    q.cond.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.ids

    def publish_stats(self) -> dict[str, tuple[int, int]]:
        """Topic path -> (Publish RPCs sent, messages in them) by this Bus (tests, benchmarks)."""
        with self._lock:
            return {path: (q.rpcs, q.messages) for path, q in self._queues.items()}

    def _send(self, path: str, batch: list[_Group]) -> None:
        """One Publish RPC for the groups of ``batch``; sets each group's ids or error, never raises.

        The first attempt is the bare stub (``_publish_call``); only if it fails does the error go
        through ``google.api_core``: mapped to its exception class and, when transient, retried with
        backoff within what is left of ``publish_timeout_s``."""
        import grpc  # (loaded by _publish_call already: a dictionary look-up)

        from shared.runtime import faults

        timeout = self.publish_timeout_s
        try:
            _, stub, request_pb, message_pb = self._publish_call()
            request = request_pb(
                topic=path, messages=[message_pb(data=d, attributes=a) for g in batch for d, a in g.messages]
            )
            faults.point("bus:publish", None, "before the Publish RPC")  # tests only (shared.runtime)
            metadata = (("x-goog-request-params", "topic=" + quote(path, safe="/")),)
            start = time.monotonic()
            try:
                resp = stub(request, timeout=timeout, metadata=metadata)
            except grpc.RpcError as exc:
                resp = self._retry(stub, request, metadata, exc, timeout - (time.monotonic() - start))
            ids = list(resp.message_ids)
            if len(ids) != len(request.messages):
                raise BusUnavailable(f"Pub/Sub confirmed {len(ids)} of {len(request.messages)} messages")
            # tests only: Pub/Sub holds the messages but the callers never hear so (a lost answer, a
            # deadline that expired after the server committed): they must fail, their retry duplicates
            faults.point("bus:published", None, "after Pub/Sub confirmed, before the caller heard")
        except Exception as exc:  # RetryError, NotFound (topic missing), channel errors, BusUnavailable
            topic = path.rsplit("/", 1)[-1]
            for g in batch:  # one exception object per caller (each raises its own)
                g.error = BusUnavailable(f"publish to {topic} failed: {type(exc).__name__}: {exc}")
                g.error.__cause__ = exc
            return
        at = 0
        for g in batch:
            g.ids = ids[at : at + len(g.messages)]
            at += len(g.messages)

    @staticmethod
    def _retry(stub, request, metadata, first: Exception, left_s: float):
        """After a failed first attempt: the error as a ``google.api_core`` exception, raised at once
        unless it is transient; then retries (0.1 s doubling to 1 s) until ``left_s`` is spent."""
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry

        transient = (
            gexc.ServiceUnavailable,
            gexc.DeadlineExceeded,
            gexc.InternalServerError,
            gexc.Aborted,
            gexc.ResourceExhausted,
            gexc.Unknown,
        )
        err = gexc.from_grpc_error(first)
        if not isinstance(err, transient) or left_s <= 0:
            raise err from first
        deadline = time.monotonic() + left_s

        import grpc

        def attempt():
            try:
                return stub(request, timeout=max(0.001, deadline - time.monotonic()), metadata=metadata)
            except grpc.RpcError as exc:
                raise gexc.from_grpc_error(exc) from exc

        retry = Retry(
            initial=0.1, maximum=1.0, multiplier=2.0, timeout=left_s, predicate=lambda e: isinstance(e, transient)
        )
        return retry(attempt)()

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        return self.publish_many(topic, [(data, attributes)])[0]

    # -- pulling (archive) ---------------------------------------------------------------------
    def pull(self, subscription: str, max_messages: int = 1000, timeout_s: float = 10.0) -> list[Message]:
        """One synchronous pull. Returns at most max_messages (possibly none)."""
        from google.api_core import exceptions as gexc

        try:
            resp = self.subscriber.pull(
                request={"subscription": subscription_path(subscription, self.project), "max_messages": max_messages},
                timeout=timeout_s,
            )
        except gexc.DeadlineExceeded:
            return []
        return [
            Message(r.message.data, dict(r.message.attributes), r.message.message_id, r.ack_id, r.delivery_attempt)
            for r in resp.received_messages
        ]

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        path = subscription_path(subscription, self.project)
        for i in range(0, len(ack_ids), 1000):  # the API takes at most a few thousand ids per call
            self.subscriber.acknowledge(request={"subscription": path, "ack_ids": list(ack_ids[i : i + 1000])})

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        path = subscription_path(subscription, self.project)
        for i in range(0, len(ack_ids), 1000):
            self.subscriber.modify_ack_deadline(
                request={"subscription": path, "ack_ids": list(ack_ids[i : i + 1000]), "ack_deadline_seconds": 0}
            )

    # -- admin (local stack, tests) ------------------------------------------------------------
    def ensure_topic(self, topic: str) -> str:
        from google.api_core import exceptions as gexc

        path = topic_path(topic, self.project)
        try:
            self.publisher.create_topic(request={"name": path})
        except gexc.AlreadyExists:
            pass
        return path

    def ensure_subscription(
        self,
        name: str,
        topic: str,
        *,
        push_endpoint: str | None = None,
        ack_deadline_s: int = 60,
        dead_letter_topic: str | None = None,
        max_delivery_attempts: int = 5,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> str:
        """Create a pull (or push, if push_endpoint) subscription; an existing one is left alone."""
        from google.api_core import exceptions as gexc

        path = subscription_path(name, self.project)
        request: dict = {
            "name": path,
            "topic": topic_path(topic, self.project),
            "ack_deadline_seconds": ack_deadline_s,
            "retry_policy": {
                "minimum_backoff": {"seconds": int(min_backoff_s), "nanos": int((min_backoff_s % 1) * 1e9)},
                "maximum_backoff": {"seconds": int(max_backoff_s)},
            },
        }
        if push_endpoint:
            request["push_config"] = {"push_endpoint": push_endpoint}
        if dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": topic_path(dead_letter_topic, self.project),
                "max_delivery_attempts": max_delivery_attempts,
            }
        try:
            self.subscriber.create_subscription(request=request)
        except gexc.AlreadyExists:
            pass
        return path

    def delete_subscription(self, name: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.subscriber.delete_subscription(request={"subscription": subscription_path(name, self.project)})
        except gexc.NotFound:
            pass

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc[0].transport.close()
        if self._publisher is not None:
            self._publisher.stop()
        if self._subscriber is not None:
            self._subscriber.close()
