"""Build each Cloud Function's deployable source bundle: ``dist/<name>.zip``.

A bundle is what Cloud Functions (2nd gen, python311) builds from: ``main.py`` at the root (from
``functions/<name>/``, with any other non-test file of that folder), the function's pinned
``requirements.txt`` (``functions/<name>/requirements.txt``), and the part of the project's
``shared/`` package that the function actually imports -- the transitive closure of ``shared.*``
imports (module-level and lazy ones alike) found with ``ast``, plus every ``__init__.py`` on the
way and the non-Python files of the packages it uses. Local-only tooling (the local cloud, the
simulator, the demo, benchmarks, tests) therefore never ships, and a bundle's third-party imports
are exactly what its requirements.txt must pin (tests/test_packaging.py checks both).

Zips are deterministic: entries sorted, fixed timestamps (1980-01-01), fixed permissions, so the
same source gives byte-identical bundles and the same SHA-256; Terraform puts that hash in the
object name (infra/storage.tf), so only a changed bundle redeploys.

Usage: ``python -m devtools.package [--out dist] [name ...]``  (default: every function folder that
has a main.py; a folder without one -- still being written -- is reported and skipped, or is an
error with ``--strict``).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = "shared"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
EXCLUDE_DIRS = {"__pycache__", "tests", "test", "var", "bench", ".pytest_cache", ".hypothesis"}
EXCLUDE_SUFFIXES = {".pyc", ".pyo"}


@dataclass
class Bundle:
    name: str
    path: Path
    sha256: str
    files: list[str]


# ------------------------------------------------------------------------------- import closure
def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _package_of(root: Path, file: Path) -> str:
    rel = file.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts)
    return ".".join(parts[:-1])


def imported_modules(file: Path, root: Path) -> set[str]:
    """Every absolute module name ``file`` imports anywhere (module level or inside functions).

    ``from pkg import name`` yields both ``pkg`` and ``pkg.name`` (``name`` may be a submodule);
    relative imports are resolved against the file's package.
    """
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    out: set[str] = set()
    pkg = _package_of(root, file) if file.is_relative_to(root) else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".") if pkg else []
                if node.level > 1:
                    parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base:
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return out


def shared_closure(entry: Path, root: Path = ROOT) -> list[Path]:
    """The files of ``shared/`` that ``entry`` needs, transitively, with their packages' __init__.py."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        f = todo.pop()
        for mod in imported_modules(f, root):
            if mod != SHARED and not mod.startswith(SHARED + "."):
                continue
            parts = mod.split(".")
            # every package on the way is imported too (its __init__ runs)
            for i in range(1, len(parts) + 1):
                target = _module_file(root, ".".join(parts[:i]))
                if target is not None and target not in seen:
                    seen.add(target)
                    todo.append(target)
    files = set(seen)
    # data files shipped inside the packages used (templates, SQL, JSON), never caches or tests
    # and in their data folders (no __init__.py: shared/dashboard/templates/, static/), recursively
    for pkg_init in [p for p in seen if p.name == "__init__.py"]:
        for extra in pkg_init.parent.iterdir():
            if extra.is_file() and extra.suffix not in {".py"} | EXCLUDE_SUFFIXES:
                files.add(extra)
            elif extra.is_dir() and extra.name not in EXCLUDE_DIRS and not (extra / "__init__.py").exists():
                for f in extra.rglob("*"):
                    rel = f.relative_to(extra).parts
                    if f.is_file() and f.suffix not in EXCLUDE_SUFFIXES and not set(rel) & EXCLUDE_DIRS:
                        files.add(f)
    return sorted(files)


# --------------------------------------------------------------------------------------- zipping
def _walk_function_dir(fdir: Path) -> list[Path]:
    out = []
    for p in sorted(fdir.rglob("*")):
        rel = p.relative_to(fdir)
        if not p.is_file() or any(part in EXCLUDE_DIRS for part in rel.parts):
            continue
        if p.suffix in EXCLUDE_SUFFIXES or p.name.startswith("test_") or p.name.endswith("_test.py"):
            continue
        out.append(p)
    return out


def bundle_entries(name: str, root: Path = ROOT) -> dict[str, Path]:
    """Archive name -> source file, for function ``name``."""
    fdir = root / "functions" / name
    main = fdir / "main.py"
    if not main.is_file():
        raise FileNotFoundError(f"functions/{name}/main.py does not exist")
    req = fdir / "requirements.txt"
    if not req.is_file():
        raise FileNotFoundError(f"functions/{name}/requirements.txt does not exist (pin what {name} imports)")
    entries = {p.relative_to(fdir).as_posix(): p for p in _walk_function_dir(fdir)}
    local_py = [p for p in entries.values() if p.suffix == ".py"]
    shared_files: set[Path] = set()
    for f in local_py:
        shared_files.update(shared_closure(f, root))
    for p in shared_files:
        entries[p.relative_to(root).as_posix()] = p
    return entries


def write_zip(entries: dict[str, Path], out: Path) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100644 & 0xFFFF) << 16
            info.create_system = 3  # unix, whatever the build machine is
            zf.writestr(info, entries[arcname].read_bytes())
    tmp.replace(out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def build(name: str, out_dir: Path, root: Path = ROOT) -> Bundle:
    entries = bundle_entries(name, root)
    path = out_dir / f"{name}.zip"
    digest = write_zip(entries, path)
    return Bundle(name, path, digest, sorted(entries))


def function_names(root: Path = ROOT) -> list[str]:
    return sorted(p.name for p in (root / "functions").iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="functions to package (default: all)")
    ap.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    ap.add_argument("--strict", action="store_true", help="a function folder without main.py is an error")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    names = args.names or function_names()
    failed = 0
    for name in names:
        if not (ROOT / "functions" / name / "main.py").is_file() and not args.strict and not args.names:
            print(f"skip   {name}: functions/{name}/main.py not written yet", file=sys.stderr)
            continue
        try:
            b = build(name, out_dir)
        except FileNotFoundError as exc:
            print(f"error  {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        size = b.path.stat().st_size
        print(f"built  {b.path}  {size / 1024:.0f} KiB  {len(b.files)} files  sha256={b.sha256[:16]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
