"""The training job: clean/ window -> RoomRanker (the served recipe) -> models/<version>/ -> (maybe) LATEST.

Steps (``run_train``):

1. read the window (``data.read_training_data``: last ``window_days`` of event ``ts``, anchored at the
   newest event, + the catalog) and derive the **version id** from a hash of the input objects
   (keys + generations), the parameters and the code version. Same input -> same version;
2. if ``models/<version>/meta.json`` exists (a redelivered event), do not fit again: finish what a
   crashed attempt may have left (move LATEST if the recorded decision says so and LATEST has not
   moved since), and publish the same message again;
3. the gate (``shared.serving.gate``): on a time-based holdout (the last ``holdout_frac`` of purchases)
   the candidate recipe (``shared.reco.recipe.fit_recipe`` before the cut), the CURRENT version's recipe
   refitted on the same part and the baselines answer the same queries (room and catalogue, next
   purchase / add-to-cart, all items and new items), with paired bootstrap intervals;
4. the served model is the recipe **refitted on the full window** (the newest part of a live-stream
   evening is the most valuable: new items, the current streams), written as ``arrays.npz`` + ``meta.json``;
5. promotion: ``LATEST.json`` moves (compare-and-swap on its generation) iff the candidate beats the
   best baseline on the primary block (room / purchase / all NDCG@10) and does not lose more than
   ``tolerance`` to the current model (the first model always, flagged when below a baseline);
6. publish ``model-published`` with ``{version, promoted, reason, metrics}``.

Any exception propagates (the function answers 500, Pub/Sub retries, then dead-letters).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.log import get_logger
from shared.reco import HybridRecommender
from shared.reco.recipe import fit_recipe, merge_recipe
from shared.serving.data import TrainingData, read_training_data
from shared.serving.gate import current_factory, decide, evaluate_candidate
from shared.serving.registry import Registry, encode_arrays, showcase_extras
from shared.settings import settings

log = get_logger("train")


@dataclass
class TrainConfig:
    window_days: float = field(default_factory=lambda: settings().train_window_days)
    holdout_frac: float = field(default_factory=lambda: settings().train_holdout_frac)
    tolerance: float = field(default_factory=lambda: settings().promote_tolerance)
    strict: bool = field(default_factory=lambda: settings().gate_strict)
    k: int = 10
    max_eval_users: int = field(default_factory=lambda: settings().eval_max_users)
    half_life_days: float = field(default_factory=lambda: settings().train_half_life_days)
    params: dict = field(default_factory=lambda: dict(settings().train_params))  # recipe overrides (DEFAULT_RECIPE)
    topic: str = field(default_factory=lambda: settings().model_topic)


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``$DAIHUO_CODE_VERSION`` (e.g. a git sha set at deploy) or a hash of the model + serving code."""
    global _CODE_VERSION
    if settings().code_version:
        return str(settings().code_version)
    if _CODE_VERSION is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for p in sorted(list((root / "reco").glob("*.py")) + list((root / "serving").glob("*.py"))):
            h.update(p.name.encode())
            h.update(p.read_bytes())
        _CODE_VERSION = "src-" + h.hexdigest()[:12]
    return _CODE_VERSION


def version_id(data: TrainingData, cfg: TrainConfig) -> str:
    spec = {
        "inputs": [[i["key"], str(i["generation"])] for i in data.inputs],
        "params": cfg.params,
        "window_days": cfg.window_days,
        "holdout_frac": cfg.holdout_frac,
        "k": cfg.k,
        "half_life_days": cfg.half_life_days,
        "max_eval_users": cfg.max_eval_users,
        "code": code_version(),
        "gate": [cfg.tolerance, cfg.strict],
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    end = data.window.get("end")
    stamp = pd.Timestamp(end).strftime("%Y%m%dT%H%M%SZ") if end else "empty"
    return f"{stamp}-{digest}"


def catalog_items(catalog: pd.DataFrame) -> pd.DataFrame | None:
    return catalog[["item_id", "title", "description", "category", "price"]] if len(catalog) else None


def fit_model(
    events: pd.DataFrame,
    catalog: pd.DataFrame,
    cfg: TrainConfig,
    reference_time,
    params: dict | None = None,
    content=None,
    item_ids=None,
) -> HybridRecommender:
    """``params`` overrides ``cfg.params``; ``content`` (+ the ``item_ids`` it was fitted on) reuses one
    prefit ``ContentModel`` (it depends only on the catalogue) instead of fitting it again."""
    return HybridRecommender(**(params or cfg.params)).fit_events(
        events,
        catalog_items(catalog),
        half_life_days=cfg.half_life_days,
        reference_time=reference_time,
        item_ids=item_ids,
        content=content,
    )


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

    def message(self) -> dict:
        return {
            "version": self.version,
            "promoted": self.promoted,
            "reason": self.reason,
            "metrics": self.metrics,
            "redelivery": self.reused,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def recipe_params(cfg: TrainConfig) -> dict:
    """The served recipe's parameters: ``DEFAULT_RECIPE`` updated by ``cfg.params``
    (``DAIHUO_TRAIN_PARAMS``)."""
    return merge_recipe(cfg.params)


def gate_metrics(ev: dict, summary: dict) -> dict:
    """Flat numbers per block (candidate, best baseline, ratio) for the dashboard + the gate summary."""
    out: dict[str, Any] = {"k": ev.get("k"), "gate": summary, "primary": ev.get("primary")}
    for name, b in (ev.get("blocks") or {}).items():
        if "rankers" not in b:
            continue
        key = b["metric"]
        tag = name.replace("/purchase", "").replace("/", "_")
        out[f"{tag}_{key}"] = round(b["rankers"]["candidate"][key], 6)
        out[f"{tag}_best_baseline_{key}"] = round(b["rankers"][b["best_baseline"]][key], 6)
        out[f"{tag}_queries"] = b["n_queries"]
    if summary.get("vs_best_baseline"):
        out["ratio_vs_best_baseline"] = round(summary["vs_best_baseline"]["ratio"], 4)
    return out


def _finish(reg: Registry, version: str, meta: dict, bus, cfg: TrainConfig, t0: float, reused: bool) -> TrainResult:
    """Move LATEST if the decision says so and LATEST has not moved since; publish the outcome."""
    d = meta["decision"]
    promoted, reason = False, d["reason"]
    if d["promote"]:
        pointer, gen = reg.latest()
        if pointer and pointer.get("version") == version:
            promoted = True
        elif gen == d.get("latest_generation"):
            try:
                reg.promote(
                    {
                        "version": version,
                        "promoted_at": _now(),
                        "previous": d.get("compared_to"),
                        "metrics": meta["metrics"].get("gate", {}),
                    },
                    gen,
                )
                promoted = True
            except Exception as exc:  # PreconditionFailed: someone moved it between read and swap
                reason = f"not promoted: LATEST moved concurrently ({type(exc).__name__}); {reason}"
                if type(exc).__name__ != "PreconditionFailed":
                    raise
        else:
            reason = (
                f"not promoted: LATEST moved to {pointer and pointer.get('version')} since the decision "
                f"(was {d.get('compared_to')}); {reason}"
            )
    res = TrainResult(version, promoted, reason, meta["metrics"], reused, time.perf_counter() - t0)
    log.info(
        "train done",
        extra={
            "version": version,
            "promoted": promoted,
            "reason": reason,
            "reused": reused,
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


def run_train(store, bus=None, cfg: TrainConfig | None = None, trigger: dict | None = None) -> TrainResult:
    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    reg = Registry(store)
    data = read_training_data(store, cfg.window_days)
    t_read = time.perf_counter() - t0
    if data.events.empty or data.events["item_id"].notna().sum() == 0:
        res = TrainResult(None, False, "no clean events with items in the window; nothing to train", {})
        log.warning("train skipped", extra={"reason": res.reason, "inputs": len(data.inputs)})
        if bus is not None:
            bus.publish(cfg.topic, json.dumps(res.message()).encode(), version="", promoted="false")
        return res
    version = version_id(data, cfg)
    if reg.exists(version):
        log.info("version already written (redelivery); not fitting again", extra={"version": version})
        return _finish(reg, version, reg.read_meta(version), bus, cfg, t0, reused=True)

    # -- once per run: item index, content neighbours (catalogue only), showcases
    t1 = time.perf_counter()
    items = catalog_items(data.catalog)
    recipe = recipe_params(cfg)
    item_ids = HybridRecommender.catalogue_ids(data.events, items)
    content = HybridRecommender(**recipe["base"]).fit_content(item_ids, items)
    showcases = build_showcases(data.events, data.catalog)
    t_content = time.perf_counter() - t1

    def candidate(tr, it, ref):  # exactly what `python -m devtools.evaluate --model served` fits
        return fit_recipe(tr, it, ref, recipe)

    # -- the gate: candidate vs current vs baselines on a time-based holdout (shared.serving.gate)
    t1 = time.perf_counter()
    pointer, latest_gen = reg.latest()
    current_version = pointer.get("version") if pointer else None
    current_error, cur_factory, same = None, None, False
    if current_version:
        try:
            cur_meta = reg.read_meta(current_version)
            cur_factory = current_factory(cur_meta)
            # same code + same recipe: its refit on the training part is the candidate's fit (reused)
            same = cur_meta.get("code_version") == code_version() and cur_meta.get("params") == recipe
        except Exception as exc:
            current_error = f"{type(exc).__name__}: {exc}"
            log.error("current model unreadable", extra={"version": current_version, "error": current_error})
    ev = evaluate_candidate(
        data.events,
        items,
        candidate=candidate,
        current=cur_factory,
        k=cfg.k,
        holdout_frac=cfg.holdout_frac,
        max_queries=cfg.max_eval_users,
        current_is_candidate=same,
    )
    ev["current_refit"] = "reused the candidate's fit (same code and recipe)" if same else "refitted"
    promote, reason, summary = decide(ev, current_version, current_error, cfg.tolerance, cfg.strict)
    metrics = gate_metrics(ev, summary)
    t_eval = time.perf_counter() - t1

    # -- the served model: the same recipe on the full window
    t2 = time.perf_counter()
    end = pd.Timestamp(data.window["end"])
    model = fit_recipe(data.events, items, end, recipe, content=content, item_ids=item_ids)
    t_fit = time.perf_counter() - t2
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
    blob = encode_arrays(model, extras)
    meta = {
        "version": version,
        "created_at": _now(),
        "code_version": code_version(),
        "params": recipe,
        "config": {k: v for k, v in asdict(cfg).items() if k != "params"},
        "window": data.window,
        "inputs": data.inputs,
        "data": {
            "events": int(len(data.events)),
            "users": int(len(model.user_ids_)),
            "items": int(model.n_items_),
            "catalog_items": int(len(data.catalog)),
            "streams": len(showcases),
        },
        "metrics": metrics,
        "evaluation": ev,
        "metrics_note": "holdout of the last holdout_frac of purchases (global-time cut); the candidate is the "
        "recipe fitted before the cut, the current model's recipe refitted on the same part; "
        "evaluation.blocks: every protocol with all baselines and paired bootstrap intervals; "
        "metrics.gate: what promotion compared. The served model is the recipe refitted on the "
        "full window.",
        "decision": {
            "promote": promote,
            "reason": reason,
            "compared_to": current_version,
            "latest_generation": latest_gen,
            "tolerance": cfg.tolerance,
            "strict": cfg.strict,
            "below_baseline": bool(summary.get("below_baseline", False)),
        },
        "timing_s": {
            "read": round(t_read, 3),
            "content": round(t_content, 3),
            "evaluate": round(t_eval, 3),
            "fit": round(t_fit, 3),
        },
        "trigger": trigger or {},
        "arrays_bytes": len(blob),
        "model": model.meta,
    }
    written = reg.write_version(version, blob, meta)
    if not written:  # a twin committed it first: use its record
        meta = reg.read_meta(version)
    return _finish(reg, version, meta, bus, cfg, t0, reused=not written)
