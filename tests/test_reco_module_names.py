"""No module of shared/reco defines a function name twice at module level (including inside its
``if HAVE_NUMBA:`` blocks): a second definition silently replaces the first for every kernel that
calls it by name (numba resolves globals when it compiles), as a second ``_before`` once did to the
request kernel's tie order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "shared" / "reco"


def _module_level_defs(tree: ast.Module) -> list[str]:
    names: list[str] = []

    def walk(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                overload = any(
                    (isinstance(d, ast.Name) and d.id == "overload")
                    or (isinstance(d, ast.Attribute) and d.attr == "overload")
                    for d in getattr(node, "decorator_list", [])
                )
                if not overload:  # (typing's overload stubs precede their one definition)
                    names.append(node.name)
            elif isinstance(node, (ast.If, ast.Try)):
                walk(node.body)
                walk(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    walk(h.body)

    walk(tree.body)
    return names


@pytest.mark.parametrize("path", sorted(ROOT.glob("*.py")), ids=lambda p: p.name)
def test_no_function_is_defined_twice(path):
    names = _module_level_defs(ast.parse(path.read_text()))
    twice = sorted({n for n in names if names.count(n) > 1})
    # a numpy fallback of the same name under `else:` of `if HAVE_NUMBA` would be legitimate; none exists
    assert not twice, f"{path.name} defines {twice} more than once"
