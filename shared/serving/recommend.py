"""The recommend service: parameters -> filtered, explained recommendations from the served model.

* ``ModelHolder`` keeps the served model of this instance. The first request loads ``LATEST``
  synchronously (once); after that a daemon thread checks ``models/LATEST.json``'s generation every
  ``refresh_s`` seconds (``DAIHUO_MODEL_REFRESH_S``, default 30; every second while no model exists)
  and swaps in a new version only after it loaded completely. A version that fails to load is logged
  and skipped: the last good model keeps serving. Requests never touch the store after the first.
* ``parse_params`` validates the query (400 naming the parameter), ``Recommender.handle`` answers
  (a ``shared.http.Answer``; the JSON body is serialised when it is sent).
* With a ``stream_id``, the live state (``shared.serving.live``: one room read, one viewer read, within
  ``DAIHUO_RECOMMEND_LIVE_TIMEOUT_S``) is merged with the model: the item on stage first, sold-out
  items removed, the room's last minutes and the viewer's session as the ranker's inputs, live
  reasons; the answer's ``live`` says whether it was used (Bigtable slow or down: the batch answer).
* Every answer carries a recommendation id (``rec_id``) and, when ``models/EXPERIMENT.json`` holds an
  enabled experiment and the request names a ``user_id``, the viewer's arm (a stable hash of the viewer:
  ``shared.serving.experiments``): the arm's recipe and model version answer; the refresh thread reads
  the config and loads the arms' pinned versions next to LATEST (docs/experiments.md).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared import identity, layout
from shared.erasure import ErasureList
from shared.http import Answer, error, json_answer
from shared.log import get_logger
from shared.serving import experiments
from shared.serving.experiments import Experiment
from shared.serving.live import LiveSource, LiveState, explain_live, relabel
from shared.serving.registry import Registry, Served
from shared.settings import Settings, settings

log = get_logger("recommend")

MAX_K = 100
MAX_CONTEXT = 50


class BadParam(ValueError):
    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


# ------------------------------------------------------------------------------ the model
@dataclass
class Loaded:
    served: Served
    index: dict[str, int]  # item_id -> model index
    showcase_ids: dict[str, np.ndarray]  # stream_id -> item ids
    loaded_at: float
    room_rows: dict[str, int] | None = None  # RoomRanker: stream_id -> row of its room counts

    def batch_room(self, stream_id: str) -> dict[str, tuple] | None:
        """The model's own counts of the stream so far (``purchase`` / ``product_click``: item ids,
        counts), merged with the live windows (``shared.serving.live.LiveState.room_counts``)."""
        if self.room_rows is None:
            return None
        k = self.room_rows.get(stream_id)
        if k is None:
            return {}
        model = self.served.model
        out = {}
        for kind in ("purchase", "product_click"):
            M = model.room_[kind]
            lo, hi = M.indptr[k], M.indptr[k + 1]
            out[kind] = (model.item_ids_[M.indices[lo:hi]].tolist(), M.data[lo:hi].tolist())
        return out


def _prepare(served: Served, warm: bool = False) -> Loaded:
    if hasattr(served.model, "warm_kernel"):  # RoomRanker: the serving cap on history, its compiled path
        served.model.max_history = int(settings().recommend_max_history)
        served.model.use_kernel = bool(settings().recommend_kernel)
        served.model.compile_in_background = not warm  # the first model: answer while it compiles
        if warm and served.model.use_kernel:  # a refresh (the loader thread): compile / load the kernel before the swap
            served.model.warm_kernel()
    users = getattr(served.model, "user_ids_", None)
    if warm and users is not None and len(users) and hasattr(served.model, "_user_row"):
        # the viewer id index's hash table is built on its first lookup (1M viewers: 0.16 s): on a refresh
        # the loader thread pays it, not the first personal request after the swap
        served.model._user_row(users[0])
    ids = served.model.item_ids_
    rooms = getattr(served.model, "room_stream_ids_", None)
    return Loaded(
        served,
        {str(x): i for i, x in enumerate(ids.tolist())},
        {s: ids[idx] for s, idx in served.showcase.items()},
        time.time(),
        {str(s): k for k, s in enumerate(rooms.tolist())} if rooms is not None else None,
    )


class ModelHolder:
    def __init__(self, store, refresh_s: float | None = None):
        self.registry = Registry(store)
        self.refresh_s = float(refresh_s if refresh_s is not None else settings().model_refresh_s)
        self.current: Loaded | None = None
        self._seen_generation: str | None = None  # LATEST generation last acted upon
        self._failed: dict[str, str] = {}  # version -> error (not retried for the same pointer)
        self._lock = threading.Lock()
        self._started = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_check: float = 0.0
        self.last_error: str | None = None
        # the serving experiment (models/EXPERIMENT.json) and the arms' pinned versions
        self.experiment: Experiment | None = None
        self.experiment_error: str | None = None
        self.pinned: dict[str, Loaded] = {}  # version -> loaded (versions an arm pins besides LATEST)
        self.pinned_failed: dict[str, str] = {}  # version -> error (not retried for the same config)
        self._exp_generation: str | None = None

    def get(self) -> Loaded | None:
        if not self._started:
            with self._lock:
                if not self._started:
                    try:
                        self.refresh()
                    except Exception as exc:  # the store is down: the thread keeps trying
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        log.error("initial model load failed", extra={"error": self.last_error})
                    self._thread = threading.Thread(target=self._loop, name="model-refresh", daemon=True)
                    self._thread.start()
                    self._started = True
        return self.current

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.refresh_s if self.current is not None else min(self.refresh_s, 1.0))
            if self._stop.is_set():
                break
            try:
                self.refresh()
            except Exception as exc:  # never let the thread die
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "model refresh failed; serving the last good model",
                    extra={"error": self.last_error, "version": self.current.served.version if self.current else None},
                )

    def refresh(self) -> bool:
        """Check LATEST once; load and swap if it names a new version (True if swapped); then the
        experiment config (``refresh_experiment``)."""
        swapped = self._refresh_model()
        self.refresh_experiment()
        return swapped

    def refresh_experiment(self) -> None:
        """Re-read ``models/EXPERIMENT.json`` if its generation moved; load the versions its arms pin.
        Never raises: a bad config means no experiment (logged, ``experiment_error``); a pinned version
        that fails to load is recorded (``pinned_failed``) and its arm's viewers get untagged answers."""
        store = self.registry.store
        try:
            gen = store.generation(layout.EXPERIMENT)
            if gen != self._exp_generation:
                self._exp_generation = gen
                self.pinned_failed = {}
                if gen is None:
                    self.experiment, self.experiment_error = None, None
                else:
                    try:
                        self.experiment = Experiment.parse(store.get(layout.EXPERIMENT))
                        self.experiment_error = None
                        log.info("experiment config loaded", extra={"experiment": self.experiment.model_dump()})
                    except ValueError as exc:
                        self.experiment, self.experiment_error = None, f"invalid {layout.EXPERIMENT}: {exc}"
                        log.error("experiment config refused; serving without", extra={"error": self.experiment_error})
            exp = self.experiment
            need = set(exp.versions()) if exp is not None else set()
            current = self.current.served.version if self.current is not None else None
            for v in sorted(need - set(self.pinned) - set(self.pinned_failed) - {current}):
                try:
                    self.pinned[v] = _prepare(self.registry.load(v))
                    log.info("experiment arm version loaded", extra={"version": v})
                except Exception as exc:
                    self.pinned_failed[v] = f"{type(exc).__name__}: {exc}"
                    log.error("experiment arm version failed to load", extra={"version": v, "error": str(exc)})
            for v in set(self.pinned) - need:
                del self.pinned[v]
        except Exception as exc:  # the store is down: keep what we have, try again next time
            self.experiment_error = f"{type(exc).__name__}: {exc}"
            log.error("experiment refresh failed", extra={"error": self.experiment_error})

    def arm_for(self, user_id: str | None, loaded: Loaded) -> tuple[Experiment | None, Any, Loaded, str | None]:
        """``(experiment, arm, the model that answers, status)`` for a viewer; arm None outside an
        experiment (no config, disabled, no user_id); the status says why an assigned arm cannot serve."""
        exp = self.experiment
        if exp is None or not exp.enabled or user_id is None:
            return exp, None, loaded, None
        arm = exp.assign(user_id)
        if arm.version is None or arm.version == loaded.served.version:
            return exp, arm, loaded, None
        pinned = self.pinned.get(arm.version)
        if pinned is None:
            why = self.pinned_failed.get(arm.version, "not loaded yet")
            return exp, arm, loaded, f"arm {arm.name}: version {arm.version} unavailable ({why})"
        return exp, arm, pinned, None

    def _refresh_model(self) -> bool:
        self.last_check = time.time()
        gen = self.registry.latest_generation()
        if gen is None or gen == self._seen_generation:
            return False
        pointer, gen = self.registry.latest()
        if pointer is None:
            return False
        version = str(pointer.get("version"))
        if self.current is not None and self.current.served.version == version:
            self._seen_generation = gen
            return False
        if version in self._failed:
            self._seen_generation = gen
            return False
        t0 = time.perf_counter()
        try:
            loaded = _prepare(self.registry.load(version, gen), warm=self.current is not None)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            self._failed[version] = err
            self._seen_generation = gen
            self.last_error = f"version {version} failed to load: {err}"
            log.error(
                "model failed to load; keeping the last good model",
                extra={
                    "version": version,
                    "error": err,
                    "serving": self.current.served.version if self.current else None,
                },
            )
            return False
        old = self.current
        exp = self.experiment
        if old is not None and exp is not None and old.served.version in exp.versions():
            self.pinned[old.served.version] = old  # an arm pins the outgoing version: keep serving it
        self.current = loaded  # one reference assignment: requests see the old or the new model
        self._seen_generation = gen
        log.info(
            "model loaded",
            extra={
                "version": version,
                "seconds": round(time.perf_counter() - t0, 3),
                "items": int(loaded.served.model.n_items_),
            },
        )
        return True

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------- parameters
@dataclass
class Params:
    user_id: str | None
    stream_id: str | None
    context: list[str]
    k: int
    showcase_only: bool
    exclude_purchased: bool
    category: str | None
    min_price: float | None
    max_price: float | None
    filter_seen: bool = False
    showcase_explicit: bool = False  # the request said showcase_only (else the setting's default)
    max_per_category: int | None = None  # None: the setting's (DAIHUO_RECOMMEND_MAX_PER_CATEGORY)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
KNOWN = {
    "user_id",
    "stream_id",
    "context",
    "k",
    "showcase_only",
    "exclude_purchased",
    "filter_seen",
    "category",
    "min_price",
    "max_price",
    "max_per_category",
}


def _bool(name: str, v: Any, default: bool) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise BadParam(name, f"expected true/false, got {v!r}")


def _id(name: str, v: Any, required: bool = False) -> str | None:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        if required:
            raise BadParam(name, "is required")
        return None
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise BadParam(name, "expected a string")
    s = str(v).strip()
    if len(s) > 128:
        raise BadParam(name, "longer than 128 characters")
    return s


def _price(name: str, v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond float
        raise BadParam(name, f"expected a number, got {v!r}") from None
    if isinstance(v, bool) or not math.isfinite(f) or f < 0:
        raise BadParam(name, f"expected a finite number >= 0, got {v!r}")
    return f


def parse_params(args: Mapping[str, Any], cfg: Settings | None = None) -> Params:
    """GET query args or a POST JSON object -> Params; BadParam names the offending parameter.
    ``cfg``: the settings the request is answered under (default: read now)."""
    unknown = sorted(set(args) - KNOWN)
    if unknown:
        raise BadParam(unknown[0], f"unknown parameter (known: {', '.join(sorted(KNOWN))})")
    user_id = _id("user_id", args.get("user_id"))
    stream_id = _id("stream_id", args.get("stream_id"))
    ctx = args.get("context")
    if ctx is None or ctx == "":
        context: list[str] = []
    elif isinstance(ctx, str):
        context = [c.strip() for c in ctx.split(",") if c.strip()]
    elif isinstance(ctx, list) and all(isinstance(c, str) for c in ctx):
        context = [c.strip() for c in ctx if c.strip()]
    else:
        raise BadParam("context", "expected a comma-separated string or a list of item ids")
    if len(context) > MAX_CONTEXT:
        raise BadParam("context", f"at most {MAX_CONTEXT} items")
    kv = args.get("k", 10)
    try:
        if isinstance(kv, bool) or (isinstance(kv, float) and not kv.is_integer()):
            raise ValueError
        k = int(str(kv).strip()) if not isinstance(kv, (int, float)) else int(kv)
    except (TypeError, ValueError):
        raise BadParam("k", f"expected an integer 1..{MAX_K}, got {kv!r}") from None
    if not 1 <= k <= MAX_K:
        raise BadParam("k", f"expected an integer 1..{MAX_K}, got {k}")
    # default on (DAIHUO_RECOMMEND_SHOWCASE_ONLY): a room recommends what it sells; without a stream
    # there is no showcase, so only an explicit showcase_only=true needs a stream_id
    explicit = args.get("showcase_only") is not None
    showcase_only = _bool("showcase_only", args.get("showcase_only"), (cfg or settings()).recommend_showcase_only)
    if showcase_only and stream_id is None:
        if explicit:
            raise BadParam("stream_id", "is required with showcase_only")
        showcase_only = False
    category = args.get("category")
    if category is not None and not isinstance(category, str):
        raise BadParam("category", "expected a string")
    category = category.strip() or None if category is not None else None
    lo, hi = _price("min_price", args.get("min_price")), _price("max_price", args.get("max_price"))
    if lo is not None and hi is not None and lo > hi:
        raise BadParam("max_price", f"is below min_price ({hi} < {lo})")
    if user_id is None and not context and stream_id is None:
        raise BadParam("user_id", "is required (or give stream_id / context)")
    mpc = args.get("max_per_category")
    if mpc is not None and mpc != "":
        try:
            if isinstance(mpc, bool) or (isinstance(mpc, float) and not mpc.is_integer()):
                raise ValueError
            mpc = int(str(mpc).strip()) if not isinstance(mpc, (int, float)) else int(mpc)
        except (TypeError, ValueError):
            raise BadParam("max_per_category", f"expected an integer 0..{MAX_K}, got {mpc!r}") from None
        if not 0 <= mpc <= MAX_K:
            raise BadParam("max_per_category", f"expected an integer 0..{MAX_K} (0: no cap), got {mpc}")
    else:
        mpc = None
    return Params(
        user_id,
        stream_id,
        context,
        k,
        showcase_only,
        _bool("exclude_purchased", args.get("exclude_purchased"), False),
        category,
        lo,
        hi,
        _bool("filter_seen", args.get("filter_seen"), False),
        explicit,
        mpc,
    )


def current_showcase(loaded: Loaded, stream_id: str, live: LiveState) -> np.ndarray | None:
    """The room's current showcase as sorted model positions: the model's showcase of the stream
    (from its training window) joined with the live room's showcase updates (items added since),
    without the items the live room removed; None when neither knows the stream's showcase."""
    base = loaded.served.showcase.get(stream_id)
    entries = getattr(live.room, "showcase", None) or {} if live.room is not None else {}
    if not entries:
        return base
    index = loaded.index
    added = [index[i] for i, e in entries.items() if e.get("status") != "removed" and i in index]
    removed = [index[i] for i, e in entries.items() if e.get("status") == "removed" and i in index]
    out = np.union1d(base if base is not None else np.empty(0, dtype=np.int64), np.asarray(added, dtype=np.int64))
    if removed:
        out = np.setdiff1d(out, np.asarray(removed, dtype=np.int64))
    return out.astype(np.int64, copy=False)


# ------------------------------------------------------------------------------ reasons
_ACTION_TEXT = {
    "purchase": ("因为你购买了「{t}」", "because you bought {t}"),
    "add_to_cart": ("因为你加购了「{t}」", "because you added {t} to your cart"),
    "product_click": ("因为你看过「{t}」", "because you viewed {t}"),
    "like": ("因为你点赞了「{t}」", "because you liked {t}"),
    "comment": ("因为你评论了「{t}」", "because you commented on {t}"),
    "share": ("因为你分享了「{t}」", "because you shared {t}"),
}


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _date(iso: str | None) -> tuple[str, str]:
    """``2026-11-03`` -> (``11 月 3 日``, ``Nov 3``)."""
    try:
        y, m, d = (int(x) for x in str(iso)[:10].split("-"))
        return f"{m} 月 {d} 日", f"{_MONTHS[m - 1]} {d}"
    except (ValueError, IndexError):
        return "之前", "before"


#: what the viewer did with an anchor item, in a relative clause ("你买过的「X」", "X, which you bought")
_DID = {
    "purchase": ("买过", "bought"),
    "add_to_cart": ("加购过", "added to your cart"),
    "product_click": ("看过", "viewed"),
    "like": ("点赞过", "liked"),
    "comment": ("评论过", "commented on"),
    "share": ("分享过", "shared"),
}
_DID_ANY = ("关注过", "showed interest in")


def _anchored_text(kind: str, t: str, reason: dict) -> tuple[str, str]:
    """The sentence of a reason naming an anchor item ``t``: its relation to the listed item (the
    component that scored it) and, for a history anchor, what the viewer did with it."""
    if reason.get("anchor") == "history":
        zh_did, en_did = _DID.get(reason.get("action") or "", _DID_ANY)
        if kind == "bought_together":
            return f"常和你{zh_did}的「{t}」一起买", f"often bought with {t}, which you {en_did}"
        if kind == "viewed_together":
            return f"看过你{zh_did}的「{t}」的人也看了它", f"viewers of {t}, which you {en_did}, also looked at it"
        if kind == "similar_to":
            return f"和你{zh_did}的「{t}」相似", f"similar to {t}, which you {en_did}"
        zh, en = _ACTION_TEXT.get(
            reason.get("action") or "", ("因为你关注过「{t}」", "because you showed interest in {t}")
        )
        return zh.format(t=t), en.format(t=t)  # related_to: picked from it, no relation claimed
    if kind == "bought_together":
        return f"常与「{t}」一起买", f"often bought with {t}"
    if kind == "viewed_together":
        return f"看过「{t}」的人也看了它", f"viewers of {t} also looked at it"
    if kind == "similar_to":
        return f"与「{t}」相似", f"similar to {t}"
    return f"根据你在看的「{t}」推荐", f"picked for you from {t}"  # related_to


ANCHORED_KINDS = ("bought_together", "viewed_together", "similar_to", "related_to")


def explain(reason: dict, title_of) -> dict:
    """A model reason (``shared.reco.ranker``; the hybrid's ``because_you`` / ``similar_to`` too) with its
    sentence in Chinese and English (``text_zh``, ``text_en``) and the anchor's title."""
    kind = reason.get("kind")
    out = dict(reason)
    live = explain_live(reason)
    if live is not None:  # on_stage / selling_fast / just_viewed (shared/serving/live.py)
        out.update(live)
        if isinstance(reason.get("model_reason"), dict):
            out["model_reason"] = explain(reason["model_reason"], title_of)
    elif kind in ANCHORED_KINDS and (reason.get("anchor") or kind != "similar_to"):
        t = title_of(reason.get("item"))
        zh, en = _anchored_text(str(kind), t, reason)
        out.update(item_title=t, text_zh=zh, text_en=en)
    elif kind == "because_you":  # the hybrid's history reason
        t = title_of(reason.get("item"))
        if reason.get("via") == "content":
            zh, en = _anchored_text("similar_to", t, {**reason, "anchor": "history"})
        else:
            zh, en = _ACTION_TEXT.get(
                reason.get("action") or "", ("因为你关注过「{t}」", "because you showed interest in {t}")
            )
            zh, en = zh.format(t=t), en.format(t=t)
        out.update(item_title=t, text_zh=zh, text_en=en)
    elif kind == "similar_to":  # the hybrid's context reason: only the content part is a similarity
        t = title_of(reason.get("item"))
        zh, en = _anchored_text("similar_to" if reason.get("via") == "content" else "related_to", t, reason)
        out.update(item_title=t, text_zh=zh, text_en=en)
    elif kind in ("buy_again", "buy_often"):
        d = _date(reason.get("last_purchase"))
        n = int(reason.get("times") or 0)
        if kind == "buy_often":
            out.update(
                text_zh=f"你常买 · 已买过 {n} 次，最近一次 {d[0]}",
                text_en=f"you buy this often: {n} times, last on {d[1]}",
            )
        else:
            out.update(text_zh=f"再次购买 · 你 {d[0]}买过", text_en=f"buy again: you bought it on {d[1]}")
    elif kind == "in_history":
        when = _date(reason["last_touch"]) if reason.get("last_touch") else None
        if reason.get("action") == "add_to_cart":
            out.update(
                text_zh=f"你 {when[0]}加购过，还在考虑吗" if when else "你加购过，还在考虑吗",
                text_en=f"you added it to your cart on {when[1]}" if when else "you added it to your cart",
            )
        else:
            out.update(
                text_zh=f"你 {when[0]}看过这件商品" if when else "你看过这件商品",
                text_en=f"you viewed it on {when[1]}" if when else "you viewed it",
            )
    elif kind == "taste":
        c = str(reason.get("category") or "")
        out.update(
            text_zh=f"符合你常逛的「{c}」" if c else "符合你的喜好",
            text_en=f"matches your taste in {c}" if c else "matches your taste",
        )
    elif kind == "popular_in_stream":
        out.update(_room_text(reason))
    elif kind == "trending":
        n = int(reason.get("buyers_7d") or 0)
        out.update(
            text_zh=f"近 7 天 {n} 人购买", text_en=f"bought by {n} viewer{'s' if n != 1 else ''} in the last 7 days"
        )
    elif kind == "popular" and reason.get("rank"):
        r = int(reason["rank"])
        out.update(text_zh=f"全站热销第 {r}", text_en=f"#{r} bestseller overall")
    else:
        out.update(text_zh="大家都在买", text_en="popular right now")
    return out


def _room_text(reason: dict) -> dict[str, str]:
    """``popular_in_stream``: the room's own count that scored it (orders / clicks so far or lately)."""
    m = reason.get("minutes")
    if reason.get("on_show"):
        return {"text_zh": "主播正在展示", "text_en": "on show in this room now"}
    if reason.get("orders"):
        n = int(reason["orders"])
        if m:
            return {
                "text_zh": f"本场近{m}分钟 {n} 单",
                "text_en": f"{n} order{'s' if n != 1 else ''} here in {m} minutes",
            }
        return {"text_zh": f"本场已售 {n} 单", "text_en": f"{n} sold in this room"}
    if reason.get("clicks"):
        n = int(reason["clicks"])
        if m:
            return {
                "text_zh": f"本场近{m}分钟 {n} 次点击",
                "text_en": f"{n} click{'s' if n != 1 else ''} here in {m} minutes",
            }
        return {"text_zh": f"本场 {n} 次点击", "text_en": f"{n} click{'s' if n != 1 else ''} in this room"}
    return {"text_zh": "本直播间热卖", "text_en": "popular in this stream"}


def group_repeats(items: list[dict]) -> None:
    """No sentence twice in one answer (in place): the model varies its reasons
    (``RoomRanker._list_reasons``), and what still repeats (a live reason on several items, or an item
    with no other true reason) is grouped: a later item keeps its reason with ``same_as`` (the first
    item that gave it) and points at the previous one of its group (``同第 N 件`` / ``as #N``)."""
    first: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    for pos, it in enumerate(items):
        r = it["reason"]
        key = (r.get("text_zh", ""), r.get("text_en", ""))
        if key in first:
            n = last[key]
            r.update(
                same_as=items[first[key]]["item_id"],
                text_zh=f"同第 {n + 1} 件：{key[0]}",
                text_en=f"as #{n + 1}: {key[1]}",
            )
        else:
            first[key] = pos
        last[key] = pos


_FALLBACK = {
    "personal": None,
    "context": "unknown user: scored from the session context",
    "stream": "no history or context: this stream's bestsellers",
    "global": "no history, context or known stream: global bestsellers",
}


# ------------------------------------------------------------------------------ erasure
def _erased(holder: ModelHolder, erasures: ErasureList, user_id: str | None, served: Served | None = None) -> bool:
    """True if ``user_id`` asked to be erased and the served model (``served``: an experiment arm's
    pinned version) may still hold their history (``shared.erasure``: the list is cached, re-checked
    every ``DAIHUO_ERASURE_REFRESH_S``)."""
    if user_id is None:
        return False
    if served is None:
        cur = holder.get()
        served = cur.served if cur is not None else None
    return erasures.refuses(
        user_id, served.version if served else None, (served.meta or {}).get("created_at") if served else None
    )


# ------------------------------------------------------------------------------ service
class Recommender:
    def __init__(self, holder: ModelHolder, live: LiveSource | None = None):
        self.holder = holder
        self.erasures = ErasureList(holder.registry.store)  # read on the first personal request
        self.live = live if live is not None else LiveSource()
        self.live.warm()

    def handle(self, method: str, args: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None) -> Answer:
        t0 = time.perf_counter()
        if method not in ("GET", "POST"):
            return error(405, f"method {method} not allowed", headers={"Allow": "GET, POST"}, allowed=["GET", "POST"])
        if args is None:
            return error(400, "body: expected a JSON object", param="body")
        cfg = settings()  # once per request (a fingerprint of the DAIHUO_* environment each call)
        try:
            p = parse_params(args, cfg)
        except BadParam as exc:
            return error(400, str(exc), param=exc.param)
        viewer = p.user_id  # the experiment's unit (assigned whether or not the identity is verified)
        # personal results only for a viewer who proves to be user_id (shared/identity.py); otherwise
        # the model is asked as for a stranger: stream / context / global, no reason from a history
        ident = identity.verifier().check(p.user_id, headers)
        # a viewer who asked to be forgotten (docs/privacy.md) is answered as a stranger
        if ident.personal and _erased(self.holder, self.erasures, p.user_id):
            ident = dataclasses.replace(ident, personal=False, reason="erased")
        if p.user_id is not None and not ident.personal:
            p = dataclasses.replace(p, user_id=None)
        loaded = self.holder.get()
        if loaded is None:
            retry = max(1, int(math.ceil(min(self.holder.refresh_s, 5.0))))
            return error(
                503,
                "no model has been published yet (models/LATEST.json missing or unloadable)",
                retry_after=retry,
                detail=self.holder.last_error,
                retry_after_s=retry,
            )
        exp, arm, pinned, arm_status = self.holder.arm_for(viewer, loaded)
        if pinned is not loaded:  # an arm's own (older) version: the erasure check is against it
            if ident.personal and _erased(self.holder, self.erasures, p.user_id, pinned.served):
                ident = dataclasses.replace(ident, personal=False, reason="erased")
                p = dataclasses.replace(p, user_id=None)
            loaded = pinned
        recipe = arm.recipe if arm is not None and arm_status is None else "model"
        # the popular recipe asks the model as for a stranger: the stream's / global bestsellers
        q = dataclasses.replace(p, user_id=None, context=[]) if recipe == "popular" else p
        served = loaded.served
        allowed = None
        note = None
        # the live state: one room read + one viewer read (a verified viewer only), within the deadline
        live = self.live.read(q.stream_id, q.user_id)
        if p.showcase_only and p.stream_id is not None:  # item positions (sorted, unique)
            allowed = current_showcase(loaded, p.stream_id, live)
            if allowed is None and p.showcase_explicit:
                allowed = np.empty(0, dtype=np.int64)
                note = f"no showcase known for stream {p.stream_id}"
            elif allowed is None:
                note = f"no showcase known for stream {p.stream_id}: not restricted to it"
        t1 = time.perf_counter()
        rec = self._rank(loaded, q, allowed, live, cfg)
        t2 = time.perf_counter()
        index, titles = loaded.index, served.titles

        def title_of(item_id):
            i = index.get(item_id)
            return str(titles[i]) if i is not None and i < titles.size else str(item_id)

        raw = rec["items"]
        # scores and parts to 6 decimals in one numpy pass (Python's round(x, 6) is a correctly rounded
        # decimal conversion: ~0.4 µs a value, 90 values an answer)
        flat = [x for it in raw for x in (it["score"], *it["parts"].values())]
        six = iter(np.round(np.asarray(flat, dtype=np.float64), 6).tolist() if flat else ())
        items = [
            {
                "item_id": it["item_id"],
                "title": title_of(it["item_id"]),
                "score": next(six),
                "parts": {k: next(six) for k in it["parts"]},
                "reason": explain(it["reason"], title_of),
            }
            for it in raw
        ]
        group_repeats(items)
        if exp is not None and arm is not None and arm_status is None:
            rid = experiments.rec_id(exp.experiment, arm.name)
        else:
            rid = experiments.rec_id()
        body = {
            "rec_id": rid,
            "experiment": None
            if arm is None
            else {
                "id": exp.experiment if exp is not None else None,
                "model_version": served.version,
                "arm": arm.name,
                "recipe": recipe,
                "counted": arm_status is None,
                **({"status": arm_status} if arm_status else {}),
            },
            "user_id": p.user_id,
            "stream_id": p.stream_id,
            "k": p.k,
            "items": items,
            "strategy": rec["strategy"],
            "fallback": _FALLBACK.get(rec["strategy"]),
            "model_version": served.version,
            "live": live.to_answer(),
            "timing_ms": {
                "live": round(live.ms, 3),
                "model": round((t2 - t1) * 1e3, 3),
                "total": round((time.perf_counter() - t0) * 1e3, 3),
            },
        }
        if note:
            body["note"] = note
        body.update(personal=ident.personal, identity=ident.reason)
        return json_answer(200, body, {"X-Model-Version": served.version, "X-Rec-Id": rid})

    def _rank(self, loaded: Loaded, p: Params, allowed, live: LiveState, cfg: Settings | None = None) -> dict[str, Any]:
        """The model's answer with the live state merged in (``live`` unused: the batch answer):
        the session's clicks join the context, the room's last minutes are the ranker's room counts,
        sold-out items are excluded, the item on stage is put first (when it passes the request's
        filters) and the live reasons are set."""
        model = loaded.served.model
        kw: dict[str, Any] = {}
        if hasattr(model, "repeat_"):  # RoomRanker: the request time drives "due" (buy again)
            kw["now"] = max(time.time(), model.reference_day * 86400.0)
            cfg = cfg or settings()  # the diversity control (docs/recommendations.md, "Diversity")
            kw["max_per_category"] = (
                p.max_per_category if p.max_per_category is not None else cfg.recommend_max_per_category
            )
            kw["near_duplicate"] = cfg.recommend_near_duplicate or None
        context = list(p.context)
        if live.session is not None:
            context += [i for i in live.session_clicks() if i not in context]
            context = context[:MAX_CONTEXT]
        if live.room is not None:
            if live.sold_out:
                kw["exclude_items"] = live.sold_out
            if loaded.room_rows is not None and p.stream_id is not None:  # a RoomRanker takes room counts
                kw["room"] = live.room_counts(loaded.batch_room(p.stream_id))
        stage = live.on_stage["item_id"] if live.on_stage else None
        if stage is not None and (stage in live.sold_out or stage not in loaded.index):
            stage = None  # sold out, or unknown to the model (no title, no score): not pinned
        if stage is not None and allowed is not None:
            pos = loaded.index[stage]
            j = int(np.searchsorted(allowed, pos))
            if j >= allowed.size or allowed[j] != pos:
                stage = None  # showcase_only and not on the showcase the model knows
        query = dict(
            context_items=context or None,
            stream_id=p.stream_id,
            exclude_purchased=p.exclude_purchased,
            filter_seen=p.filter_seen,
            category=p.category,
            price_range=(p.min_price, p.max_price) if (p.min_price is not None or p.max_price is not None) else None,
            **kw,
        )
        rec = model.recommend(p.user_id, p.k, allowed_idx=allowed, **query)
        if stage is not None:
            items = rec["items"]
            mine = [it for it in items if it["item_id"] == stage]
            if not mine:  # not in the top k: scored alone, under the same filters (empty: filtered out)
                mine = model.recommend(p.user_id, 1, allowed_items=[stage], **query)["items"][:1]
            if mine:  # (none: the request's filters refuse it: category, price, bought, seen)
                rec["items"] = (mine + [it for it in items if it["item_id"] != stage])[: p.k]
        if live.used:
            relabel(rec["items"], live)
        return rec
