"""Recommendation experiments on the dashboard: ``/api/experiments`` (JSON) and ``/experiments`` (HTML).

The numbers are the ``experiment`` analytics table unchanged (shared/pipeline/experiments.py,
docs/experiments.md): per experiment and arm the impressions, clicks, CTR, conversion and attributed
GMV with their 95 % intervals, and each arm against the control arm. The viewer-level ``rec_viewer``
table is never read here.
"""

from __future__ import annotations

from typing import Any

from shared.dashboard.queries import jsonable, records
from shared.pipeline.outputs import TABLE_COLUMNS

ARM_COLUMNS = [c for c in TABLE_COLUMNS["experiment"] if c not in ("experiment", "control_arm")]
METRICS = (
    ("ctr", "CTR 点击率", "pct"),
    ("conversion_rate", "conversion 转化率", "pct"),
    ("gmv_per_impression", "GMV / impression ¥", "money"),
)


def list_experiments(snap) -> dict[str, Any]:
    """``/api/experiments``: every experiment seen in the data, its control arm and its arms (control
    first), newest experiment (by its last impression) first."""
    df = snap.experiment
    out = []
    if len(df):
        last = df.groupby("experiment")["last_ts"].max().sort_values(ascending=False, kind="stable")
        for exp in last.index:
            g = df[df["experiment"] == exp].sort_values(["is_control", "arm"], ascending=[False, True], kind="stable")
            out.append(
                {
                    "experiment": str(exp),
                    "control_arm": str(g["control_arm"].iloc[0]),
                    "first_ts": jsonable(g["first_ts"].min()),
                    "last_ts": jsonable(g["last_ts"].max()),
                    "arms": records(g, ARM_COLUMNS),
                }
            )
    return {"experiments": out}


def experiments_page(snap, root: str = "") -> str:
    from shared.dashboard.pages import _render

    return _render(
        "experiments.html",
        snap,
        root,
        title="实验 Experiments",
        nav="experiments",
        experiments=list_experiments(snap)["experiments"],
        metrics=METRICS,
    )
