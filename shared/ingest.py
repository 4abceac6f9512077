"""The ingest webhook's logic: authenticate, parse, validate, quarantine, publish, answer.

Kept free of Flask so it is testable in-process; ``functions/ingest/main.py`` adapts the HTTP request.

Answers (the body is always JSON):

=====  ==========================================================================================
200    the body was processed: ``accepted`` events were published, ``rejected`` ones quarantined
       with their reasons; ``results`` has one entry per event, in order. Every per-event problem
       (invalid, not JSON, nested deeper than ``DAIHUO_MAX_JSON_DEPTH``, over ``max_event_bytes``,
       a number out of range) rejects that event only, never its neighbours
400    the body is not JSON, a JSON array, or NDJSON (nothing published; the body is quarantined)
401    missing/invalid signature, unknown platform, or a timestamp outside the 5-minute window
405    any method but POST
413    body over ``max_body_bytes`` or more than ``max_events`` events (nothing published)
503    Pub/Sub or storage did not confirm in time (the log's ``dependency`` says which; nothing else
       answers 503: a quarantine row is serialised defensively, so only the store can fail it); ``Retry-After`` says when to retry. Nothing in
       a 503 answer is reported as accepted; a retry may duplicate events that did get through,
       which cleaning removes by ``event_id``
=====  ==========================================================================================

Message granularity: the accepted events of one request are grouped by ``stream_id`` (in request
order) and each group is published as ONE Pub/Sub message (NDJSON, one event per line) carrying the
attributes ``stream_id``, ``platform``, ``count``, ``schema_version``, ``encoding``, ``types`` (the
distinct event types of the message, sorted, comma-separated) and ``type`` when the message holds one
type only (every single-event request). A 500-event batch of one room is one message: the emulator's
and the client's cost is per RPC and per byte, the live layer's per message (see README, "Ingest
webhook"). Readers (archive, the live layer, the raw Cloud Storage subscription) read every line's own
``type``; no subscription filters on the attributes.
"""

from __future__ import annotations

import gzip
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared import contract_fast, limits, signing
from shared.adapters.bus import BusUnavailable
from shared.contract_rules import shipped_schema_version
from shared.http import Answer, error, json_answer
from shared.log import get_logger
from shared.settings import settings

log = get_logger("ingest")
# the contract's models (pydantic) and the object store's layout are imported only by a request that
# needs them (a flagged event, a quarantine): a cold instance's first valid request does not pay them
SCHEMA_VERSION = shipped_schema_version()


@dataclass(frozen=True)
class IngestConfig:
    max_body_bytes: int = field(default_factory=lambda: settings().max_body_bytes)
    max_events: int = field(default_factory=lambda: settings().max_events)
    max_event_bytes: int = field(default_factory=lambda: settings().max_event_bytes)
    max_json_depth: int = field(default_factory=lambda: settings().max_json_depth)
    topic: str = field(default_factory=lambda: settings().events_topic)
    retry_after_s: int = 5


def too_large(limit: int) -> Answer:
    """413 for a body over ``limit`` bytes (also answered by the adapter before reading the body)."""
    return error(413, f"body over {limit} bytes")


class BadBody(ValueError):
    pass


def parse_body(body: bytes, content_type: str = "", max_depth: int | None = None) -> tuple[list[Any], list[int]]:
    """Decode a webhook body into records. Returns (items, sizes).

    ``items[i]`` is the decoded JSON value, or an ``_Unparseable`` marker for an event that cannot be
    decoded on its own (not JSON, nested deeper than ``max_depth``): that event is refused, its
    neighbours are not. Nesting is checked on the raw bytes before any parser runs
    (``shared.limits``). A JSON array that does not parse as a whole is split into its elements
    (brackets and strings respected) and each is parsed alone. Raises BadBody when nothing in the
    body is usable (not JSON / a JSON array / NDJSON, or an array whose brackets do not balance).
    """
    max_depth = limits.max_depth_default() if max_depth is None else max_depth
    if not body.strip():
        raise BadBody("empty body")
    ndjson = "ndjson" in content_type or "jsonl" in content_type
    if not ndjson:
        deep = limits.too_deep(body, max_depth + 1)  # + 1: the array around the events
        first = body.lstrip()[:1]
        if not deep:
            try:
                value = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                if first == b"[":
                    return _split_array(body, max_depth, exc)
                if body.count(b"\n") == 0:
                    raise BadBody(f"body is not valid JSON: {exc}") from None
                ndjson = True
            else:
                if isinstance(value, dict):
                    return [value], [len(body)]
                if isinstance(value, list):
                    return value, [_size(v) for v in value]
                raise BadBody(f"body must be a JSON object, an array of objects, or NDJSON; got {type(value).__name__}")
        elif first == b"[":
            return _split_array(body, max_depth, None)
        elif body.strip().count(b"\n") == 0:  # one object, too deep: one refused event
            return [_Unparseable(body, "", f"record: nested deeper than {max_depth} levels")], [len(body)]
        else:
            ndjson = True
    items, sizes = [], []
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        sizes.append(len(line))
        # a line with at most max_depth brackets cannot nest deeper (limits.too_deep's first test,
        # inlined: this loop runs once per event); anything else, or a line that does not parse, is
        # decoded by _decode, which says why it is refused
        if line.count(b"{") + line.count(b"[") <= max_depth:
            try:
                items.append(loads(line))
                continue
            except decode_error:
                pass
        items.append(_decode(line, max_depth))
    if items and all(isinstance(i, _Unparseable) for i in items) and not any(i.reason for i in items):
        raise BadBody(f"no line of the NDJSON body is valid JSON ({items[0].error})")
    return items, sizes


def _size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except (TypeError, ValueError):  # not re-serialisable: counted as oversized, refused alone
        return 1 << 62


def _decode(raw: bytes, max_depth: int) -> Any:
    if limits.too_deep(raw, max_depth):
        return _Unparseable(raw, "", f"record: nested deeper than {max_depth} levels")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Unparseable(raw, str(exc))


def _split_array(body: bytes, max_depth: int, exc: Exception | None) -> tuple[list[Any], list[int]]:
    try:
        parts = limits.split_array(body)
    except limits.NotAnArray as err:
        raise BadBody(f"body is not valid JSON: {exc or err}") from None
    items = [_decode(p, max_depth) for p in parts]
    if items and all(isinstance(i, _Unparseable) and not i.reason for i in items):
        raise BadBody(f"body is not valid JSON: {exc or items[0].error}")
    return items, [len(p) for p in parts]


@dataclass(frozen=True)
class _Unparseable:
    raw: bytes
    error: str
    reason: str = ""  # set when the event is refused for a bound (depth), not a syntax error


def _dump_row(row: dict[str, Any]) -> bytes:
    """One quarantine row; a raw value orjson cannot write (integers beyond 64 bits, ...) is kept
    as its stdlib-JSON text instead, so a hostile event can never make its own quarantine fail."""
    try:
        return orjson.dumps(row)
    except (TypeError, ValueError):
        import json

        try:
            raw_text = json.dumps(row.get("raw"), ensure_ascii=False, default=repr)
        except (TypeError, ValueError, RecursionError):
            raw_text = repr(row.get("raw"))[:1_048_576]
        return orjson.dumps({**row, "raw": raw_text, "raw_encoding": "json-text"})


def _message(stream: str, lines: list[bytes], types: set[str], platform: str) -> tuple[bytes, dict[str, str]]:
    """One Pub/Sub message: a stream's accepted lines of a request and their attributes."""
    attributes = {
        "stream_id": stream,
        "platform": platform,
        "count": str(len(lines)),
        "schema_version": str(SCHEMA_VERSION),
        "encoding": "ndjson",
        "types": ",".join(sorted(types)),
    }
    if len(types) == 1:
        (attributes["type"],) = types
    return b"\n".join(lines), attributes


def _iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Tally:
    """What an instance accepted since its last ``ingested`` summary (``Ingestor._log``)."""

    __slots__ = ("lock", "since", "counts")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None  # monotonic time of the last summary (None: none yet)
        self.counts: dict[str, list[int]] = {}  # platform -> [requests, accepted, messages]


class Ingestor:
    """The webhook's logic (``handle``); one per instance, shared by its threads.

    Logging, ``log_every_s``: a request whose every event was accepted is not logged on its own (at
    1,000 single-event requests/s that line was ≈ 7 % of the instance's CPU, py-spy); it is counted,
    and the first such request ``log_every_s`` or more after the last summary writes one ``ingested``
    line per platform with ``requests``, ``accepted``, ``rejected`` (0), ``messages`` and ``seconds``
    (the span it covers; 0 for an instance's first request), so an instance that gets a request now and
    then still logs each one. A request with any rejection is logged on its own at once (``requests``
    1, ``seconds`` 0), its rejections quarantined with their reasons. The totals of an instance's last
    ``log_every_s`` are not logged if it stops before its next request."""

    def __init__(
        self,
        bus,
        store,
        config: IngestConfig | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        log_every_s: float = 10.0,
    ):
        self.bus = bus
        self.store = store
        self.config = config or IngestConfig()
        self.environ = environ
        self.log_every_s = log_every_s
        self._tally = _Tally()

    def _log(self, platform: str, accepted: int, rejected: int, messages: int) -> None:
        if rejected:
            extra = {"platform": platform, "requests": 1, "accepted": accepted, "rejected": rejected}
            log.info("ingested", extra={**extra, "messages": messages, "seconds": 0.0})
            return
        t = self._tally
        now = time.monotonic()
        with t.lock:
            c = t.counts.get(platform)
            if c is None:
                c = t.counts[platform] = [0, 0, 0]
            c[0] += 1
            c[1] += accepted
            c[2] += messages
            if t.since is not None and now - t.since < self.log_every_s:
                return
            counts, t.counts = t.counts, {}
            seconds = 0.0 if t.since is None else round(now - t.since, 3)
            t.since = now
        for p, (requests, acc, msgs) in counts.items():
            log.info(
                "ingested",
                extra={
                    "platform": p,
                    "requests": requests,
                    "accepted": acc,
                    "rejected": 0,
                    "messages": msgs,
                    "seconds": seconds,
                },
            )

    def _quarantine(self, rows: list[dict[str, Any]], received_at: str, now: float) -> str:
        from shared import layout

        day = received_at[:10]
        key = layout.ingest_quarantine_key(day, int(now * 1000), uuid.uuid4().hex)
        data = gzip.compress(b"\n".join(_dump_row(r) for r in rows) + b"\n", compresslevel=6, mtime=0)
        self.store.put(key, data, content_type="application/gzip")
        return key

    def _unavailable(self, what: str, exc: Exception) -> Answer:
        log.error("dependency unavailable", extra={"dependency": what, "error": str(exc)})
        return error(503, f"{what} unavailable, retry later", retry_after=self.config.retry_after_s, accepted=0)

    def handle(
        self, method: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None, content_type: str = ""
    ) -> Answer:
        cfg = self.config
        if method.upper() != "POST":
            return error(405, "method not allowed; POST webhook bodies", headers={"Allow": "POST"})
        if len(body) > cfg.max_body_bytes:
            return too_large(cfg.max_body_bytes)
        now = time.time() if now is None else now
        try:
            platform = signing.verify(headers, body, now=now, environ=self.environ)
        except signing.SignatureError as exc:
            log.warning("signature refused", extra={"reason": str(exc)})
            return error(401, f"unauthorized: {exc}")
        received_at = _iso_now(now)
        try:
            items, sizes = parse_body(body, content_type, self.config.max_json_depth)
        except BadBody as exc:
            try:
                self._quarantine(
                    [
                        {
                            "reasons": [f"body: {exc}"],
                            "raw": body.decode("utf-8", "replace"),
                            "platform": platform,
                            "received_at": received_at,
                            "stage": "ingest",
                        }
                    ],
                    received_at,
                    now,
                )
            except Exception as qexc:  # the sender keeps its copy; a 400 is still the right answer
                log.error("could not quarantine unparseable body", extra={"error": str(qexc)})
            return error(400, str(exc))
        if len(items) > cfg.max_events:
            return error(413, f"{len(items)} events in one request; the limit is {cfg.max_events}")
        too_big = {i for i, size in enumerate(sizes) if size > cfg.max_event_bytes}

        results: list[dict[str, Any]] = []
        quarantined: list[dict[str, Any]] = []
        groups: dict[str, tuple[list[bytes], set[str]]] = {}  # stream_id -> (lines, types)
        max_event_bytes, fast_check, dumps = cfg.max_event_bytes, contract_fast.check, orjson.dumps
        for i, item in enumerate(items):
            # the hot path: a record the compiled checks pass (the contract would accept it, see
            # shared/contract_fast.py), of the signed platform; anything else takes the full path below
            if sizes[i] <= max_event_bytes and fast_check(item) and item["platform"] == platform:
                item["received_at"] = received_at  # (``item`` is this request's own decoded copy)
                try:
                    line = dumps(item)
                except (TypeError, ValueError):  # defensive, as below
                    del item["received_at"]
                else:
                    group = groups.get(stream := item.get("stream_id") or "")
                    if group is None:
                        group = groups[stream] = ([], set())
                    group[0].append(line)
                    group[1].add(item["type"])
                    results.append({"index": i, "event_id": item["event_id"], "status": "accepted"})
                    continue
            event_id = item.get("event_id") if isinstance(item, dict) else None
            if isinstance(item, _Unparseable):
                reasons = [item.reason or f"record: not valid JSON ({item.error})"]
                raw: Any = item.raw.decode("utf-8", "replace")
                event_id = None
            elif i in too_big:
                reasons = [f"record: {sizes[i]} bytes, over the {cfg.max_event_bytes}-byte limit per event"]
                raw = item
            else:
                from shared.contract import validate_record

                record, reasons = validate_record(item)
                raw = item
                if record is not None and record.platform != platform:
                    reasons = [f"platform: {record.platform!r} does not match the signed platform {platform!r}"]
                if reasons is None:
                    out = dict(item)
                    out["received_at"] = received_at
                    try:
                        line = orjson.dumps(out)
                    except (TypeError, ValueError) as exc:  # defensive: a value orjson cannot write
                        reasons = [f"record: cannot be re-serialised ({exc})"]
                    else:
                        group = groups.setdefault(getattr(record, "stream_id", "") or "", ([], set()))
                        group[0].append(line)
                        group[1].add(record.type)
                        results.append({"index": i, "event_id": event_id, "status": "accepted"})
                        continue
            if not isinstance(event_id, str):
                event_id = None
            results.append({"index": i, "event_id": event_id, "status": "rejected", "reasons": reasons})
            quarantined.append(
                {
                    "reasons": reasons,
                    "raw": raw,
                    "index": i,
                    "platform": platform,
                    "received_at": received_at,
                    "stage": "ingest",
                }
            )

        if quarantined:
            try:
                self._quarantine(quarantined, received_at, now)
            except Exception as exc:  # rows are serialised defensively (_dump_row): this is the store
                return self._unavailable("storage", exc)
        if groups:
            messages = [_message(stream, lines, types, platform) for stream, (lines, types) in groups.items()]
            try:
                self.bus.publish_many(cfg.topic, messages)
            except BusUnavailable as exc:
                return self._unavailable("pubsub", exc)
        accepted = len(results) - len(quarantined)
        self._log(platform, accepted, len(quarantined), len(groups))
        return json_answer(
            200,
            {
                "accepted": accepted,
                "rejected": len(quarantined),
                "messages": len(groups),
                "received_at": received_at,
                "results": results,
            },
        )
