"""Which engine runs a clean run (``DAIHUO_CLEAN_ENGINE``): ``duckdb`` (the default: in the function,
``shared.pipeline.clean.run_clean``) or ``beam`` (the Apache Beam job ``pipelines.beam.clean``, in its
own environment: ``DAIHUO_BEAM_PYTHON``, started here by subprocess with ``DAIHUO_BEAM_ARGS`` as its
pipeline options; it reads the same DAIHUO_* settings, plans and commits the run through the same
manifest code, and -- given this side's bus -- publishes the committed summary on ``events-cleaned``
itself, as a Dataflow run of the same job does: ``--pubsub_project`` / ``--cleaned_topic`` name this
bus's project and the topic, ``--publish=false`` when there is no bus).

``dataflow``: the runs are launched elsewhere (the Cloud Scheduler job of infra/dataflow.tf starts the Beam job
on Dataflow, which commits and publishes itself); a tick cleans nothing and answers ``status: external``
(the function then still evaluates the batch alert rules). Terraform sets it on the clean function when it
schedules the Dataflow clean, so the two never both clean.

Both write the same objects (``tests/test_beam_clean.py`` proves it row for row). The Beam engine takes
its configuration from the settings, not from a ``CleanConfig`` object: a config built in code is
refused rather than silently ignored.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import orjson

from shared.log import get_logger
from shared.pipeline.clean import ChartsHook, CleanConfig, run_clean
from shared.settings import settings

log = get_logger("clean")

ROOT = Path(__file__).resolve().parent.parent.parent


def run(
    store, bus=None, cfg: CleanConfig | None = None, *, now: float | None = None, charts: ChartsHook | None = None
) -> dict[str, Any]:
    """One clean run on the configured engine; the summary (``status`` committed / noop / conflict).
    ``charts``: the pre-render hook (``clean.commit_run``); the Beam job commits in its own process
    without one, so the dashboard renders that run's charts on request."""
    s = settings()
    if s.clean_engine == "duckdb":
        return run_clean(store, bus, cfg, now=now, charts=charts)
    if s.clean_engine == "dataflow":  # the scheduled Dataflow job cleans, commits and publishes (infra/dataflow.tf)
        log.info("clean tick: the runs are Dataflow's (DAIHUO_CLEAN_ENGINE=dataflow); nothing cleaned here")
        return {"status": "external", "engine": "dataflow"}
    if cfg is not None:
        raise ValueError("the beam engine reads its configuration from the DAIHUO_* settings, not a CleanConfig")
    cfg = CleanConfig()
    py = Path(s.beam_python)
    py = py if py.is_absolute() else ROOT / py
    if not py.exists():
        raise RuntimeError(
            f"the clean engine is beam but there is no Beam interpreter at {py} (make venv-beam; DAIHUO_BEAM_PYTHON)"
        )
    cmd = [str(py), "-m", "pipelines.beam.clean", "--store", s.store, *shlex.split(s.beam_args)]
    # the job republishes unpublished runs, commits, publishes and marks the run published: clean._publish
    if bus is None:
        cmd += ["--publish=false"]
    else:
        cmd += ["--publish=true", f"--pubsub_project={bus.project}", f"--cleaned_topic={cfg.topic}"]
    if now is not None:
        cmd += ["--now", repr(now)]
    # (``-m`` from the repository root finds pipelines/ and shared/; the environment is inherited)
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the Beam clean job failed ({out.returncode}): {out.stderr[-2000:]}")
    return orjson.loads(out.stdout.strip().splitlines()[-1])
