"""The live state in recommend's answers (docs/serving.md, "Live state").

Per request with a ``stream_id``: ONE read of the room (``LiveReader.room(stream, since_minutes=10)``)
and, for a verified viewer, ONE read of their session in the room (``LiveReader.viewer``), in
parallel on a small per-instance thread pool, both within ``DAIHUO_RECOMMEND_LIVE_TIMEOUT_S``.
What came back within the deadline is merged with the batch model (``LiveState`` -> the ranker's
inputs and the reasons); whatever did not is reported (``live.used`` / ``live.reason``) and the
answer is the batch model's. After 3 failed reads in a row the reads are skipped for
``DAIHUO_RECOMMEND_LIVE_BACKOFF_S`` (a Bigtable outage costs no deadline per request).

Never raises: a failure of the live layer is a flag in the answer, not a 5xx.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from shared import runtime
from shared.log import get_logger
from shared.settings import settings

log = get_logger("recommend.live")

ROOM_MINUTES = 10  # the room read covers the ranker's longest "now" window (orders in the last 10 minutes)
SELLING_FAST_MINUTES = 5  # the reader's trending window: "近5分钟 N 单"
SESSION_TYPES = ("product_click", "add_to_cart")  # the session's "looked at it" events
FAILURES_BEFORE_BACKOFF = 3
STALE_FACTOR = 5  # a cached room older than its TTL is still answered (and refreshed) up to 5 TTLs
MAX_ROOMS = 2000  # rooms cached per instance


@dataclass
class LiveState:
    """What the live reads gave for one request (``room`` / ``session`` None when not read or failed)."""

    room: Any = None  # shared.live.reader.RoomLive
    session: Any = None  # shared.live.reader.ViewerSession
    room_status: str = "not_read"  # used | unavailable | not_read
    viewer_status: str = "not_read"  # used | unavailable | anonymous | not_read
    reason: str | None = None
    ms: float = 0.0
    room_cached: bool = False
    # derived (``derive``)
    on_stage: dict[str, Any] | None = None
    sold_out: list[str] = field(default_factory=list)
    orders_5m: dict[str, int] = field(default_factory=dict)  # item -> orders in the trending window
    session_items: dict[str, dict[str, Any]] = field(default_factory=dict)  # item -> its latest session event

    @property
    def used(self) -> bool:
        return self.room_status == "used" or self.viewer_status == "used"

    def derive(self) -> LiveState:
        if self.room is not None:
            self.on_stage = self.room.on_stage
            self.sold_out = list(self.room.sold_out)
            self.orders_5m = {
                t["item_id"]: int(t["window"]["orders"]) for t in self.room.trending if t["window"]["orders"]
            }
        if self.session is not None:
            for ev in self.session.events:  # newest first
                if ev["type"] in SESSION_TYPES and ev["item_id"] not in self.session_items:
                    self.session_items[ev["item_id"]] = ev
        return self

    def session_clicks(self) -> list[str]:
        """The session's clicked / carted items, most recent first (the ranker's context)."""
        return list(self.session_items)

    def room_counts(self, batch: dict[str, tuple] | None) -> dict[str, Any] | None:
        """The ranker's ``room=`` input (shared/reco/ranker.py ``RoomRanker._room_vectors``): the live
        windows (orders in the last 10 minutes, clicks and impressions in the last 5) and, "so far",
        the model's own counts of the stream plus the live window's (so an item that started selling
        after the last training run is a candidate)."""
        if self.room is None:
            return None
        buy10: dict[str, float] = {}
        clk5: dict[str, float] = {}
        shown5: dict[str, float] = {}
        for t in self.room.trending:
            w, prev = t["window"], t["previous"]
            if w["orders"] or prev["orders"]:
                buy10[t["item_id"]] = float(w["orders"] + prev["orders"])
            if w["clicks"]:
                clk5[t["item_id"]] = float(w["clicks"])
            if w["impressions"]:
                shown5[t["item_id"]] = float(w["impressions"])
        out: dict[str, Any] = {"purchase@10m": buy10, "product_click@5m": clk5, "product_impression@5m": shown5}
        for kind, live in (("purchase", buy10), ("product_click", clk5)):
            ids, counts = (batch or {}).get(kind, ((), ()))
            out[kind] = (list(ids) + list(live), list(counts) + list(live.values()))  # the ranker sums repeats
        return out

    def to_answer(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"used": self.used, "room": self.room_status, "viewer": self.viewer_status}
        if self.reason:
            doc["reason"] = self.reason
        if self.room is not None:
            doc.update(
                as_of=self.room.as_of,
                last_event_at=self.room.info.get("last_event_at"),
                on_air=self.room.on_air,
                on_stage=self.on_stage["item_id"] if self.on_stage else None,
                sold_out_removed=self.sold_out,
            )
            doc["room_cached"] = self.room_cached
        if self.session is not None:
            doc["session_items"] = len(self.session_items)
        doc["ms"] = round(self.ms, 3)
        return doc


class LiveSource:
    """Reads the live state for recommend: a per-instance reader, pool and failure counter."""

    def __init__(
        self,
        reader=None,
        *,
        enabled: bool | None = None,
        timeout_s: float | None = None,
        backoff_s: float | None = None,
        room_cache_s: float | None = None,
    ):
        s = settings()
        self.room_cache_s = float(s.recommend_live_room_cache_s if room_cache_s is None else room_cache_s)
        self._rooms: dict[str, tuple[float, Any]] = {}  # stream -> (monotonic time read, RoomLive)
        self._inflight: dict[str, Any] = {}  # stream -> the room read in flight
        self._rooms_reader = None
        if enabled is None:
            enabled = s.recommend_live == "on" or (s.recommend_live == "auto" and runtime.bigtable_configured())
        self.enabled = enabled
        self.timeout_s = float(s.recommend_live_timeout_s if timeout_s is None else timeout_s)
        self.backoff_s = float(s.recommend_live_backoff_s if backoff_s is None else backoff_s)
        self._reader = reader
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None
        self._failures = 0
        self._skip_until = 0.0
        self._last_error: str | None = None
        self._warm = None  # the future opening the client (importing the Bigtable library takes ~2 s)

    def _ensure(self):
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="live-read")
            if self._reader is None:
                from shared.live.reader import LiveReader

                self._reader = LiveReader(timeout_s=self.timeout_s)
            return self._pool, self._reader

    def warm(self) -> None:
        """Open the Bigtable client in the background: importing the client library and opening the
        channel take seconds, which no request should wait for (until it is open, answers are the
        batch model's, ``live.reason`` says so)."""
        if not self.enabled:
            return
        with self._lock:
            if self._warm is not None:
                return
            try:
                pool, reader = self._ensure()
            except Exception as exc:  # never let the live layer break the service
                log.warning("live reader warm-up failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                return

            def open_table():
                reader.table  # noqa: B018  (opens the client)
                from google.cloud.bigtable.data import ReadRowsQuery  # noqa: F401  (the reader's lazy imports)

            self._warm = pool.submit(open_table)

    def _warming(self) -> str | None:
        """None when the client is open; else why the live state cannot be read yet."""
        self.warm()
        w = self._warm
        if w is None:
            return "live reader could not be built"
        if not w.done():
            return "live reader starting (opening the Bigtable client)"
        exc = w.exception()
        if exc is not None:
            with self._lock:
                self._warm = None  # the next request tries again
            err = f"live reader: {type(exc).__name__}: {exc}"
            self._failed(err)
            return err
        return None

    def _failed(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            self._last_error = error
            if self._failures >= FAILURES_BEFORE_BACKOFF:
                self._skip_until = time.monotonic() + self.backoff_s
                self._failures = 0
                log.warning("live reads failing: answering from the batch model", extra={"error": error})

    # -- room reads: one in flight per stream, cached per instance, refreshed in the background
    def _room_reader(self):
        """The reader of room reads: the same table handle, the live layer's own read deadline
        (``DAIHUO_LIVE_READ_TIMEOUT_S``): a request waits at most its deadline, but a read that
        finishes later still fills the cache for the next requests."""
        with self._lock:
            if self._rooms_reader is None:
                from shared.live.reader import LiveReader

                base = self._reader
                self._rooms_reader = LiveReader(
                    base.table, base.cfg, timeout_s=max(base.cfg.read_timeout_s, self.timeout_s)
                )
            return self._rooms_reader

    def _cached_room(self, stream_id: str):
        """(room, fresh) from the cache; a stale room (past the TTL, within 5 TTLs) is returned and
        refreshed behind; None when there is none usable."""
        if self.room_cache_s <= 0:
            return None
        with self._lock:
            entry = self._rooms.get(stream_id)
        if entry is None:
            return None
        age = time.monotonic() - entry[0]
        if age >= self.room_cache_s * STALE_FACTOR:
            return None
        if age >= self.room_cache_s:
            self._room_future(stream_id)
        return entry[1]

    def _keep_room(self, stream_id: str, room, at: float) -> None:
        if self.room_cache_s <= 0:
            return
        with self._lock:
            old = self._rooms.get(stream_id)
            if old is not None and old[0] > at:
                return
            self._rooms[stream_id] = (at, room)
            if len(self._rooms) > MAX_ROOMS:
                for key, _ in sorted(self._rooms.items(), key=lambda kv: kv[1][0])[: len(self._rooms) - MAX_ROOMS]:
                    del self._rooms[key]

    def _room_future(self, stream_id: str):
        """The room read of ``stream_id`` in flight, or a new one (its result fills the cache)."""
        with self._lock:
            fut = self._inflight.get(stream_id)
            if fut is not None:
                return fut
            pool, reader = self._pool, self._room_reader()
            at = time.monotonic()
            fut = pool.submit(reader.room, stream_id, since_minutes=ROOM_MINUTES, top=1000)
            self._inflight[stream_id] = fut

        def done(f):
            with self._lock:
                self._inflight.pop(stream_id, None)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                self._keep_room(stream_id, f.result(), at)
            else:
                self._failed(f"room: {type(exc).__name__}: {exc}")

        fut.add_done_callback(done)
        return fut

    def read(self, stream_id: str | None, user_id: str | None, now: float | None = None) -> LiveState:
        """The room (and, for a verified viewer, the session) within the deadline; never raises."""
        if not self.enabled:
            return LiveState(reason="live state disabled (DAIHUO_RECOMMEND_LIVE)")
        if stream_id is None:
            return LiveState(reason="no stream_id: nothing live to merge")
        t0 = time.perf_counter()
        state = LiveState(viewer_status="anonymous" if user_id is None else "not_read")
        why = self._warming()
        if why is not None:
            state.room_status, state.reason = "unavailable", why
            if user_id is not None:
                state.viewer_status = "unavailable"
            return state
        cached = self._cached_room(stream_id) if now is None else None
        if cached is not None:
            state.room, state.room_status, state.room_cached = cached, "used", True
        if time.monotonic() < self._skip_until:  # the back-off: no read (a cached room is still used)
            left = self._skip_until - time.monotonic()
            state.reason = f"live reads failed repeatedly ({self._last_error}); retrying in {left:.1f} s"
            if cached is None:
                state.room_status = "unavailable"
            if user_id is not None:
                state.viewer_status = "unavailable"
            state.ms = (time.perf_counter() - t0) * 1e3
            return state.derive()
        try:
            pool, reader = self._ensure()
            deadline = time.monotonic() + self.timeout_s
            if cached is not None:
                f_room = None
            elif now is not None:  # a given clock (tests): a direct read, not cached
                f_room = pool.submit(reader.room, stream_id, now=now, since_minutes=ROOM_MINUTES, top=1000)
            else:
                f_room = self._room_future(stream_id)
            f_viewer = pool.submit(reader.viewer, stream_id, user_id) if user_id is not None else None
        except Exception as exc:
            state.room_status = "unavailable"
            state.reason = f"live reader: {type(exc).__name__}: {exc}"
            self._failed(state.reason)
            return state
        errors = []
        for name, fut in (("room", f_room), ("viewer", f_viewer)):
            if fut is None:
                continue
            try:
                value = fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:  # a room read goes on and fills the cache (its callback counts a failure)
                value, err = None, f"{name}: no answer within {self.timeout_s * 1e3:.0f} ms"
                if name == "viewer":
                    fut.cancel()
                    self._failed(err)
            except Exception as exc:  # LiveUnavailable (deadline, down, no table), anything else
                value, err = None, f"{name}: {type(exc).__name__}: {exc}"
                if name == "viewer":
                    self._failed(err)  # (a room read's failure is counted by its callback)
            else:
                err = None
            if name == "room":
                state.room, state.room_status = value, "used" if value is not None else "unavailable"
            else:
                state.session, state.viewer_status = value, "used" if value is not None else "unavailable"
            if err:
                errors.append(err)
        if errors:
            state.reason = "; ".join(errors)
        else:
            with self._lock:
                self._failures = 0
        state.ms = (time.perf_counter() - t0) * 1e3
        return state.derive()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


# ------------------------------------------------------------------------------ reasons
def live_reason(kind: str, model_reason: dict[str, Any], **fields) -> dict[str, Any]:
    """A reason from the live state; the model's own reason is kept beside it (``model_reason``)."""
    return {"kind": kind, "feature": None, "source": "live", **fields, "model_reason": model_reason}


def explain_live(reason: dict[str, Any]) -> dict[str, Any] | None:
    """Texts of the live reason kinds (None: not a live kind)."""
    kind = reason.get("kind")
    if kind == "on_stage":
        return {"text_zh": "主播正在讲解", "text_en": "the host is presenting it now"}
    if kind == "selling_fast":
        n, m = int(reason.get("orders") or 0), int(reason.get("minutes") or SELLING_FAST_MINUTES)
        return {
            "text_zh": f"本场热卖 · 近{m}分钟 {n} 单",
            "text_en": f"selling fast in this room: {n} order{'s' if n != 1 else ''} in the last {m} minutes",
        }
    if kind == "just_viewed":
        return {"text_zh": "你刚看过", "text_en": "you just looked at it"}
    return None


CROWD_KINDS = ("popular", "popular_in_stream", "trending")  # model reasons a live count may name better


def relabel(items: list[dict[str, Any]], live: LiveState) -> None:
    """Live reasons on the ranked items (in place): the item on stage, then a just-looked-at item,
    then an item selling fast now whose model reason is a crowd one (a personal reason is kept)."""
    stage = live.on_stage["item_id"] if live.on_stage else None
    for it in items:
        r = it["reason"]
        iid = it["item_id"]
        if iid == stage:
            it["reason"] = live_reason(
                "on_stage", r, slot_id=live.on_stage.get("slot_id"), since=live.on_stage.get("started_at")
            )
        elif iid in live.session_items:
            ev = live.session_items[iid]
            it["reason"] = live_reason("just_viewed", r, action=ev["type"], at=ev.get("ts"))
        elif live.orders_5m.get(iid) and r.get("kind") in CROWD_KINDS:
            it["reason"] = live_reason("selling_fast", r, orders=live.orders_5m[iid], minutes=SELLING_FAST_MINUTES)
