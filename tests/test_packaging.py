"""`make package` (devtools/package.py): every function's bundle is deployable on its own.

For each function declared in infra/topology.json whose functions/<name>/main.py exists:
* the bundle builds deterministically (same source -> byte-identical zip);
* it holds main.py + requirements.txt at the root and the shared/ modules it needs, no caches,
  tests, var/ or bench/, nor the local-only tooling;
* unzipped alone, its main.py imports in isolation (``python -I``, only the bundle dir on sys.path
  besides the venv's site-packages, since per-bundle pip installs are not possible offline) and the
  target is registered with functions-framework under the right signature type;
* every third-party import in the bundle's code is pinned in its requirements.txt (module ->
  distribution via importlib.metadata), every pin is used, and every pin equals the runtime lock's
  (requirements/runtime.txt).

And the lock files (requirements/README.md): each role's lock pins what requirements.txt pins, the
union of the roles is requirements.txt, every pin is explained by its ``# via`` line, the deployed code
imports only runtime requirements, and every direct requirement is imported or says why not.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
from devtools import package  # noqa: E402

TOPOLOGY = json.loads((ROOT / "infra" / "topology.json").read_text())
FUNCTIONS = sorted(TOPOLOGY["functions"])
SIGNATURE = {"http": "http", "topic": "cloudevent", "push": "cloudevent"}

# Imported somewhere in a bundle but deliberately not shipped, with the reason.
NOT_SHIPPED = {
    "boto3": "S3 backend of shared/adapters/storage.py, imported lazily only for s3:// stores; on GCP DAIHUO_STORE=gs://",
    "botocore": "same as boto3",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.\-+!]+)", line)
        assert m, f"{path}: {line!r} is not an exact pin name==version"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


ROOT_PINS = _pins(ROOT / "requirements.txt")  # everything `make venv` installs
RUNTIME_PINS = _pins(ROOT / "requirements" / "runtime.txt")  # what deployed code may install


def _written(name: str) -> None:
    if not (ROOT / "functions" / name / "main.py").is_file():
        pytest.skip(f"functions/{name}/main.py is not written yet")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def bundles(dist):
    built = {}
    for name in FUNCTIONS:
        if (ROOT / "functions" / name / "main.py").is_file():
            built[name] = package.build(name, dist)
    return built


def _unzip(bundle, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bundle.path) as zf:
        zf.extractall(dest)
    return dest


def test_every_function_folder_is_in_topology():
    assert sorted(package.function_names()) == FUNCTIONS


@pytest.mark.parametrize("name", FUNCTIONS)
def test_bundle_is_deterministic(name, bundles, tmp_path):
    _written(name)
    again = package.build(name, tmp_path)
    assert again.sha256 == bundles[name].sha256
    with zipfile.ZipFile(again.path) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {package.FIXED_DATE}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_bundle_contents(name, bundles):
    _written(name)
    files = bundles[name].files
    assert "main.py" in files and "requirements.txt" in files
    assert "shared/__init__.py" in files
    for f in files:
        parts = f.split("/")
        assert not set(parts) & {"__pycache__", "tests", "var", "bench"}, f
        assert not f.endswith((".pyc", ".pyo")), f
        assert not parts[-1].startswith("test_"), f
    # local-only tooling never ships
    assert not any(f.startswith("devtools/") for f in files), [f for f in files if f.startswith("devtools/")]
    assert (ROOT / "functions" / name / "requirements.txt").read_bytes() == zipfile.ZipFile(bundles[name].path).read(
        "requirements.txt"
    )


_PROBE = r"""
import importlib.util, json, sys
bundle = sys.argv[1]
sys.path.insert(0, bundle)
import main
import functions_framework
from functions_framework import _function_registry as reg
target, want = sys.argv[2], sys.argv[3]
fn = getattr(main, target, None)
app = functions_framework.create_app(target=target, source=bundle + "/main.py", signature_type=want)
import shared
print(json.dumps({
    "callable": callable(fn),
    "registered": reg.REGISTRY_MAP.get(target),
    "shared_from": shared.__file__,
    "main_from": main.__file__,
    "repo_on_path": any(p.rstrip("/") == sys.argv[4] for p in sys.path),
    "rules": len(list(app.url_map.iter_rules())),
    "devtools_importable": importlib.util.find_spec("devtools") is not None,
}))
"""


@pytest.mark.parametrize("name", FUNCTIONS)
def test_bundle_imports_in_isolation(name, bundles, tmp_path):
    _written(name)
    spec = TOPOLOGY["functions"][name]
    src = _unzip(bundles[name], tmp_path / name)
    want = SIGNATURE[spec["trigger"]]
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE, str(src), spec["entry_point"], want, str(ROOT)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(src),
            "HOME": str(tmp_path),
            "DAIHUO_STORE": str(tmp_path / "store"),
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["callable"], f"{name}: main.{spec['entry_point']} missing"
    assert got["registered"] == want, f"{name}: registered as {got['registered']!r}, topology says {want!r}"
    assert got["shared_from"].startswith(str(src)) and got["main_from"].startswith(str(src))
    assert not got["repo_on_path"]
    assert got["rules"] >= 1
    assert not got["devtools_importable"], f"{name}: a development module is importable from the bundle"


def test_shipped_code_never_imports_devtools():
    """``shared/`` and ``functions/`` are what deploys; the development package stays out of them."""
    offenders = []
    for path in sorted([*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "devtools"]
    assert not offenders, offenders


# ---------------------------------------------------------------------- imports vs requirements
def _optional_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``try: ... except ImportError`` (optional accelerators)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = set()
            for h in node.handlers:
                for n in ast.walk(h.type) if h.type is not None else []:
                    if isinstance(n, ast.Name):
                        caught.add(n.id)
            if caught & {"ImportError", "ModuleNotFoundError", "Exception"}:
                for stmt in node.body:
                    for n in ast.walk(stmt):
                        if isinstance(n, (ast.Import, ast.ImportFrom)):
                            lines.add(n.lineno)
    return lines


def third_party_imports(src: Path, files: list[Path] | None = None) -> tuple[set[str], set[str]]:
    """(required, optional) absolute module names imported by the code under ``src`` (or by ``files``,
    paths under ``src``), minus stdlib and what ``src`` itself provides (its top-level modules, a file's
    sibling modules)."""
    local_tops = {p.stem for p in src.iterdir() if p.suffix == ".py"} | {p.name for p in src.iterdir() if p.is_dir()}
    required, optional = set(), set()
    for f in sorted(src.rglob("*.py")) if files is None else files:
        tree = ast.parse(f.read_text(encoding="utf-8"))
        siblings = {p.stem for p in f.parent.glob("*.py")} if files is not None else set()  # scripts (bench/)
        opt = _optional_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                if top in sys.stdlib_module_names or top in local_tops | siblings or top == "__future__":
                    continue
                (optional if node.lineno in opt else required).add(m)
    return required, optional


_PKG_DISTS = md.packages_distributions()


def distribution_of(module: str) -> str | None:
    """The distribution that provides ``module`` (namespace packages like google.* resolved by files)."""
    top = module.split(".")[0]
    cands = sorted(set(_PKG_DISTS.get(top, [])))
    if len(cands) <= 1:
        return _norm(cands[0]) if cands else None
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        prefix = "/".join(parts[:depth])
        owners = set()
        for d in cands:
            for f in md.distribution(d).files or []:
                s = str(f)
                if s.startswith(prefix + "/") or s == prefix + ".py":
                    owners.add(_norm(d))
                    break
        if len(owners) == 1:
            return owners.pop()
        if owners:
            return None  # a shared namespace level (google.cloud): the deeper import decides
    return None


@pytest.mark.parametrize("name", FUNCTIONS)
def test_requirements_cover_imports_and_match_root_pins(name, bundles, tmp_path):
    _written(name)
    src = _unzip(bundles[name], tmp_path / name)
    pins = _pins(src / "requirements.txt")
    required, optional = third_party_imports(src)  # optional = try/except ImportError (numba): may be shipped

    needed: dict[str, set[str]] = {}
    unresolved = []
    for m in sorted(required):
        if m.split(".")[0] in NOT_SHIPPED:
            continue
        dist_name = distribution_of(m)
        if dist_name is None:
            # a namespace level shared by several distributions is fine if a deeper import resolves
            if any(o.startswith(m + ".") for o in required):
                continue
            unresolved.append(m)
            continue
        needed.setdefault(dist_name, set()).add(m)
    assert not unresolved, f"{name}: cannot map {unresolved} to an installed distribution"

    missing = {d: sorted(ms) for d, ms in needed.items() if d not in pins}
    assert not missing, f"{name}: imported but not pinned in functions/{name}/requirements.txt: {missing}"
    # an optional accelerator (imported under try/except ImportError) may be pinned on purpose (train: numba)
    shipped_optional = {distribution_of(m) for m in optional} - {None}
    unused = sorted(set(pins) - set(needed) - shipped_optional)
    assert not unused, f"{name}: pinned but never imported by the bundle: {unused}"
    for d, version in pins.items():
        assert d in RUNTIME_PINS, f"{name}: {d} is not in requirements/runtime.txt (add it to runtime.in, `make lock`)"
        assert version == RUNTIME_PINS[d], f"{name}: {d}=={version} but requirements/runtime.txt pins {RUNTIME_PINS[d]}"


def test_package_cli_builds_every_written_function(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "devtools.package", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    written = [n for n in FUNCTIONS if (ROOT / "functions" / n / "main.py").is_file()]
    assert sorted(p.stem for p in tmp_path.glob("*.zip")) == written


# ---------------------------------------------------------------------- lock files (requirements/README.md)
REQ = ROOT / "requirements"
ROLES = ("runtime", "test", "bench", "dev")
SHIPPED_DIRS = ("shared", "functions")  # what deploys
CODE_DIRS = ("shared", "functions", "devtools", "tests", "bench")


def _direct(role: str) -> dict[str, str]:
    """``{distribution: comment}`` of the requirements written in requirements/<role>.in itself."""
    out = {}
    for line in (REQ / f"{role}.in").read_text().splitlines():
        spec, _, comment = line.partition("#")
        spec = spec.strip()
        if not spec or spec.startswith("-r "):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[A-Za-z0-9_,\-]+\])?", spec)
        assert m, f"requirements/{role}.in: {spec!r}: direct requirements are bare names (versions live in the locks)"
        out[_norm(m.group(1))] = comment.strip()
    return out


def _included(role: str) -> list[str]:
    """Roles whose .in ``role``.in includes with ``-r`` (transitively), itself first."""
    roles = [role]
    for line in (REQ / f"{role}.in").read_text().splitlines():
        m = re.fullmatch(r"-r\s+(\w+)\.in", line.split("#", 1)[0].strip())
        if m:
            roles += [r for r in _included(m.group(1)) if r not in roles]
    return roles


def _via(path: Path) -> dict[str, list[str]]:
    """``{distribution: [what pulls it in]}`` from pip-compile's ``# via`` annotations (line style)."""
    out = {}
    for line in path.read_text().splitlines():
        spec, _, comment = line.partition("#")
        if "==" not in spec:
            continue
        assert comment.strip().startswith("via "), f"{path.name}: {line!r} has no '# via' (compile with `make lock`)"
        out[_norm(spec.split("==")[0].strip())] = [v.strip() for v in comment.strip()[4:].split(",")]
    return out


def test_role_locks_are_requirements_txt_split_by_role():
    """Each requirements/<role>.txt pins exactly requirements.txt's versions; together they are requirements.txt."""
    union: dict[str, str] = {}
    for role in ROLES:
        pins = _pins(REQ / f"{role}.txt")
        differ = {d: (v, ROOT_PINS.get(d)) for d, v in pins.items() if ROOT_PINS.get(d) != v}
        assert not differ, f"requirements/{role}.txt vs requirements.txt (run `make lock`): {differ}"
        for r in _included(role):
            missing = sorted(set(_direct(r)) - set(pins))
            assert not missing, f"requirements/{r}.in lists {missing}, not in requirements/{role}.txt (`make lock`)"
        union |= pins
    assert not set(ROOT_PINS) - set(union), (
        f"pinned in requirements.txt, needed by no role: {set(ROOT_PINS) - set(union)}"
    )
    for role in ("test", "bench"):  # each builds on the runtime lock
        assert set(RUNTIME_PINS) <= set(_pins(REQ / f"{role}.txt")), role


@pytest.mark.parametrize("lock", ["requirements.txt", *(f"requirements/{r}.txt" for r in ROLES)])
def test_every_pin_is_pulled_in_by_a_direct_requirement(lock):
    """A lock's ``# via`` lines form a closed graph: each pin comes from an .in that still lists it or from
    another pin of the same lock (a requirement removed from an .in without `make lock` leaves a stale pin)."""
    via = _via(ROOT / lock)
    assert set(via) == set(_pins(ROOT / lock))
    stale = []
    for dist, sources in via.items():
        own = [s for s in sources if s != "-c requirements.txt"]
        ok = bool(own)
        for s in own:
            m = re.fullmatch(r"-r requirements/(\w+)\.in", s)
            ok &= (dist in _direct(m.group(1))) if m else (_norm(s) in via)
        if not ok:
            stale.append(f"{dist} (via {', '.join(sources)})")
    assert not stale, f"{lock}: not pulled in by the .in files as they are (`make lock`): {stale}"


def _imported_distributions(dirs: tuple[str, ...]) -> tuple[dict[str, set[str]], list[str]]:
    files = sorted(f for d in dirs for f in (ROOT / d).rglob("*.py"))
    required, optional = third_party_imports(ROOT, files)
    found: dict[str, set[str]] = {}
    unresolved = []
    for m in sorted(required | optional):
        dist_name = distribution_of(m)
        if dist_name is None:
            if m in required and not any(o.startswith(m + ".") for o in required):
                unresolved.append(m)
            continue
        found.setdefault(dist_name, set()).add(m)
    return found, unresolved


def test_direct_requirements_are_what_the_code_imports():
    """Deployed code imports only runtime requirements; every import in the tree is a direct requirement of
    some role (not a transitive accident); every direct requirement is imported or says why not."""
    shipped, unresolved = _imported_distributions(SHIPPED_DIRS)
    everything, unresolved_all = _imported_distributions(CODE_DIRS)
    assert not unresolved_all, f"imports no installed distribution provides: {unresolved_all} (`make venv`?)"
    direct = {role: _direct(role) for role in ROLES}
    runtime = set(direct["runtime"])
    not_runtime = {d: sorted(ms) for d, ms in shipped.items() if d not in runtime}
    assert not not_runtime, f"shared/ or functions/ import these; add them to requirements/runtime.in: {not_runtime}"
    all_direct = {d: c for role in ROLES for d, c in direct[role].items()}
    undeclared = {d: sorted(ms) for d, ms in everything.items() if d not in all_direct}
    assert not undeclared, f"imported but no requirements/*.in lists them (README: adding a dependency): {undeclared}"
    unused = sorted(d for d, c in all_direct.items() if d not in everything and not c.startswith("not imported"))
    assert not unused, f"direct requirements nothing imports (drop them, or say '# not imported: why'): {unused}"
