"""shared.settings: every DAIHUO_* variable declared once, read through one module, listed in the README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from shared import settings as S

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "shared", ROOT / "functions"]


def _declared() -> set[str]:
    return {v for v, *_ in S.rows()}


def test_defaults_parse_from_an_empty_environment():
    s = S.load({})
    assert s.store == "var/store" and s.max_events == 1000 and s.max_json_depth == 16
    assert s.retention_days == {"raw": 365, "clean": 400, "quarantine": 90}
    assert s.train_params == {} and s.gate_strict is False and s.clean_threads is None
    assert s.operator_token_list == [] and s.viewer_private_key is None


def test_values_are_typed_and_empty_means_unset():
    s = S.load(
        {
            "DAIHUO_MAX_EVENTS": "5",
            "DAIHUO_ARCHIVE_PULL_TIMEOUT_S": "0.5",
            "DAIHUO_GATE_STRICT": "yes",
            "DAIHUO_TRAIN_PARAMS": '{"C": 0.5}',
            "DAIHUO_RETENTION_DAYS": "raw=30, quarantine=7",
            "DAIHUO_OPERATOR_TOKENS": " a-token-of-16-chars , b ",
            "daihuo_viewer_audience": "lower-case names count",
            "DAIHUO_STORE": "",
        }
    )
    assert (s.max_events, s.archive_pull_timeout_s, s.gate_strict) == (5, 0.5, True)
    assert s.train_params == {"C": 0.5}
    assert s.retention_days == {"raw": 30, "clean": 400, "quarantine": 7}
    assert s.operator_token_list == ["a-token-of-16-chars", "b"]
    assert s.viewer_audience == "lower-case names count"
    assert s.store == "var/store"


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("DAIHUO_MAX_EVENTS", "many", "valid integer"),
        ("DAIHUO_PUBLISH_TIMEOUT_S", "soon", "valid number"),
        ("DAIHUO_GATE_STRICT", "maybe", "valid boolean"),
        ("DAIHUO_CLEAN_UNKNOWN_ITEMS", "drop", "'keep' or 'quarantine'"),
        ("DAIHUO_TRAIN_PARAMS", "{C: 1}", "not JSON"),
        ("DAIHUO_TRAIN_PARAMS", "[1]", "not a JSON object"),
        ("DAIHUO_RETENTION_DAYS", "models=3", "unknown prefix 'models'"),
        ("DAIHUO_RETENTION_DAYS", "raw=soon", "invalid literal"),
    ],
)
def test_a_bad_value_names_its_variable(name, value, says):
    with pytest.raises(S.SettingsError) as err:
        S.load({name: value})
    assert str(err.value).startswith(f"{name}={value!r}: ") and says in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_bad_secret_is_not_echoed():
    with pytest.raises(S.SettingsError) as err:
        S.load({"DAIHUO_VIEWER_PRIVATE_KEY": "", "DAIHUO_OPERATOR_TOKENS": "x", "DAIHUO_MAX_EVENTS": "x"})
    assert "DAIHUO_MAX_EVENTS='x'" in str(err.value)
    s = S.load({"DAIHUO_OPERATOR_TOKENS": "very-secret-operator-token"})
    assert "very-secret" not in repr(s) and "very-secret" not in s.model_dump_json()


def test_settings_follow_the_environment_and_reset(monkeypatch):
    """Read when a handler/config is built: a setenv before building is seen, without a reset."""
    monkeypatch.delenv("DAIHUO_MAX_EVENTS", raising=False)
    assert S.settings().max_events == 1000
    first = S.settings()
    assert S.settings() is first  # cached while nothing changed
    monkeypatch.setenv("DAIHUO_MAX_EVENTS", "7")
    assert S.settings().max_events == 7
    from shared.ingest import IngestConfig

    assert IngestConfig().max_events == 7
    monkeypatch.setenv("DAIHUO_MAX_EVENTS", "oops")
    with pytest.raises(S.SettingsError, match="DAIHUO_MAX_EVENTS='oops'"):
        IngestConfig()
    monkeypatch.delenv("DAIHUO_MAX_EVENTS")
    S.reset()
    assert S.settings().max_events == 1000 and S.settings() is not first


def test_a_mapping_does_not_see_the_process_environment(monkeypatch):
    monkeypatch.setenv("DAIHUO_MAX_EVENTS", "3")
    assert S.load({}).max_events == 1000 and S.load(None).max_events == 3


def test_platform_secrets_are_a_pattern():
    assert S.secret_env_name("douyin") == "DAIHUO_SECRET_DOUYIN"
    assert S.platform_secret("douyin", {"DAIHUO_SECRET_DOUYIN": "s3cr3t"}) == b"s3cr3t"
    assert S.platform_secret("douyin", {"DAIHUO_SECRET_DOUYIN": ""}) is None
    assert S.platform_secret("kuaishou", {"DAIHUO_SECRET_DOUYIN": "s3cr3t"}) is None
    assert S.SECRET_PATTERN in _declared()


def test_readme_lists_every_variable():
    """The README's table is the generated one (``python -m shared.settings --markdown``)."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", text, re.S)
    assert m, "README.md has no settings table between <!-- settings:begin --> and <!-- settings:end -->"
    assert m.group(1) == S.markdown(), "README's settings table is stale: paste `python -m shared.settings --markdown`"


def _code_strings(path: Path):
    """String constants of a module that are not docstrings (f-strings: their literal parts)."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def test_shipped_code_reads_no_daihuo_variable_itself():
    """Only shared/settings.py reads the environment for DAIHUO_* names; storage and bus read the
    cloud SDKs' own variables (STORAGE_EMULATOR_HOST, AWS_*, PUBSUB_PROJECT_ID, ...), runtime the
    platform's K_SERVICE."""
    offenders = []
    for base in SHIPPED:
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "shared/settings.py":
                continue
            src = path.read_text()
            for i, line in enumerate(src.splitlines(), 1):
                if re.search(r"os\.environ|os\.getenv|getenv\(", line) and rel not in (
                    "shared/adapters/storage.py",
                    "shared/adapters/bus.py",
                    "shared/runtime.py",
                ):
                    offenders.append(f"{rel}:{i}: {line.strip()}")
                if re.search(r"""environ.*["']DAIHUO_|["']DAIHUO_.*environ""", line) and not line.lstrip().startswith(
                    "#"
                ):
                    offenders.append(f"{rel}:{i}: {line.strip()}")
            for lineno, s in _code_strings(path):
                if re.fullmatch(r"DAIHUO_[A-Z0-9_]+", s) and s not in _declared():
                    offenders.append(f"{rel}:{lineno}: undeclared {s}")
    assert not offenders, "\n".join(offenders)


def test_every_variable_mentioned_is_declared():
    """Docs and code name only declared variables (or the secrets' pattern)."""
    declared = _declared()
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for base in [*SHIPPED, ROOT / "devtools", ROOT / "infra"]:
        files += sorted(p for p in base.rglob("*") if p.suffix in (".py", ".tf", ".json", ".md"))
    unknown = set()
    for path in files:
        for name in re.findall(r"DAIHUO_[A-Z0-9_]*[A-Z0-9*]", path.read_text()):
            if name.endswith("_*"):  # a family, e.g. DAIHUO_ARCHIVE_*: at least one member is declared
                known = any(d.startswith(name[:-1]) for d in declared)
            else:
                known = name in declared or name.startswith("DAIHUO_SECRET")
            if not known:
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, sorted(unknown)


def test_markdown_cli(capsys):
    assert S.main(["--markdown"]) == 0
    assert capsys.readouterr().out == S.markdown()
    assert S.main(["--nope"]) == 2
