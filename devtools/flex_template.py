"""Build the Dataflow Flex Templates of the Beam jobs (pipelines/beam/): one build context per job in
``dist/dataflow/<template>/`` plus its template metadata and spec, made by ``make package``.

A context holds:
* ``Dockerfile`` -- one image for the launcher AND the workers (Dataflow's documented "custom
  container" pattern): ``FROM`` the Apache Beam Python SDK image of the version ``requirements/beam.txt``
  pins, with the Flex Template Python launcher copied in from Dataflow's launcher base image
  (``gcr.io/dataflow-templates-base/python311-template-launcher-base``), the pinned
  ``requirements.txt`` (= requirements/beam.txt, the job's own environment, docs/scale.md) installed in
  the image, and the code: ``pipelines/`` and the part of
  ``shared/`` it imports (devtools.package's import closure);
* ``main.py`` -- ``FLEX_TEMPLATE_PYTHON_PY_FILE``: calls the job's ``main`` with the launcher's arguments
  (the template parameters as ``--name=value``, then Dataflow's pipeline options, passed on to Beam);
* ``requirements.txt``, the code, and ``IMAGE_TAG`` (a SHA-256 of the context: same source, same tag).
Beside the context: ``<template>.metadata.json`` (name, description, parameters: what
``gcloud dataflow flex-template build --metadata-file`` takes) and ``<template>.spec.json`` (the spec
file that command writes to Cloud Storage: image, sdkInfo, metadata, defaultEnvironment) with the
image named ``<IMAGE_REPO>/<template>:<IMAGE_TAG>``; Terraform (infra/dataflow.tf) uploads that
spec with the real repository. Nothing here builds or pushes the image (docker and the network):
docs/deploy.md gives the commands, printed at the end.

Usage: ``python -m devtools.flex_template [--out dist/dataflow] [--image-repo REPO]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devtools.package import ROOT, shared_closure

LAUNCHER_BASE = "gcr.io/dataflow-templates-base/python311-template-launcher-base"
PYTHON = "3.11"  # the functions' runtime (infra/functions.tf python311) and beam.txt's interpreter
IMAGE_REPO_PLACEHOLDER = "REGION-docker.pkg.dev/PROJECT/daihuo"
_PARAM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class Param:
    name: str  # the job's option without "--", underscores (what the launcher passes: --name=value)
    label: str
    help: str
    optional: bool = False
    regexes: tuple[str, ...] = ()
    type: str = "TEXT"  # Dataflow's parameterType


@dataclass(frozen=True)
class Template:
    name: str
    module: str  # the job: module with main(argv)
    description: str
    params: tuple[Param, ...]
    # argparse options of the job that are deliberately NOT template parameters, with the reason
    not_parameters: dict[str, str] = field(default_factory=dict)


_STORE = Param(
    "store",
    "Data store",
    "The data bucket as a store URL, e.g. gs://PROJECT-daihuo (the functions' DAIHUO_STORE).",
    regexes=(r"^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9]/?$",),
)

TEMPLATES = (
    Template(
        "daihuo-clean",
        "pipelines.beam.clean",
        "Daihuo clean: pending raw/ NDJSON -> clean/ Parquet, quarantine/, the dedupe index, the KPI tables, "
        "committed with the clean manifest (the DuckDB clean's outputs, row for row).",
        (
            _STORE,
            Param(
                "cleaned_topic",
                "Cleaned topic",
                "The Pub/Sub topic the committed run's summary is published on, which triggers train "
                "(default: events-cleaned, the functions' DAIHUO_CLEANED_TOPIC).",
                True,
                (r"^[a-zA-Z][-_.~+%a-zA-Z0-9]{2,254}$",),
            ),
            Param(
                "pubsub_project",
                "Pub/Sub project",
                "The project of the cleaned topic (default: the job's own project).",
                True,
                (r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$",),
            ),
            Param(
                "publish",
                "Publish the summary",
                "true (default): publish the committed run's summary on the cleaned topic, as the clean "
                "function does; false: commit only (train is not told).",
                True,
                (r"^(true|false)$",),
            ),
        ),
        {"now": "the run's clock, for tests only: a deployed run uses the wall clock"},
    ),
    Template(
        "daihuo-itemknn",
        "pipelines.beam.itemknn",
        "Daihuo item-item neighbours: the window's clean/ events -> the top-N cosine neighbours per item, "
        "equal to the in-process ItemItemCF fit, written as neighbours/<id>/ (npz + meta.json) and "
        "neighbours/LATEST.json, which train reads with DAIHUO_TRAIN_NEIGHBOURS=precomputed.",
        (
            _STORE,
            Param(
                "window_days",
                "Training window (days)",
                "As train's DAIHUO_TRAIN_WINDOW_DAYS (default 30): train uses the lists only for the same window.",
                True,
                (r"^[0-9]+(\.[0-9]+)?$",),
            ),
            Param(
                "half_life_days",
                "Affinity half-life (days)",
                "As the recipe's half_life_days (default 30; none: no decay): train uses the lists only for the same.",
                True,
                (r"^([0-9]+(\.[0-9]+)?|none)$",),
            ),
            Param(
                "neighbours",
                "Neighbours per item",
                "Top-N kept per item (default 100; train needs at least the N its recipe keeps).",
                True,
                (r"^[1-9][0-9]*$",),
            ),
            Param("min_cooc", "Minimum co-occurrence", "Pairs seen fewer times are dropped (default 1).", True),
            Param(
                "max_user_items",
                "Items sampled per heavy user",
                "Keep a deterministic sample of K items per user (default: all; changes the result: train never uses such lists).",
                True,
                (r"^[1-9][0-9]*$",),
            ),
        ),
    ),
)


def beam_version(root: Path = ROOT) -> str:
    m = re.search(r"^apache-beam==([0-9.]+)", (root / "requirements" / "beam.txt").read_text(), re.M)
    if not m:
        raise SystemExit("requirements/beam.txt pins no apache-beam")
    return m.group(1)


def metadata(t: Template) -> dict:
    return {
        "name": t.name,
        "description": t.description,
        "parameters": [
            {
                "name": p.name,
                "label": p.label,
                "helpText": p.help,
                "isOptional": p.optional,
                "parameterType": p.type,
                **({"regexes": list(p.regexes)} if p.regexes else {}),
            }
            for p in t.params
        ],
    }


def code_files(root: Path = ROOT) -> list[Path]:
    jobs = sorted((root / "pipelines").rglob("*.py"))
    jobs = [f for f in jobs if "__pycache__" not in f.parts and "tests" not in f.parts]
    files = set(jobs)
    for f in jobs:
        files.update(shared_closure(f, root))
    return sorted(files)


def dockerfile(t: Template, version: str) -> str:
    return f"""# Dataflow Flex Template {t.name} (generated by devtools/flex_template.py; do not edit).
# One image for the launcher and the workers: the Beam SDK image of the pinned version, plus the
# Flex Template Python launcher from Dataflow's launcher base image. Launch with
# sdk_container_image = this image (infra/dataflow.tf does).
FROM {LAUNCHER_BASE} AS launcher

FROM apache/beam_python{PYTHON}_sdk:{version}
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY requirements.txt /template/requirements.txt
# the job's own pinned environment (requirements/beam.txt: apache-beam {version}, protobuf < 7, pyarrow < 26)
RUN pip install --no-cache-dir -r /template/requirements.txt
COPY . /template
ENV PYTHONPATH=/template
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py
# no FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE: the dependencies are in the image (launcher and workers),
# so nothing is staged or pip-installed at launch

ENTRYPOINT ["/opt/google/dataflow/python_template_launcher"]
"""


def main_py(t: Template) -> str:
    return f'''"""Flex Template entry point of {t.name} (generated by devtools/flex_template.py): the launcher runs
this file with the template parameters (--name=value) and Dataflow's pipeline options."""

import sys

from {t.module} import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
'''


def _tree_hash(ctx: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in ctx.rglob("*") if p.is_file() and p.name != "IMAGE_TAG"):
        h.update(f.relative_to(ctx).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build(t: Template, out: Path, image_repo: str = IMAGE_REPO_PLACEHOLDER, root: Path = ROOT) -> dict:
    for p in t.params:
        if not _PARAM_NAME.match(p.name):
            raise ValueError(f"{t.name}: parameter name {p.name!r}")
    version = beam_version(root)
    ctx = out / t.name
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    for f in code_files(root):
        dst = ctx / f.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    shutil.copyfile(root / "requirements" / "beam.txt", ctx / "requirements.txt")
    (ctx / "main.py").write_text(main_py(t))
    (ctx / "Dockerfile").write_text(dockerfile(t, version))
    (ctx / ".dockerignore").write_text("IMAGE_TAG\n**/__pycache__\n")
    tag = _tree_hash(ctx)
    (ctx / "IMAGE_TAG").write_text(tag + "\n")
    meta = metadata(t)
    (out / f"{t.name}.metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    image = f"{image_repo}/{t.name}:{tag}"
    spec = {
        "image": image,
        "sdkInfo": {"language": "PYTHON"},
        "metadata": meta,
        "defaultEnvironment": {"sdkContainerImage": image},
    }
    (out / f"{t.name}.spec.json").write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
    return {"template": t.name, "context": str(ctx), "image": image, "files": len(list(ctx.rglob("*")))}


def commands(t: Template, out: Path, image: str) -> str:
    return (
        f"gcloud builds submit {out / t.name} --tag {image}\n"
        f"gcloud dataflow flex-template build gs://TEMPLATE_BUCKET/templates/{t.name}.json "
        f"--image {image} --sdk-language PYTHON --metadata-file {out / (t.name + '.metadata.json')}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist" / "dataflow")
    ap.add_argument("--image-repo", default=IMAGE_REPO_PLACEHOLDER, help="Artifact Registry repository of the images")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for t in TEMPLATES:
        r = build(t, args.out, args.image_repo)
        sys.stdout.write(f"{r['template']}: {r['context']} ({r['files']} files), image {r['image']}\n")
        sys.stdout.write("  build and register it (docker/Cloud Build and the network; not run here):\n")
        sys.stdout.write("".join(f"    {ln}\n" for ln in commands(t, args.out, r["image"]).splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
