"""Build an object store holding real pipeline output from the simulator (usable by any test).

    from tests.data_fixtures import build_pipeline_store
    built = build_pipeline_store(tmp_path / "store", seed=5, n_streams=3)
    built.store      # LocalStore with raw/, clean/, analytics/, quarantine/, reports/, state/clean-manifest.json
    built.sim        # the Simulation (ground truth: built.sim.truth.expected_clean())
    built.summaries  # run_clean summaries, one per run

The simulated evening is written to ``raw/`` as NDJSON.gz objects (each row stamped with the
``received_at`` an honest receiver would give it: 2 s after the true time, later for the injected late
rows, so the skew/late rules fire on the injected faults only) and cleaned
with :func:`shared.pipeline.clean.run_clean`. ``runs=2`` splits the raw objects over two clean runs
(the second run recomputes the affected streams' analytics), as the hourly scheduler would.
``models=True`` also writes two model versions (``models/<v>/meta.json`` + ``models/LATEST.json``) in
the shape the train function writes, for pages that show model metrics.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from devtools.simulator import Simulation, simulate
from shared.adapters.storage import ObjectStore, open_store
from shared.pipeline.clean import CleanConfig, run_clean
from shared.pipeline.config import TimeRules

RECEIVED_AT = "2026-11-29T00:00:00.000Z"  # two days after the default simulated evening (2026-11-27)
RULES = TimeRules(max_future_s=300, max_past_s=30 * 86400, late_after_s=3600)


# model metadata in the shape the train function writes (models/<version>/meta.json: metrics from
# gate.gate_metrics, evaluation.blocks from gate.evaluate_candidate, decision from GateOutcome): the
# first model promoted (later replaced), a candidate the gate rejected, the one serving now
def _model_meta(version, created, room, cat, n_room, n_cat, promote, reason, compared_to=None):
    def block(cand, base, n, best):
        other = {"popular": base * 0.6, "itemknn": base * 0.8, best: base}
        rankers = {"candidate": {"kind": "model", "ndcg@10": cand, "recall@10": min(1.0, cand * 1.5)}}
        rankers.update(
            {k: {"kind": "baseline", "ndcg@10": v, "recall@10": min(1.0, v * 1.5)} for k, v in other.items()}
        )
        if compared_to:
            rankers["current"] = {"kind": "model", "ndcg@10": 0.4, "recall@10": 0.6}
        r = cand / base
        return {
            "metric": "ndcg@10",
            "k": 10,
            "n_queries": n,
            "best_baseline": best,
            "rankers": rankers,
            "vs_best_baseline": {
                "candidate": {"diff": cand - base, "ratio": r, "ratio_lo": r * 0.85, "ratio_hi": r * 1.2}
            },
        }

    blocks = {
        "room/purchase/all": block(room, 0.21, n_room, "own_then_stream"),
        "catalogue/purchase/all": block(cat, 0.12, n_cat, "own_history"),
    }
    metrics = {
        "k": 10,
        "primary": "room/purchase/all",
        "gate": {"block": "room/purchase/all", "metric": "ndcg@10", "candidate": room},
        "room_all_ndcg@10": room,
        "room_all_best_baseline_ndcg@10": 0.21,
        "room_all_queries": n_room,
        "catalogue_all_ndcg@10": cat,
        "catalogue_all_best_baseline_ndcg@10": 0.12,
        "catalogue_all_queries": n_cat,
        "ratio_vs_best_baseline": round(room / 0.21, 4),
    }
    return {
        "version": version,
        "created_at": created,
        "metrics": metrics,
        "evaluation": {"k": 10, "primary": "room/purchase/all", "blocks": blocks},
        "decision": {"promote": promote, "reason": reason, "compared_to": compared_to, "below_baseline": False},
        "data": {"events": 4100, "users": 300, "items": 60},
    }


MODEL_METAS = [
    _model_meta(
        "20261127T2300-a1", "2026-11-27T23:00:00Z", 0.431, 0.134, 7845, 9120, True, "first model (no LATEST yet)"
    ),
    _model_meta(
        "20261128T0000-b2",
        "2026-11-28T00:00:00Z",
        0.19,
        0.11,
        8210,
        10432,
        False,
        "below baseline: room/purchase/all ndcg@10 0.1900 vs best baseline own_then_stream 0.2100; "
        "keeping 20261127T2300-a1",
        "20261127T2300-a1",
    ),
    _model_meta(
        "20261128T0100-c3",
        "2026-11-28T01:00:00Z",
        0.452,
        0.141,
        8877,
        11020,
        True,
        "room/purchase/all ndcg@10 0.4520 vs best baseline own_then_stream 0.2100; current 20261127T2300-a1 0.4310",
        "20261127T2300-a1",
    ),
]
#: the metric names of MODEL_METAS per family (queries.metric_family)
MODEL_SCORES = sorted(
    [
        "room_all_ndcg@10",
        "room_all_best_baseline_ndcg@10",
        "catalogue_all_ndcg@10",
        "catalogue_all_best_baseline_ndcg@10",
    ]
)
MODEL_COUNTS = ["catalogue_all_queries", "room_all_queries"]
MODEL_RATIOS = ["ratio_vs_best_baseline"]


@dataclass
class BuiltStore:
    store: ObjectStore
    url: str
    sim: Simulation
    summaries: list[dict[str, Any]] = field(default_factory=list)


def _received_at(row: dict, log: dict, default: str) -> str:
    """When an honest receiver got the row: 2 s after its true time (late rows: after their delay)."""
    f = log.get(row.get("event_id"), {})
    ts = f.get("true_ts") or row.get("ts")
    try:
        t = datetime.fromisoformat(str(ts).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return default
    t += timedelta(seconds=2 + float(f.get("delay_s") or 0))
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def raw_objects(
    sim: Simulation, n_parts: int = 4, received_at: str | None = None, hour: str = "2026-11-27/hour=20"
) -> list[tuple[str, bytes]]:
    """The simulated catalog + events (send order, faults included) as ``n_parts`` raw/ objects.

    ``received_at``: one stamp for every row, or None (default) for a realistic stamp per row (2 s
    after the row's true time, so only the injected clock-skew and late rows look skewed/late)."""
    rows = []
    log = sim.truth.fault_log
    for r in list(sim.catalog) + list(sim.events):
        if isinstance(r, dict):
            rec = received_at or _received_at(r, log, RECEIVED_AT)
            rows.append(orjson.dumps(dict(r, received_at=rec)))
        else:
            rows.append(r.encode())
    size = len(rows) // n_parts + 1
    date, hh = hour.split("/")
    return [
        (
            f"raw/date={date}/{hh}/part-{i:03d}.ndjson.gz",
            gzip.compress(b"\n".join(rows[i * size : (i + 1) * size]) + b"\n", mtime=0),
        )
        for i in range(n_parts)
        if rows[i * size : (i + 1) * size]
    ]


def clean_config(**kw) -> CleanConfig:
    # unknown_items="quarantine": the simulator's truth (GMV, orders) models that rule
    return CleanConfig(**{"rules": RULES, "threads": 2, "memory_limit": "512MB", "unknown_items": "quarantine", **kw})


def write_models(store: ObjectStore, metas: list[dict] = MODEL_METAS) -> None:
    for m in metas:
        store.put(f"models/{m['version']}/meta.json", orjson.dumps(m), content_type="application/json")
    if metas:
        store.put(
            "models/LATEST.json", orjson.dumps({"version": metas[-1]["version"]}), content_type="application/json"
        )


def build_pipeline_store(
    root: str | Path,
    *,
    seed: int = 5,
    n_streams: int = 3,
    n_users: int = 300,
    n_items: int = 60,
    faults: Any = "default",
    runs: int = 2,
    models: bool = False,
    charts: bool = False,
    **sim_overrides: Any,
) -> BuiltStore:
    """Simulate, write raw/, run the clean pipeline ``runs`` times; return the store and the simulation.
    ``charts``: each run pre-renders the overview's charts, as the clean function does (its hook)."""
    url = str(root)
    store = open_store(url)
    sim = simulate(seed=seed, n_streams=n_streams, n_users=n_users, n_items=n_items, faults=faults, **sim_overrides)
    objs = raw_objects(sim, n_parts=max(2, runs * 2))
    per_run = -(-len(objs) // max(1, runs))
    built = BuiltStore(store=store, url=url, sim=sim)
    cfg = clean_config()
    for r in range(max(1, runs)):
        for key, data in objs[r * per_run : (r + 1) * per_run]:
            store.put(key, data, content_type="application/gzip")
        hook = None
        if charts:
            from shared.dashboard.prerender import write_overview as hook
        built.summaries.append(run_clean(store, None, cfg, charts=hook))
    if models:
        write_models(store)
    return built
