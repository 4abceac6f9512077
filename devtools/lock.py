"""`make lock`'s last step: each function's pins follow the runtime lock.

``functions/<name>/requirements.txt`` (what a bundle installs) lists by hand the distributions that
function imports; the versions are not chosen there: this rewrites every ``name==version`` line to
the version in ``requirements/runtime.txt`` (compiled by pip-compile), keeping names, order and
comments. A pin of something the runtime lock does not hold is an error (add it to
``requirements/runtime.in`` first). ``--check`` only reports. tests/test_packaging.py checks the same.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)==(?P<version>[A-Za-z0-9_.\-+!]+)(?P<rest>\s*(#.*)?)$")


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """``{normalised name: version}`` of the exact pins in a requirements file (comments ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            pins[norm(m["name"])] = m["version"]
    return pins


def sync(root: Path = ROOT, check: bool = False) -> list[str]:
    """Align every function's pins with the runtime lock; return the changes (``check``: write nothing)."""
    runtime = read_pins(root / "requirements" / "runtime.txt")
    changes, unknown = [], []
    for req in sorted((root / "functions").glob("*/requirements.txt")):
        lines = req.read_text().splitlines(keepends=True)
        out = []
        for line in lines:
            m = PIN.match(line.rstrip("\n"))
            if m and norm(m["name"]) not in runtime:
                unknown.append(f"{req.relative_to(root)}: {m['name']}")
            elif m and m["version"] != runtime[norm(m["name"])]:
                new = runtime[norm(m["name"])]
                changes.append(f"{req.relative_to(root)}: {m['name']} {m['version']} -> {new}")
                line = f"{m['name']}=={new}{m['rest']}\n"
            out.append(line)
        if not check and out != lines:
            req.write_text("".join(out))
    if unknown:
        raise SystemExit(
            "not in requirements/runtime.txt (add them to requirements/runtime.in, then `make lock`): "
            + ", ".join(unknown)
        )
    return changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report differences, change nothing (exit 1 if any)")
    args = ap.parse_args(argv)
    changes = sync(check=args.check)
    for c in changes:
        print(c)
    if not changes:
        print("functions/*/requirements.txt agree with requirements/runtime.txt")
    return 1 if args.check and changes else 0


if __name__ == "__main__":
    sys.exit(main())
