"""The promotion gate: the candidate recipe against the current model and the simple baselines.

On a time-based holdout of the training window (``shared.reco.protocol.make_split``, global-time cut
at the ``1 - holdout_frac`` quantile of purchases) the candidate (``fit_recipe`` on the part before the
cut), the CURRENT served model's recipe refitted on the same part, and the baselines (most popular,
the stream's bestsellers so far, showcase popularity, own history, own history then the stream's
bestsellers, item-kNN) answer the same queries:

==============  ===========  ========  ================================================
protocol        target       variant   question
==============  ===========  ========  ================================================
``room``        purchase     all       what will this viewer buy in this room? (PRIMARY)
``room``        purchase     new       ... among items new to the viewer
``catalogue``   purchase     all       what will this viewer buy next, anywhere?
``catalogue``   purchase     new       ... among items new to the viewer
``room``        add_to_cart  all       what will this viewer add to the cart in this room?
==============  ===========  ========  ================================================

Every block uses **one cut** (the purchase blocks' quantile, given to the cart block too): one
training part, so the candidate and the current model are fitted once per gate.

**Primary metric: NDCG@10 of the room / purchase / all block** (``catalogue`` when the holdout has
fewer than ``min_queries`` room queries): the live room is where recommendations are shown, purchases
are the outcome that pays, and repeats are most of live-commerce orders, so excluding them would
grade the model on a question nobody asks.

**Rule**: promote iff the candidate's mean beats the best baseline's (paired bootstrap interval of
the difference recorded) and it is not worse than the current model by more than ``tolerance``
(relative).  With ``strict`` the lower end of the 95 % interval of (candidate − best baseline) must be
above 0.  With no current model the first candidate is promoted even below a baseline (something must
serve), and the decision says so (``below_baseline: true``).

``run_gate`` is the train job's step: it finds the current version (``LATEST``), evaluates the
candidate recipe against it and the baselines, decides, and returns the numbers and the decision that
the version's ``meta.json`` records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shared import layout
from shared.log import get_logger
from shared.reco import protocol as P
from shared.reco.recipe import fit_recipe
from shared.serving.registry import Registry, code_version

log = get_logger("gate")

BLOCKS = (
    ("room", "purchase", "all"),
    ("room", "purchase", "new"),
    ("catalogue", "purchase", "all"),
    ("catalogue", "purchase", "new"),
    ("room", "cart", "all"),
)
PRIMARY = ("room", "purchase", "all")
FALLBACK_PRIMARY = ("catalogue", "purchase", "all")


class _Fitted(P.RecommendRanker):
    """A model ranker fitted once per distinct training part (the blocks of one target share it);
    it ranks as ``RecommendRanker`` (the service's ``recommend`` call)."""

    is_model = True

    def __init__(self, name: str, factory: Callable, cache: dict | None = None):
        self.name, self.factory, self._cache = name, factory, ({} if cache is None else cache)

    def fit(self, train_events, items=None, reference_time=None):
        key = (len(train_events), str(reference_time))
        if key not in self._cache:
            self._cache[key] = self.factory(train_events, items, reference_time)
        self.model = self._cache[key]
        return self


def current_factory(meta: dict) -> Callable | None:
    """How to refit the current version's recipe on the training part (fair: same data as the candidate)."""
    model = meta.get("model") or {}
    if model.get("class") == "RoomRanker":
        recipe = dict((model.get("ranker") or {}).get("recipe") or {})
        return lambda tr, it, ref: fit_recipe(tr, it, ref, recipe)
    if model.get("class") == "HybridRecommender":
        params = dict(model.get("params") or meta.get("params") or {})
        from shared.reco import HybridRecommender

        return lambda tr, it, ref: _V1(HybridRecommender(**params).fit_events(tr, it, reference_time=ref))
    return None


class _V1:
    """A v1 ``HybridRecommender`` behind the service's ``recommend`` call (as ``protocol.HybridRanker``
    ranks, but with the params the version was served with)."""

    def __init__(self, m):
        self.m = m

    def recommend(self, user_id, k, *, stream_id=None, allowed_items=None, room=None, now=None, repeats=True):
        return self.m.recommend(
            user_id,
            k,
            stream_id=stream_id,
            allowed_items=allowed_items,
            filter_seen=not repeats,
            exclude_purchased=not repeats,
        )


def evaluate_candidate(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    *,
    candidate: Callable,
    current: Callable | None,
    k: int = 10,
    holdout_frac: float = 0.2,
    max_queries: int = 5000,
    min_queries: int = 30,
    n_boot: int = 1000,
    current_is_candidate: bool = False,
    candidate_cache: dict | None = None,
) -> dict[str, Any]:
    """Every block of ``BLOCKS`` the data allows -> ``{"blocks": {name: report}, "primary": name}``.

    ``current_is_candidate``: the current version's recipe and code are the candidate's, so its refit on
    the same part IS the candidate's fit: it is reused (same rankings), not fitted twice.
    ``candidate_cache``: the candidate's fits per training part, kept across calls (a re-gate of the same
    run against a newly serving model does not fit the candidate again)."""
    has_stream = "stream_id" in events and events["stream_id"].notna().any()
    cand = _Fitted("candidate", candidate, candidate_cache)
    models = [cand]
    if current is not None:
        models.append(
            _Fitted("current", candidate, cand._cache) if current_is_candidate else _Fitted("current", current)
        )
    blocks: dict[str, Any] = {}
    shared = P.SplitEvents(events)  # the splits' common work (codes, training part, rooms) done once
    # one holdout cut for every block (the first split's: the purchase quantile): one training part,
    # so the candidate (and the current model) is fitted once per gate, not once per target
    shared_cut: pd.Timestamp | None = None
    for proto, target, variant in BLOCKS:
        name = f"{proto}/{target}/{variant}"
        if proto == "room" and not has_stream:
            continue
        t0 = time.perf_counter()
        try:
            sp_ = P.make_split(
                events,
                split="global-time",
                target=target,
                variant=variant,
                in_stream=proto == "room",
                test_frac=holdout_frac,
                items=items,
                max_queries=max_queries,
                cut_at=shared_cut,
                shared=shared,
            )
        except ValueError as exc:  # no events of that target
            blocks[name] = {"skipped": str(exc)}
            continue
        if shared_cut is None:
            shared_cut = sp_.reference_time
        if len(sp_.queries) < (min_queries if (proto, target, variant) in (PRIMARY, FALLBACK_PRIMARY) else 1):
            blocks[name] = {"skipped": f"{len(sp_.queries)} queries", "n_queries": len(sp_.queries)}
            continue
        rankers = P.baseline_rankers(target, in_stream=proto == "room") + models
        rep = P.evaluate(sp_.train, sp_.queries, items, rankers, k, reference_time=sp_.reference_time, n_boot=n_boot)
        key = rep["metric"]
        out = dict(rep)
        out["cut"] = sp_.info.get("cut")
        if current is not None:
            out["vs_current"] = P.paired_bootstrap(
                rep.per_query["candidate"][key], rep.per_query["current"][key], n_boot=n_boot
            )
        out["seconds"] = round(time.perf_counter() - t0, 3)
        blocks[name] = out
        log.info(
            "gate block",
            extra={
                "block": name,
                "queries": rep["n_queries"],
                "candidate": rep["rankers"]["candidate"][key],
                "best_baseline": rep["best_baseline"],
            },
        )
    blocks = _finite(blocks)
    primary = "/".join(PRIMARY)
    if "rankers" not in blocks.get(primary, {}):
        primary = "/".join(FALLBACK_PRIMARY)
    return {"k": k, "blocks": blocks, "primary": primary if "rankers" in blocks.get(primary, {}) else None}


def _finite(x):
    """NaN / inf -> None, recursively (meta.json stays strict JSON)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def decide(
    ev: dict, current_version: str | None, current_error: str | None, tolerance: float, strict: bool = False
) -> tuple[bool, str, dict]:
    """(promote, reason, summary) from ``evaluate_candidate``'s result; see the module docstring."""
    pname = ev.get("primary")
    if pname is None:
        if current_version is None:
            return True, "first model (no LATEST yet); the holdout has too few queries to evaluate", {}
        return False, f"holdout has too few queries to evaluate: keeping {current_version}", {}
    b = ev["blocks"][pname]
    key = b["metric"]
    cand = b["rankers"]["candidate"][key]
    best = b["best_baseline"]
    vs = b["vs_best_baseline"]["candidate"]
    summary = {
        "block": pname,
        "metric": key,
        "candidate": cand,
        "best_baseline": best,
        "best_baseline_value": b["rankers"][best][key],
        "vs_best_baseline": vs,
        "n_queries": b["n_queries"],
    }
    beats = vs["diff"] > 0 and (not strict or (vs["diff_lo"] or 0.0) > 0)

    def f3(v):
        return "n/a" if v is None else f"{v:.3f}"

    txt = (
        f"{pname} {key} {cand:.4f} vs best baseline {best} {b['rankers'][best][key]:.4f} "
        f"(ratio {f3(vs['ratio'])}, 95% CI [{f3(vs['ratio_lo'])}, {f3(vs['ratio_hi'])}], {b['n_queries']} queries)"
    )
    summary["beats_best_baseline"] = bool(beats)
    if current_version is None:
        summary["below_baseline"] = not beats
        return (
            True,
            (
                "first model (no LATEST yet); "
                + txt
                + ("" if beats else ": BELOW the baseline, promoted only because nothing else serves")
            ),
            summary,
        )
    if current_error:
        return (
            True,
            f"current model {current_version} could not be loaded ({current_error}); replacing it; {txt}",
            summary,
        )
    if not beats:
        return False, f"below baseline: {txt}; keeping {current_version}", summary
    if "current" in b["rankers"]:
        old = b["rankers"]["current"][key]
        summary["current_value"] = old
        summary["vs_current"] = b.get("vs_current")
        if cand < old * (1.0 - tolerance):
            return (
                False,
                (
                    f"regression: {pname} {key} {cand:.4f} < current {current_version} {old:.4f} "
                    f"- {tolerance:.0%}; keeping {current_version}"
                ),
                summary,
            )
        return True, f"{txt}; current {current_version} {old:.4f} (tolerance {tolerance:.0%})", summary
    return True, txt, summary


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


@dataclass
class GateOutcome:
    """What the gate found: the evaluation (every block), the flat metrics and the decision."""

    evaluation: dict[str, Any]
    metrics: dict[str, Any]
    promote: bool
    reason: str
    summary: dict[str, Any]
    current_version: str | None
    latest_generation: str | None
    tolerance: float
    strict: bool
    seconds: float = 0.0

    def decision(self) -> dict[str, Any]:
        """The decision as ``meta.json`` records it (``Registry.complete_promotion`` carries it out)."""
        return {
            "promote": self.promote,
            "reason": self.reason,
            "compared_to": self.current_version,
            "latest_generation": self.latest_generation,
            "tolerance": self.tolerance,
            "strict": self.strict,
            "below_baseline": bool(self.summary.get("below_baseline", False)),
        }


def _current(
    reg: Registry, recipe: dict
) -> tuple[str | None, str | None, Callable | None, bool, str | None, dict | None]:
    """``(current version, LATEST generation, its refit factory, same recipe and code, load error, its meta)``."""
    pointer, latest_gen = reg.latest()
    current_version = pointer.get("version") if pointer else None
    current_error, factory, same, cur_meta = None, None, False, None
    if current_version:
        try:
            cur_meta = reg.read_meta(current_version)
            factory = current_factory(cur_meta)
            # same code + same recipe: its refit on the training part is the candidate's fit (reused)
            same = cur_meta.get("code_version") == code_version() and cur_meta.get("params") == recipe
        except Exception as exc:
            current_error = f"{type(exc).__name__}: {exc}"
            log.error("current model unreadable", extra={"version": current_version, "error": current_error})
    return current_version, latest_gen, factory, same, current_error, cur_meta


def _clean_inputs(inputs: list[dict] | None) -> set[tuple[str, str]]:
    return {
        (str(i["key"]), str(i["generation"])) for i in inputs or () if str(i.get("key", "")).startswith(layout.CLEAN)
    }


def older_data(inputs: list[dict] | None, window: dict | None, current_meta: dict | None) -> str | None:
    """Why the candidate's training data is older than the current model's, or None: its window ends
    before the current's, or its clean objects are a strict subset of the current's (a run that read the
    clean/ prefix before another run's objects were committed). Such a candidate never replaces the
    current model, whatever the holdout says: refitted on the candidate's (smaller) data the current
    recipe is no measure of the served model."""
    if not current_meta or inputs is None:
        return None
    mine, theirs = _clean_inputs(inputs), _clean_inputs(current_meta.get("inputs"))
    end, cur_end = (window or {}).get("end"), (current_meta.get("window") or {}).get("end")
    if end and cur_end and pd.Timestamp(end) < pd.Timestamp(cur_end):
        return f"its window ends at {end}, before the current model's ({cur_end})"
    if theirs and mine < theirs:
        return f"its {len(mine)} clean objects are a strict subset of the current model's {len(theirs)}"
    return None


def run_gate(
    reg: Registry,
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    recipe: dict,
    *,
    k: int = 10,
    holdout_frac: float = 0.2,
    max_queries: int = 5000,
    tolerance: float = 0.02,
    strict: bool = False,
    inputs: list[dict] | None = None,
    window: dict | None = None,
    candidate_cache: dict | None = None,
    content: Any = None,
    item_ids: Any = None,
) -> GateOutcome:
    """The candidate ``recipe`` vs the current version (LATEST) vs the baselines on a time-based holdout
    of ``events``, and the promotion decision (see the module docstring). ``inputs`` / ``window``: the
    candidate's training objects and window (``older_data``: a candidate on older data is refused).
    ``content`` / ``item_ids``: the run's content neighbours and item index (``train._prepare``), reused
    by a candidate fit whose training part has exactly that item index (the same model as a refit:
    the content model depends on the catalogue and the index only), fitted again otherwise."""
    t0 = time.perf_counter()

    def candidate(tr, it, ref):  # exactly what `python -m devtools.evaluate --model served` fits
        if content is not None and item_ids is not None:
            from shared.reco import HybridRecommender

            ids = HybridRecommender.catalogue_ids(tr, it)
            if len(ids) == len(item_ids) and bool((ids == item_ids).all()):
                return fit_recipe(tr, it, ref, recipe, content=content, item_ids=item_ids)
        return fit_recipe(tr, it, ref, recipe)

    current_version, latest_gen, factory, same, current_error, cur_meta = _current(reg, recipe)
    ev = evaluate_candidate(
        events,
        items,
        candidate=candidate,
        current=factory,
        k=k,
        holdout_frac=holdout_frac,
        max_queries=max_queries,
        current_is_candidate=same,
        candidate_cache=candidate_cache,
    )
    ev["current_refit"] = "reused the candidate's fit (same code and recipe)" if same else "refitted"
    promote, reason, summary = decide(ev, current_version, current_error, tolerance, strict)
    stale = older_data(inputs, window, cur_meta)
    if promote and stale:
        promote, reason = False, f"older data: {stale}; keeping {current_version}; {reason}"
        summary["older_data"] = stale
    return GateOutcome(
        evaluation=ev,
        metrics=gate_metrics(ev, summary),
        promote=promote,
        reason=reason,
        summary=summary,
        current_version=current_version,
        latest_generation=latest_gen,
        tolerance=tolerance,
        strict=strict,
        seconds=time.perf_counter() - t0,
    )
