"""The erasure list: which viewers asked to be forgotten (docs/privacy.md).

``state/erasure.json`` = ``{"version": 1, "entries": {"<hash>": {...}}}``, one entry per erased viewer,
keyed by :func:`user_hash` (SHA-256 of a namespace and the user id: the list itself never holds the id).
An entry records ``requested_at`` (rows received up to then are erased), then ``data_erased_at`` once
the rewrite job has removed the viewer from raw/, clean/, quarantine/ and the dedupe index, and
``clean_model`` (the model version the job trained without them) once the models are clean.

Readers:

* recommend (:class:`ErasureList`, cached, refreshed every ``DAIHUO_ERASURE_REFRESH_S`` = 30 s, with
  the store's generation so an unchanged list is not re-read): :meth:`ErasureList.refuses` answers
  whether personal results must be refused for a user and the served model -- from the moment of
  the request until a model is served that was built after their data was erased;
* the rewrite job (``shared.pipeline.erase``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime
from typing import Any

from shared import layout
from shared.log import get_logger
from shared.settings import settings

log = get_logger("erasure")

ERASURE_KEY = layout.ERASURE
_NS = b"daihuo-erasure:v1:"


def user_hash(user_id: str) -> str:
    return hashlib.sha256(_NS + str(user_id).encode("utf-8")).hexdigest()


def now_iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: Any) -> float | None:
    if not isinstance(value, str) or len(value) < 19:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def empty() -> dict[str, Any]:
    return {"version": 1, "entries": {}}


def load(store) -> tuple[dict[str, Any], str | None]:
    from shared.adapters.storage import NotFound, get_json_with_generation

    try:
        return get_json_with_generation(store, ERASURE_KEY)
    except NotFound:
        return empty(), None


def request(store, user_ids: list[str], *, now: float | None = None, requested_by: str | None = None) -> list[str]:
    """Register erasure requests (idempotent: a repeated request keeps the first ``requested_at``
    unless the viewer's data was already erased, then the new request moves the cut-off forward and
    the job runs again). Returns the hashes."""
    from shared.adapters.storage import update_json

    stamp = now_iso(now)
    hashes = [user_hash(u) for u in user_ids]

    def add(doc):
        doc.setdefault("entries", {})
        for h in hashes:
            e = doc["entries"].get(h)
            if e is None or e.get("data_erased_at"):
                doc["entries"][h] = {"requested_at": stamp, **({"requested_by": requested_by} if requested_by else {})}
        return doc

    update_json(store, ERASURE_KEY, add, default=empty())
    log.info("erasure requested", extra={"users": len(hashes), "requested_by": requested_by})
    return hashes


class ErasureList:
    """The erasure list as recommend sees it: cached, re-checked at most every ``refresh_s`` seconds
    (the generation first; the body only when it changed). A store failure keeps the last list (and
    logs); before the first successful read, every personal request is refused (fails closed)."""

    def __init__(self, store, refresh_s: float | None = None):
        self.store = store
        self.refresh_s = float(refresh_s if refresh_s is not None else settings().erasure_refresh_s)
        self._entries: dict[str, dict] | None = None
        self._gen: str | None = "unread"
        self._checked = 0.0
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._entries is not None and now - self._checked < self.refresh_s:
            return
        with self._lock:
            if self._entries is not None and now - self._checked < self.refresh_s:
                return
            try:
                gen = self.store.generation(ERASURE_KEY)
                if gen is None:
                    self._entries, self._gen = {}, None
                elif gen != self._gen or self._entries is None:
                    doc, gen = load(self.store)
                    self._entries, self._gen = dict(doc.get("entries") or {}), gen
                self._checked = now
            except Exception as exc:
                log.error(
                    "erasure list unreadable; keeping the last one", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
                self._checked = now  # retry after refresh_s, not on every request

    def entry(self, user_id: str) -> dict | None | bool:
        """The entry of ``user_id``; None if not erased; False if the list was never readable."""
        self._refresh()
        if self._entries is None:
            return False
        return self._entries.get(user_hash(user_id))

    def refuses(self, user_id: str, model_version: str | None, model_created_at: str | None) -> bool:
        """True: personal results must not be given to ``user_id`` with this model (the viewer asked to
        be erased and the served model may still hold their history)."""
        e = self.entry(user_id)
        if e is False:
            return True
        if not e:
            return False
        if model_version is not None and e.get("clean_model") == model_version:
            return False
        done, built = parse_iso(e.get("data_erased_at")), parse_iso(model_created_at)
        # a model built strictly after the data was erased (whole seconds: created_at has no fraction)
        return not (done is not None and built is not None and built >= int(done) + 1)
