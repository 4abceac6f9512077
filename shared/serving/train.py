"""The training job: clean/ window -> RoomRanker (the served recipe) -> models/<version>/ -> (maybe) LATEST.

Steps (``run_train``):

1. read the window (``data.read_training_data``: last ``window_days`` of event ``ts``, anchored at the
   newest event, + the catalog) and derive the **version id** (``registry.version_id``) from a hash of
   the input objects (keys + generations), the parameters and the code version. Same input -> same version;
2. if ``models/<version>/meta.json`` exists (a redelivered event), do not fit again: finish what a
   crashed attempt may have left (move LATEST if the recorded decision says so and LATEST has not
   moved since), and publish the same message again;
3. once per run, the item index, the content neighbours and the showcases; then the gate
   (``shared.serving.gate.run_gate``): on a time-based holdout (the last ``holdout_frac`` of purchases)
   the candidate recipe (``shared.reco.recipe.fit_recipe`` before the cut), the CURRENT version's recipe
   refitted on the same part and the baselines answer the same queries (room and catalogue, next
   purchase / add-to-cart, all items and new items), with paired bootstrap intervals;
4. the served model is the recipe **refitted on the full window** (the newest part of a live-stream
   evening is the most valuable: new items, the current streams), written as ``arrays.npz`` + ``meta.json``;
   its CF part's item-item cosine neighbours are fitted in process, or, with
   ``DAIHUO_TRAIN_NEIGHBOURS=precomputed``, taken from the Beam job's lists (``shared.neighbour_lists``)
   when they cover the training data (else fitted in process, logged); ``meta.neighbours`` says which;
5. promotion (``Registry.try_promotion``): ``LATEST.json`` moves (compare-and-swap on its
   generation) iff the candidate beats the best baseline on the primary block (room / purchase / all
   NDCG@10), does not lose more than ``tolerance`` to the current model and is not trained on older
   data than it (``gate.older_data``) (the first model always, flagged when below a baseline). When
   another run moved LATEST since the decision (two clean runs' notifications train concurrently and
   both decide "first model"), the decision is stale: the gate runs again against the version now
   serving (the candidate's holdout fit done again once), the new decision replaces the recorded one in
   ``meta.json`` (the old ones kept under ``decisions``), and the swap is tried again, at most
   ``promote_retries`` times. A promoted version is marked (``decision.promoted_at``) so that a
   redelivery after it was replaced never promotes it a second time;
6. publish ``model-published`` with ``{version, promoted, reason, metrics}``.

Any exception propagates (the function answers 500, Pub/Sub retries, then dead-letters).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shared import layout
from shared import neighbour_lists as nl
from shared.action_weights import DEFAULT_ACTION_WEIGHTS
from shared.adapters.storage import PreconditionFailed
from shared.log import get_logger
from shared.reco import HybridRecommender
from shared.reco.content import ContentModel
from shared.reco.ranker import RoomRanker
from shared.reco.recipe import fit_recipe, merge_recipe
from shared.serving.data import TrainingData, read_training_data
from shared.serving.gate import GateOutcome, run_gate
from shared.serving.registry import Registry, code_version, encode_arrays, now_iso, showcase_extras, version_id
from shared.settings import settings

log = get_logger("train")


@dataclass
class TrainConfig:
    window_days: float = field(default_factory=lambda: settings().train_window_days)
    holdout_frac: float = field(default_factory=lambda: settings().train_holdout_frac)
    tolerance: float = field(default_factory=lambda: settings().promote_tolerance)
    strict: bool = field(default_factory=lambda: settings().gate_strict)
    promote_retries: int = field(default_factory=lambda: settings().promote_retries)
    k: int = 10
    max_eval_users: int = field(default_factory=lambda: settings().eval_max_users)
    half_life_days: float = field(default_factory=lambda: settings().train_half_life_days)
    params: dict = field(default_factory=lambda: dict(settings().train_params))  # recipe overrides (DEFAULT_RECIPE)
    topic: str = field(default_factory=lambda: settings().model_topic)
    #: where the served fit's CF neighbours come from: "in_process" or "precomputed" (the Beam job's lists)
    neighbours: str = field(default_factory=lambda: settings().train_neighbours)
    #: the served fit in a forked child process beside the gate (``_ServedFit``)
    parallel_fit: bool = field(default_factory=lambda: settings().train_parallel_fit)

    def version_spec(self) -> dict[str, Any]:
        """What, besides the inputs and the code, decides the trained version (``registry.version_id``)."""
        return {
            "params": self.params,
            "window_days": self.window_days,
            "holdout_frac": self.holdout_frac,
            "k": self.k,
            "half_life_days": self.half_life_days,
            "max_eval_users": self.max_eval_users,
            "gate": [self.tolerance, self.strict],
        }


def catalog_items(catalog: pd.DataFrame) -> pd.DataFrame | None:
    return catalog[["item_id", "title", "description", "category", "price"]] if len(catalog) else None


def build_showcases(events: pd.DataFrame, catalog: pd.DataFrame) -> dict[str, list[str]]:
    """Showcase per stream = catalog ``stream_ids`` ∪ items with events in that stream in the window."""
    showcases: dict[str, set] = {}
    if len(catalog) and "stream_ids" in catalog:
        for item, sids in zip(catalog["item_id"], catalog["stream_ids"]):
            for s in sids if sids is not None else ():
                showcases.setdefault(s, set()).add(item)
    if "stream_id" in events:
        seen = events.loc[events["stream_id"].notna() & events["item_id"].notna(), ["stream_id", "item_id"]]
        seen = seen.drop_duplicates()  # (stream, item) pairs first: per-row strings are never built
        for s, it in zip(seen["stream_id"].astype(str).tolist(), seen["item_id"].astype(str).tolist()):
            showcases.setdefault(s, set()).add(it)
    return {k: sorted(v) for k, v in showcases.items()}


# ------------------------------------------------------------------------------------- run
@dataclass
class TrainResult:
    version: str | None
    promoted: bool
    reason: str
    metrics: dict
    reused: bool = False
    seconds: float = 0.0
    #: per phase (read, prepare, evaluate, fit, encode, write = version + promotion (+ re-gates) + publish):
    #: {"wall": {phase: s}, "cpu": {phase: s}, "peak_rss_mib": {phase: MiB}, "served_fit": {...}} (process CPU:
    #: every thread of the process; with the served fit in a child, ``fit`` / ``encode`` CPU include the
    #: child's, ``fit`` wall is the parent's wait for it, ``served_fit.times`` the child's own [wall, CPU])
    phases: dict = field(default_factory=dict)
    #: where the served fit's CF neighbours came from (``meta.neighbours``; empty on a redelivery / skip)
    neighbours: dict = field(default_factory=dict)

    def message(self) -> dict:
        return {
            "version": self.version,
            "promoted": self.promoted,
            "reason": self.reason,
            "metrics": self.metrics,
            "redelivery": self.reused,
        }


def recipe_params(cfg: TrainConfig) -> dict:
    """The served recipe's parameters: ``DEFAULT_RECIPE`` updated by ``cfg.params``
    (``DAIHUO_TRAIN_PARAMS``)."""
    return merge_recipe(cfg.params)


# ------------------------------------------------------------------------------------- steps
@dataclass
class _Prepared:
    """Fitted once per run and shared by the gate's candidate and the served model: the item index,
    the content neighbours (they depend on the catalogue only), the showcases and the recipe."""

    items: pd.DataFrame | None
    recipe: dict
    item_ids: np.ndarray
    content: ContentModel | None
    showcases: dict[str, list[str]]
    seconds: float


def _nothing_to_train(data: TrainingData) -> bool:
    return bool(data.events.empty or data.events["item_id"].notna().sum() == 0)


def _skip(data: TrainingData, bus, cfg: TrainConfig) -> TrainResult:
    res = TrainResult(None, False, "no clean events with items in the window; nothing to train", {})
    log.warning("train skipped", extra={"reason": res.reason, "inputs": len(data.inputs)})
    if bus is not None:
        bus.publish(cfg.topic, json.dumps(res.message()).encode(), version="", promoted="false")
    return res


def _prepare(data: TrainingData, cfg: TrainConfig) -> _Prepared:
    t0 = time.perf_counter()
    items = catalog_items(data.catalog)
    recipe = recipe_params(cfg)
    item_ids = HybridRecommender.catalogue_ids(data.events, items)
    content = HybridRecommender(**recipe["base"]).fit_content(item_ids, items)
    showcases = build_showcases(data.events, data.catalog)
    return _Prepared(items, recipe, item_ids, content, showcases, time.perf_counter() - t0)


def _precomputed_neighbours(store, data: TrainingData, prep: _Prepared, cfg: TrainConfig) -> tuple[Any, dict]:
    """The served fit's CF neighbours from the Beam job's newest lists when they cover the training data
    (``shared.neighbour_lists.mismatch``: the same clean objects, window and definition), mapped into
    the model's item index; else ``(None, note)`` and the fit computes them in process."""
    note: dict[str, Any] = {"setting": cfg.neighbours, "source": "in_process"}
    if cfg.neighbours != "precomputed":
        return None, note
    t0 = time.perf_counter()

    def fallback(why: str) -> tuple[None, dict]:
        log.warning("precomputed neighbours not used: fitting them in process", extra={"reason": why})
        return None, {**note, "reason": why}

    spec = HybridRecommender(**prep.recipe["base"]).cosine_knn(len(prep.item_ids))
    if spec is None:
        base = prep.recipe["base"]
        return fallback(
            f"the recipe's CF part (cf={base.get('cf')!r}, {base.get('cf_params')}, {len(prep.item_ids)} items) "
            "is not the top-N cosine the lists hold"
        )
    meta, why = nl.latest(store)
    if meta is None:
        return fallback(why)
    end = pd.Timestamp(data.window["end"])
    stale = nl.mismatch(
        meta,
        inputs=[i for i in data.inputs if i["key"].startswith(layout.CLEAN)],
        window_end_us=int(end.value // 1000),
        window_start_ns=int(pd.Timestamp(data.window["start"]).value),
        window_days=float(data.window["days"]),
        half_life_days=prep.recipe["half_life_days"],
        action_weights=dict(DEFAULT_ACTION_WEIGHTS),
        neighbours=spec["neighbours"],
        min_cooc=spec["min_cooc"],
    )
    if stale:
        return fallback(stale)
    arrays = nl.load(store, meta)
    ev_items = data.events["item_id"]
    have = (
        ev_items.cat.remove_unused_categories().cat.categories.astype(str)
        if isinstance(ev_items.dtype, pd.CategoricalDtype)
        else pd.Index(ev_items.dropna().astype(str).unique())
    )
    if not np.array_equal(np.sort(np.asarray(have, dtype=str)), arrays["item_ids"]):
        return fallback(f"lists {meta['id']}: their item ids are not the items of the training events")
    n_items = len(prep.item_ids)
    n = int(max(min(spec["neighbours"], max(n_items - 1, 1)), 1))  # (the in-process kernel's bound)
    indptr, indices, values = nl.select(arrays, prep.item_ids, n)
    W = sp.csr_matrix((values, indices, indptr), shape=(n_items, n_items))
    note = {
        **note,
        "source": "precomputed",
        "lists": meta["id"],
        "lists_created_at": meta.get("created_at"),
        "model": spec["model"],
        "neighbours": n,
        "nnz": int(W.nnz),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("using precomputed neighbours", extra={k: v for k, v in note.items() if k != "setting"})
    return W, note


def _fit_served(data: TrainingData, prep: _Prepared, cf_neighbours=None) -> tuple[RoomRanker, float]:
    """The served model: the same recipe on the full window (its newest part matters most)."""
    t0 = time.perf_counter()
    end = pd.Timestamp(data.window["end"])
    model = fit_recipe(
        data.events,
        prep.items,
        end,
        prep.recipe,
        content=prep.content,
        item_ids=prep.item_ids,
        cf_neighbours=cf_neighbours,
    )
    return model, time.perf_counter() - t0


def _serving_extras(model: RoomRanker, data: TrainingData, showcases: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Item titles (per model item index) and the showcases, stored beside the model's arrays."""
    titles = (
        pd.Series(data.catalog["title"].astype(str).to_numpy(), index=data.catalog["item_id"])
        if len(data.catalog)
        else pd.Series(dtype=str)
    )
    extras = {
        "item_title": np.array(titles.reindex(model.item_ids_).fillna("").astype(str).tolist() or [""], dtype=str)[
            : len(model.item_ids_)
        ]
    }
    extras.update(showcase_extras(model.item_ids_, showcases))
    return extras


def _version_meta(
    version: str,
    cfg: TrainConfig,
    data: TrainingData,
    prep: _Prepared,
    gate: GateOutcome,
    model: dict[str, Any],
    timing: dict[str, float],
    trigger: dict | None,
    arrays_bytes: int,
    neighbours: dict | None = None,
) -> dict[str, Any]:
    """``models/<version>/meta.json``: what was trained on what, the evaluation and the decision."""
    return {
        "version": version,
        "created_at": now_iso(),
        "code_version": code_version(),
        "params": prep.recipe,
        "config": {k: v for k, v in asdict(cfg).items() if k != "params"},
        "window": data.window,
        "inputs": data.inputs,
        "data": {
            "events": int(len(data.events)),
            "users": model["users"],
            "items": model["items"],
            "catalog_items": int(len(data.catalog)),
            "streams": len(prep.showcases),
        },
        "metrics": gate.metrics,
        "evaluation": gate.evaluation,
        "metrics_note": "holdout of the last holdout_frac of purchases (global-time cut); the candidate is the "
        "recipe fitted before the cut, the current model's recipe refitted on the same part; "
        "evaluation.blocks: every protocol with all baselines and paired bootstrap intervals; "
        "metrics.gate: what promotion compared. The served model is the recipe refitted on the "
        "full window.",
        "decision": gate.decision(),
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
        "trigger": trigger or {},
        "arrays_bytes": arrays_bytes,
        "neighbours": neighbours or {"setting": "in_process", "source": "in_process"},
        "model": model["meta"],
    }


def _redecide(reg: Registry, version: str, gate: GateOutcome) -> dict:
    """Record a re-gate's decision in ``meta.json`` (compare-and-swap on its generation; the decisions
    it replaces are kept under ``decisions``). A twin that recorded a decision against the same LATEST
    generation first wins: its record is used."""
    while True:
        meta, gen = reg.read_meta_with_generation(version)
        if meta["decision"].get("latest_generation") == gate.latest_generation:
            return meta
        old = {k: v for k, v in meta["decision"].items()}
        new = {
            **meta,
            "metrics": gate.metrics,
            "evaluation": gate.evaluation,
            "decision": gate.decision(),
            "decisions": [*meta.get("decisions", []), old],
        }
        try:
            reg.rewrite_meta(version, new, gen)
            return new
        except PreconditionFailed:
            continue


def _mark_promoted(reg: Registry, version: str) -> None:
    """``decision.promoted_at`` from LATEST (best effort: a lost swap means a twin marks it)."""
    try:
        meta, gen = reg.read_meta_with_generation(version)
        pointer, _ = reg.latest()
        if meta["decision"].get("promoted_at") or not pointer or pointer.get("version") != version:
            return
        meta["decision"]["promoted_at"] = pointer.get("promoted_at")
        reg.rewrite_meta(version, meta, gen)
    except PreconditionFailed:
        pass


def _settle(
    reg: Registry, version: str, meta: dict, cfg: TrainConfig, regate: Callable[[], GateOutcome]
) -> tuple[bool, str, dict, int]:
    """Carry out the recorded decision; on a stale one (LATEST moved since) re-run the gate against the
    version now serving and try again, at most ``cfg.promote_retries`` times.
    Returns ``(promoted, reason, meta, re-gates)``."""
    regates = 0
    while True:
        status, reason = reg.try_promotion(version, meta)
        if status in ("promoted", "serving"):
            if not meta["decision"].get("promoted_at"):
                _mark_promoted(reg, version)
            return True, reason, meta, regates
        if status == "declined":
            return False, reason, meta, regates
        if meta["decision"].get("promoted_at"):  # it served once and was replaced: never again
            pointer, _ = reg.latest()
            return (
                False,
                f"not promoted again: it served from {meta['decision']['promoted_at']} until "
                f"{pointer and pointer.get('version')} replaced it",
                meta,
                regates,
            )
        if regates >= cfg.promote_retries:
            log.warning("gave up re-gating", extra={"version": version, "regates": regates})
            return False, f"{reason} (gave up after {regates} re-gates)", meta, regates
        regates += 1
        log.info("LATEST moved since the decision: gating again", extra={"version": version, "regate": regates})
        meta = _redecide(reg, version, regate())


def _finish(
    reg: Registry,
    version: str,
    meta: dict,
    bus,
    cfg: TrainConfig,
    t0: float,
    reused: bool,
    regate: Callable[[], GateOutcome],
) -> TrainResult:
    """Carry out the recorded decision (``_settle``); log and publish the outcome."""
    promoted, reason, meta, regates = _settle(reg, version, meta, cfg, regate)
    res = TrainResult(version, promoted, reason, meta["metrics"], reused, time.perf_counter() - t0)
    log.info(
        "train done",
        extra={
            "version": version,
            "promoted": promoted,
            "reason": reason,
            "reused": reused,
            "regates": regates,
            "metrics": meta["metrics"],
            "seconds": round(res.seconds, 3),
        },
    )
    if bus is not None:
        bus.publish(
            cfg.topic,
            json.dumps(res.message(), ensure_ascii=False).encode(),
            version=version or "",
            promoted=str(promoted).lower(),
        )
    return res


def _gate(reg: Registry, data: TrainingData, prep: _Prepared, cfg: TrainConfig, cache: dict) -> GateOutcome:
    return run_gate(
        reg,
        data.events,
        prep.items,
        prep.recipe,
        k=cfg.k,
        holdout_frac=cfg.holdout_frac,
        max_queries=cfg.max_eval_users,
        tolerance=cfg.tolerance,
        strict=cfg.strict,
        inputs=data.inputs,
        window=data.window,
        candidate_cache=cache,
        content=prep.content,
        item_ids=prep.item_ids,
    )


def _model_info(model: RoomRanker) -> dict[str, Any]:
    """What ``meta.json`` records of the served model (``_version_meta``)."""
    return {"users": int(len(model.user_ids_)), "items": int(model.n_items_), "meta": model.meta}


def _fit_and_encode(data: TrainingData, prep: _Prepared, W) -> tuple[dict, bytes, dict]:
    """The served fit and its arrays: ``(model info, npz bytes, {"fit"|"encode": [wall s, CPU s]})``."""
    t, c = time.perf_counter(), time.process_time()
    model, _ = _fit_served(data, prep, W)
    t1, c1 = time.perf_counter(), time.process_time()
    blob = encode_arrays(model, _serving_extras(model, data, prep.showcases))
    t2, c2 = time.perf_counter(), time.process_time()
    return _model_info(model), blob, {"fit": [t1 - t, c1 - c], "encode": [t2 - t1, c2 - c1]}


def _parallel_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _no_compile_in_progress():
    """numba's compiler lock, held around a fork: a child forked while another thread of this worker
    compiles (a previous train run's gate, on a cold numba cache) inherits the lock held by a thread it
    does not have, and its first compile waits for ever (seen: ``make demo`` on a fresh clone). Held by
    the forking thread instead, the child owns it (an RLock; the forking thread is the child's thread)
    and compiles. A null context without numba."""
    import contextlib

    try:
        from numba.core.compiler_lock import global_compiler_lock
    except Exception:  # pragma: no cover - no numba
        return contextlib.nullcontext()
    return global_compiler_lock


class _ServedFit:
    """The served fit (the recipe on the full window) and its encoding, in a forked child process while
    the parent runs the gate: the two do not depend on each other, and the train function has two CPUs
    (infra/main.tf) of which the gate, single-threaded Python and numpy, uses one. The child sends back
    JSON (the model's record) and the npz bytes over a pipe (no pickle) and exits; the parent writes.

    In process instead (``parallel=False``, ``DAIHUO_TRAIN_PARALLEL_FIT=false``, one CPU, no ``fork``),
    and as the fallback when the child fails or dies (logged, ``phases["served_fit"]["mode"]`` says
    which): the same model either way (tests/test_train.py compares the arrays). Memory: the child shares
    the parent's pages until either writes them; at 10M events the two together peak at 5.7 GiB
    (docs/serving.md §1; the function's memory in infra/topology.json is sized for it). A run whose gate
    raises kills its child (``cancel``)."""

    def __init__(self, data: TrainingData, prep: _Prepared, W, parallel: bool):
        self.data, self.prep, self.W = data, prep, W
        self.proc = self.conn = None
        self.mode, self.reason = "in_process", "" if parallel else "parallel fit off"
        if parallel and _parallel_cpus() < 2:
            self.reason = "one CPU"
        elif parallel:
            import multiprocessing as mp

            try:
                ctx = mp.get_context("fork")
            except ValueError:
                self.reason = "no fork on this platform"
            else:
                recv, send = ctx.Pipe(duplex=False)
                self.proc = ctx.Process(target=self._child, args=(send,), name="served-fit", daemon=True)
                with _no_compile_in_progress():
                    self.proc.start()
                send.close()
                self.conn, self.mode = recv, "child"

    def _child(self, conn) -> None:  # runs in the forked process
        try:
            info, blob, times = _fit_and_encode(self.data, self.prep, self.W)
            head = {"ok": True, "info": info, "times": times, "peak_rss_mib": _peak_rss_mib()}
            conn.send_bytes(json.dumps(head).encode())
            conn.send_bytes(blob)
        except BaseException as exc:  # reported to the parent, which fits in process
            conn.send_bytes(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
        finally:
            conn.close()

    def cancel(self) -> None:
        """Stop the child (the run failed before it needed the model)."""
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            self.proc.join(5)

    def result(self) -> tuple[dict, bytes, dict]:
        """``(model info, npz bytes, report)``; waits for the child, or fits here."""
        if self.conn is not None:
            try:
                head = json.loads(self.conn.recv_bytes())
                if not head.get("ok"):
                    raise RuntimeError(head.get("error"))
                blob = self.conn.recv_bytes()
                if self.proc is not None:
                    self.proc.join(30)
                report = {"mode": "child", "times": head["times"], "child_peak_rss_mib": head["peak_rss_mib"]}
                return head["info"], blob, report
            except (EOFError, OSError, RuntimeError, ValueError) as exc:
                code = self.proc.exitcode if self.proc is not None else None
                self.reason = f"the child failed ({exc or type(exc).__name__}; exit code {code})"
                log.warning("served fit: the child process failed, fitting in process", extra={"reason": self.reason})
                if self.proc is not None and self.proc.is_alive():
                    self.proc.kill()
            finally:
                self.conn.close()
                if self.proc is not None:
                    self.proc.join(5)
        info, blob, times = _fit_and_encode(self.data, self.prep, self.W)
        return info, blob, {"mode": "in_process", "reason": self.reason, "times": times}


def release_memory() -> None:
    """Hand freed memory back to the system between phases: the baselines' per-frame index (a class
    cache, else kept by a warm instance until its next run), then a garbage collection, glibc's
    ``malloc_trim`` and arrow's pool. The gate frees most of what it allocates, but glibc keeps the freed
    chunks in its heap (its mmap threshold grows to 32 MiB after large frees, so mid-size arrays come
    from the heap): at 10M events 1.2 GiB of a 3.0 GiB resident set after the gate, which the served fit's
    large arrays, mmapped, do not reuse (bench_train's peak RSS column). Elsewhere than glibc: the
    collection only."""
    import ctypes
    import gc

    import pyarrow as pa

    from shared.reco import protocol

    protocol.release_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    pa.default_memory_pool().release_unused()


def _peak_rss_mib() -> float:
    """The process's peak resident set so far (``ru_maxrss``: KiB on Linux), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Phases:
    """Wall and process-CPU seconds per phase of one run (``lap(name)`` closes the phase), and the
    process's peak resident set at the end of each phase (``peak_rss_mib``: the high-water mark so far,
    so the first phase where it jumps is the one that needed the memory)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self._t, self._c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.wall[name] = self.wall.get(name, 0.0) + t - self._t
        self.cpu[name] = self.cpu.get(name, 0.0) + c - self._c
        self.rss[name] = _peak_rss_mib()
        self._t, self._c = t, c

    def as_dict(self) -> dict:
        return {
            "wall": {k: round(v, 3) for k, v in self.wall.items()},
            "cpu": {k: round(v, 3) for k, v in self.cpu.items()},
            "peak_rss_mib": {k: round(v, 1) for k, v in self.rss.items()},
        }


# ------------------------------------------------------------------------------------- run
def run_train(store, bus=None, cfg: TrainConfig | None = None, trigger: dict | None = None) -> TrainResult:
    """The steps of the module docstring: read -> version id (a redelivery: finish it) -> prepare ->
    gate -> served fit -> write the version -> promote and publish."""
    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    reg = Registry(store)
    clock = _Phases()
    data = read_training_data(store, cfg.window_days)
    clock.lap("read")
    if _nothing_to_train(data):
        return _skip(data, bus, cfg)
    if "event_id" in data.events:
        # the fits and the gate never read an event's id, and every row subset of the frame they take
        # (dozens: the label windows, each type's rows, the holdout's part) would copy 10M of them
        # (arrow strings: the dearest column to take, ~1.7 s per run at 10M events)
        data.events = data.events.drop(columns=["event_id"])
    version = version_id(data.inputs, data.window.get("end"), cfg.version_spec())
    cache: dict = {}  # the candidate's holdout fit: shared by one gate's blocks, then by re-gates (refitted once)
    prepared: list[_Prepared] = []

    def regate() -> GateOutcome:  # against the version serving now (LATEST moved since the decision)
        if not prepared:
            prepared.append(_prepare(data, cfg))
        return _gate(reg, data, prepared[0], cfg, cache)

    if reg.exists(version):
        log.info("version already written (redelivery); not fitting again", extra={"version": version})
        res = _finish(reg, version, reg.read_meta(version), bus, cfg, t0, True, regate)
        clock.lap("write")
        res.phases = clock.as_dict()
        return res
    prep = _prepare(data, cfg)
    prepared.append(prep)
    clock.lap("prepare")
    W, neighbours = _precomputed_neighbours(store, data, prep, cfg)
    if cfg.neighbours == "precomputed":
        clock.lap("neighbours")
    served = _ServedFit(data, prep, W, cfg.parallel_fit)  # a child process fits it meanwhile (or below)
    try:
        gate = _gate(reg, data, prep, cfg, cache)
    except BaseException:
        served.cancel()
        raise
    # the candidate's holdout fit is not kept for a re-gate (the rare run whose LATEST moved meanwhile
    # fits it again): 0.24 GiB at 10M events, held through the served fit's peak
    cache.clear()
    release_memory()
    clock.lap("evaluate")
    model, blob, served_report = served.result()
    del served, W
    release_memory()
    clock.lap("fit")
    (_, fit_c), (enc_w, enc_c) = served_report["times"]["fit"], served_report["times"]["encode"]
    if served_report["mode"] == "child":  # wall: the parent's wait; CPU: the child's too
        clock.wall["encode"], clock.cpu["encode"] = 0.0, enc_c
        clock.cpu["fit"] += fit_c
    else:  # the lap held both
        clock.wall["encode"], clock.cpu["encode"] = enc_w, enc_c
        clock.wall["fit"], clock.cpu["fit"] = clock.wall["fit"] - enc_w, clock.cpu["fit"] - enc_c
    clock.rss["encode"] = clock.rss["fit"]
    timing = {**clock.wall, "content": prep.seconds}
    meta = _version_meta(version, cfg, data, prep, gate, model, timing, trigger, len(blob), neighbours)
    meta["cpu_s"] = {k: round(v, 3) for k, v in clock.cpu.items()}
    meta["served_fit"] = _rounded(served_report)
    written = reg.write_version(version, blob, meta)
    if not written:  # a twin committed it first: use its record
        meta = reg.read_meta(version)
    res = _finish(reg, version, meta, bus, cfg, t0, not written, regate)
    clock.lap("write")
    res.phases = {**clock.as_dict(), "served_fit": meta["served_fit"]}
    res.neighbours = meta.get("neighbours", {})
    return res


def _rounded(x):
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return round(x, 3) if isinstance(x, float) else x
