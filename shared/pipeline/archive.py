"""archive: drain a bounded batch of ``viewer-events`` from the pull subscription
``viewer-events-archive`` into immutable ``raw/date=YYYY-MM-DD/hour=HH/<batch-id>.ndjson.gz`` objects.

Guarantees
* **Ack after write.** Messages are acknowledged only after every object of the batch was written.
  A crash in between leaves the messages unacked: Pub/Sub redelivers them and the next batch writes
  them again (duplicate, never lost; cleaning deduplicates by ``event_id``).
* **Idempotent.** The batch id is a hash of the batch's Pub/Sub message ids (and the partition), and
  objects are created with an "only if absent" precondition: redelivering exactly the same messages
  rewrites nothing; an object that already exists is kept (its content is the same).
* **Partitioning** by the event's own time (``ts`` in UTC), unless ``ts`` is unparseable or
  implausible relative to ``received_at`` (the skew rule, ``shared.pipeline.skew.skew_flags``: more than
  ``max_future_s`` ahead or ``max_past_s`` behind) -- then by ``received_at``; a line with neither goes to the hour of the
  archive run. Lines are written verbatim (bytes as ingest published them, ``received_at`` included),
  so cleaning sees exactly what was received.
* **Bounded.** A batch holds at most ``max_events`` lines: messages are taken whole while they fit; the
  first one that does not (and the rest of that pull) is nacked and goes to the next batch. A single
  message larger than the bound is still archived alone (a message is never split). Pulls are sized
  by the lines per message seen in the batch (the first asks for ``FIRST_PULL`` messages), so a
  backlog of 500-line webhook messages is not pulled 1000 at a time (≈ 100 MB) to keep 40.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared import layout
from shared.adapters.storage import ABSENT, PreconditionFailed
from shared.log import get_logger
from shared.pipeline.config import TimeRules
from shared.pipeline.skew import skew_flags
from shared.runtime import faults
from shared.settings import settings

log = get_logger("archive")
FIRST_PULL = 20  # messages asked for by a batch's first pull (then sized by the lines per message)


@dataclass(frozen=True)
class ArchiveConfig:
    subscription: str = field(default_factory=lambda: settings().archive_subscription)
    max_events: int = field(default_factory=lambda: settings().archive_max_events)
    max_pulls: int = field(default_factory=lambda: settings().archive_max_pulls)
    pull_size: int = field(default_factory=lambda: settings().archive_pull_size)
    pull_timeout_s: float = field(default_factory=lambda: settings().archive_pull_timeout_s)
    empty_pulls: int = 2  # stop a batch after this many empty pulls in a row
    max_batches: int = field(default_factory=lambda: settings().archive_max_batches)
    compresslevel: int = 6
    rules: TimeRules = field(default_factory=TimeRules)


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str) or len(value) < 20:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T").replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.timestamp()


def partition_of(line: bytes, rules: TimeRules, now: float) -> str:
    """``date=YYYY-MM-DD/hour=HH`` for one NDJSON line (see the module docstring)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    ts = rec = None
    if isinstance(obj, dict):
        ts, rec = _parse_ts(obj.get("ts")), _parse_ts(obj.get("received_at"))
    t = ts
    if t is None or (rec is not None and skew_flags(rec - t, rules)[0]):  # the sent ts is not believed
        t = rec if rec is not None else now
    d = datetime.fromtimestamp(t, UTC)
    return f"date={d:%Y-%m-%d}/hour={d:%H}"


def split_lines(data: bytes, attributes: dict[str, str]) -> list[bytes]:
    if attributes.get("encoding", "ndjson").endswith("+gzip") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [ln for ln in data.split(b"\n") if ln.strip()]


def archive_batch(bus, store, cfg: ArchiveConfig | None = None, *, now: float | None = None) -> dict[str, Any]:
    """Pull up to ``cfg.max_events`` events (at most ``cfg.max_pulls`` pulls), write, then ack."""
    cfg = cfg or ArchiveConfig()
    now = time.time() if now is None else now
    msgs, n_events, empty, pulls, full = [], 0, 0, 0, False
    seen_ids: set[str] = set()
    excess: list[str] = []  # pulled but over the batch bound: nacked, redelivered to the next batch
    taken = 0  # messages taken so far: with n_events, the lines per message of this traffic
    while not full and pulls < cfg.max_pulls and empty < cfg.empty_pulls:
        # a message may carry many lines (ingest: one message per stream of a webhook, 500 lines of
        # ≈ 100 KB for a 500-event batch): the first pull asks for FIRST_PULL messages, the next ones
        # for what the remaining room holds at the lines per message seen so far (single-event
        # messages: pull_size at once); stop at the first message that does not fit
        room = max(1, cfg.max_events - n_events)
        want = min(cfg.pull_size, FIRST_PULL if not taken else max(1, room * taken // max(1, n_events)))
        got = bus.pull(cfg.subscription, min(want, room), timeout_s=cfg.pull_timeout_s)
        pulls += 1
        if not got:
            empty += 1
            continue
        empty = 0
        for m in got:
            if full:
                excess.append(m.ack_id)
                continue
            if m.message_id in seen_ids:  # redelivered within the batch: ack both, write once
                msgs.append((m, []))
                continue
            lines = split_lines(m.data, m.attributes)
            if msgs and n_events + len(lines) > cfg.max_events:  # (a lone oversized message still goes)
                full = True
                excess.append(m.ack_id)
                continue
            seen_ids.add(m.message_id)
            msgs.append((m, lines))
            n_events += len(lines)
            taken += 1
            full = n_events >= cfg.max_events
    if excess:
        bus.nack(cfg.subscription, excess)
    if not msgs:
        return {"messages": 0, "events": 0, "objects": [], "existing_objects": [], "pulls": pulls, "full": False}

    parts: dict[str, list[bytes]] = defaultdict(list)
    ids_by_part: dict[str, list[str]] = defaultdict(list)
    for m, lines in msgs:
        for ln in lines:
            p = partition_of(ln, cfg.rules, now)
            parts[p].append(ln)
            ids_by_part[p].append(m.message_id)
    written, existed = [], []
    try:
        for p in sorted(parts):
            h = hashlib.sha256(p.encode() + b"\0" + "\0".join(sorted(set(ids_by_part[p]))).encode()).hexdigest()[:24]
            key = layout.raw_key(p, h)
            body = gzip.compress(b"\n".join(parts[p]) + b"\n", compresslevel=cfg.compresslevel, mtime=0)
            try:
                store.put(key, body, content_type="application/gzip", if_generation_match=ABSENT)
                written.append(key)
            except PreconditionFailed:
                existed.append(key)  # same messages archived before (crash before ack): nothing to do
    except Exception as exc:
        # the store failed: give the messages back at once (nack) instead of letting them wait out
        # the ack deadline (up to 5 minutes); the next batch retries them. Objects already written
        # are rewritten as no-ops (same names, only-if-absent).
        log.error(
            "archive write failed; batch nacked",
            extra={"error": f"{type(exc).__name__}: {exc}", "messages": len(msgs), "written": len(written)},
        )
        try:
            bus.nack(cfg.subscription, [m.ack_id for m, _ in msgs])
        except Exception:
            log.exception("nack failed too; the messages come back after the ack deadline")
        raise
    faults.point("archive:write", store, "after write, before ack")  # tests only (shared.runtime)
    bus.ack(cfg.subscription, [m.ack_id for m, _ in msgs])
    summary = {
        "messages": len(msgs),
        "events": n_events,
        "objects": written,
        "existing_objects": existed,
        "partitions": len(parts),
        "pulls": pulls,
        "full": full,
    }
    log.info(
        "archived batch",
        extra={k: v for k, v in summary.items() if k not in ("objects", "existing_objects", "full")}
        | {"n_objects": len(written)},
    )
    return summary


def run_archive(bus, store, cfg: ArchiveConfig | None = None, *, now: float | None = None) -> dict[str, Any]:
    """One scheduler tick: up to ``cfg.max_batches`` batches, stopping early when the backlog is empty."""
    cfg = cfg or ArchiveConfig()
    total = {"batches": 0, "messages": 0, "events": 0, "objects": [], "existing_objects": []}
    for _ in range(cfg.max_batches):
        s = archive_batch(bus, store, cfg, now=now)
        if not s["messages"]:
            break
        total["batches"] += 1
        total["messages"] += s["messages"]
        total["events"] += s["events"]
        total["objects"] += s["objects"]
        total["existing_objects"] += s["existing_objects"]
        if not s["full"]:  # the batch was not cut by the bound: the backlog was drained
            break
    log.info(
        "archive tick",
        extra={
            "batches": total["batches"],
            "messages": total["messages"],
            "events": total["events"],
            "n_objects": len(total["objects"]),
        },
    )
    return total
