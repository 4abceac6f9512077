"""The Dataflow Flex Templates `make package` emits (devtools/flex_template.py): valid metadata whose
parameters are exactly the jobs' argparse options (read from their source with ast: the jobs import
apache_beam, which lives in .venv-beam, not here), a spec naming a content-addressed image, and a build
context holding the job, the shared/ modules it imports and the pinned Beam requirements. The image
itself is not built here (docker + network)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from devtools import flex_template as ft
from devtools.package import ROOT


def _options(module: str) -> dict[str, dict]:
    """``dest -> {"flags": [...], "required": bool}`` of every ap.add_argument(...) in the job's main()."""
    src = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    main = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == "main")
    out = {}
    for call in ast.walk(main):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument":
            flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
            kw = {k.arg: k.value for k in call.keywords}
            dest = kw["dest"].value if "dest" in kw else flags[0].lstrip("-").replace("-", "_")
            req = "required" in kw and isinstance(kw["required"], ast.Constant) and kw["required"].value is True
            out[dest] = {"flags": flags, "required": req}
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataflow")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.flex_template",
            "--out",
            str(out),
            "--image-repo",
            "europe-docker.pkg.dev/p/daihuo",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return out, r.stdout


@pytest.mark.parametrize("t", ft.TEMPLATES, ids=lambda t: t.name)
def test_metadata_parameters_are_the_jobs_options(t, built):
    out, _ = built
    meta = json.loads((out / f"{t.name}.metadata.json").read_text())
    assert meta["name"] == t.name and meta["description"]
    opts = _options(t.module)
    names = [p["name"] for p in meta["parameters"]]
    assert len(names) == len(set(names))
    # every parameter is an option the job parses, spelled as the launcher passes it (--name=value)
    for p in meta["parameters"]:
        assert set(p) <= {"name", "label", "helpText", "isOptional", "parameterType", "regexes"}, p
        assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*", p["name"]) and p["label"] and p["helpText"]
        assert p["parameterType"] == "TEXT" and isinstance(p["isOptional"], bool)
        assert p["name"] in opts, (t.name, p["name"])
        assert f"--{p['name']}" in opts[p["name"]]["flags"], (t.name, p["name"], opts[p["name"]]["flags"])
        for rx in p.get("regexes", []):
            re.compile(rx)
        if opts[p["name"]]["required"]:
            assert p["isOptional"] is False, p["name"]
    # and every option of the job is a parameter, or left out on purpose (with the reason)
    assert set(opts) == set(names) | set(t.not_parameters), (t.name, set(opts) ^ set(names))
    assert all(t.not_parameters.values())


def test_store_parameter_validates_bucket_urls():
    (rx,) = next(p for p in ft.TEMPLATES[0].params if p.name == "store").regexes
    assert re.match(rx, "gs://proj-daihuo") and re.match(rx, "gs://proj-daihuo/")
    for bad in ("s3://x", "gs://", "file:///tmp/x", "gs://UPPER"):
        assert not re.match(rx, bad), bad


@pytest.mark.parametrize("t", ft.TEMPLATES, ids=lambda t: t.name)
def test_spec_and_build_context(t, built):
    out, stdout = built
    ctx = out / t.name
    tag = (ctx / "IMAGE_TAG").read_text().strip()
    spec = json.loads((out / f"{t.name}.spec.json").read_text())
    image = f"europe-docker.pkg.dev/p/daihuo/{t.name}:{tag}"
    assert spec["image"] == image and spec["sdkInfo"] == {"language": "PYTHON"}
    assert spec["defaultEnvironment"]["sdkContainerImage"] == image  # workers run the same image
    assert spec["metadata"] == json.loads((out / f"{t.name}.metadata.json").read_text())
    df = (ctx / "Dockerfile").read_text()
    assert f"FROM {ft.LAUNCHER_BASE} AS launcher" in df
    assert f"FROM apache/beam_python{ft.PYTHON}_sdk:{ft.beam_version()}" in df
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py" in df
    assert "pip install --no-cache-dir -r /template/requirements.txt" in df
    assert (ctx / "requirements.txt").read_text() == (ROOT / "requirements" / "beam.txt").read_text()
    assert f"from {t.module} import main" in (ctx / "main.py").read_text()
    ast.parse((ctx / "main.py").read_text())
    # the job and every shared module it imports are in the context; no tests, no functions, no devtools
    files = {p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file()}
    assert t.module.replace(".", "/") + ".py" in files
    assert {
        "shared/__init__.py",
        "shared/contract.py",
        "shared/pipeline/clean.py",
        "shared/adapters/storage.py",
    } <= files
    assert not [f for f in files if f.startswith(("tests/", "functions/", "devtools/", "bench/"))]
    for f in files:
        if f.endswith(".py") and f.startswith("shared/"):
            assert (ROOT / f).read_bytes() == (ctx / f).read_bytes(), f
    assert f"gcloud dataflow flex-template build gs://TEMPLATE_BUCKET/templates/{t.name}.json" in stdout
    assert f"--image {image}" in stdout


def test_image_tag_is_content_addressed(tmp_path):
    t = ft.TEMPLATES[0]
    a = ft.build(t, tmp_path / "a")["image"]
    b = ft.build(t, tmp_path / "b")["image"]
    assert a == b  # same source, same tag: an unchanged job does not relaunch on a new image
    assert ft.build(t, tmp_path / "a")["image"] == a  # rebuilding in place is idempotent
