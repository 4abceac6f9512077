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


def intervals_chart(arms: list[dict]) -> dict:
    """Per metric (side by side, each its own axis): every arm's value and its 95 % interval."""
    import altair as alt
    import pandas as pd

    from shared.dashboard import charts

    panels = []
    for m, label, kind in METRICS:
        scale = 100.0 if kind == "pct" else 1.0
        df = pd.DataFrame(
            [
                {
                    "arm": a["arm"],
                    "v": (a[m] or 0) * scale,
                    "lo": (a[m + "_lo"] if a[m + "_lo"] is not None else a[m] or 0) * scale,
                    "hi": (a[m + "_hi"] if a[m + "_hi"] is not None else a[m] or 0) * scale,
                }
                for a in arms
                if a[m] is not None
            ],
            columns=["arm", "v", "lo", "hi"],
        )
        y = alt.Y("arm:N", title=None, sort=None)
        title = f"{label} ({'%' if kind == 'pct' else 'CNY'})"
        base = alt.Chart(df)
        rule = base.mark_rule(strokeWidth=2).encode(y, alt.X("lo:Q", title=title), alt.X2("hi:Q"))
        dot = base.mark_point(filled=True, size=60).encode(y, alt.X("v:Q"), alt.Color("arm:N", legend=None))
        panels.append((rule + dot).properties(width=max(charts.WIDTH // 3 - 90, 80), height=22 * max(len(df), 1)))
    return charts._config(alt.hconcat(*panels, spacing=24)).to_dict()


def experiments_page(snap, root: str = "") -> str:
    from shared.dashboard import charts
    from shared.dashboard.pages import _render

    exps = list_experiments(snap)["experiments"]
    for e in exps:
        e["chart"] = charts.render_svg(
            intervals_chart(e["arms"]),
            name="experiment_intervals",
            label=f"{e['experiment']}: arms with 95 % intervals",
        )
        e["challengers"] = [a for a in e["arms"] if not a["is_control"]]
        e["control"] = next((a for a in e["arms"] if a["is_control"]), None)
    return _render(
        "experiments.html",
        snap,
        root,
        title="实验 Experiments",
        nav="experiments",
        experiments=exps,
        metrics=METRICS,
    )
