"""Every ``DAIHUO_*`` environment variable the shipped code reads, declared once (pydantic-settings).

Each field of :class:`Settings` is one variable: ``DAIHUO_`` + the field name in capitals, with its
type, default and a line of doc. Code asks :func:`settings` (the process's values) or
:func:`load` (``load(environ)``: the values a given mapping holds, for handlers built with their
own environment in tests) instead of reading ``os.environ``.

When it is read: :func:`settings` parses the environment the first time it is called and again
whenever a ``DAIHUO_*`` variable changed since (a cheap comparison of those variables), so a value
is taken when a handler or a config is BUILT, as before (a test's ``monkeypatch.setenv`` before it
builds one is seen; :func:`reset` forgets the cached values). A bad value raises
:class:`SettingsError` naming the variable, e.g. ``DAIHUO_MAX_EVENTS='many': Input should be a
valid integer``; an empty value means "unset" (the default).

The per-platform webhook secrets ``DAIHUO_SECRET_<PLATFORM>`` are a pattern, not fields: see
:func:`platform_secret`. Development tools (``devtools/``) declare theirs in :class:`DevSettings`.

``python -m shared.settings --markdown`` prints the table the README lists (a test keeps them equal).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "DAIHUO_"
#: the per-platform webhook secret's variable: ``DAIHUO_SECRET_`` + the platform in capitals
SECRET_PATTERN = PREFIX + "SECRET_<PLATFORM>"
SECRET_DOC = (
    "ingest: the webhook HMAC secret of one platform (e.g. `DAIHUO_SECRET_DOUYIN`); a platform without one is refused"
)
RETENTION_PREFIXES = ("raw", "clean", "quarantine")
DEFAULT_RETENTION_DAYS = {"raw": 365, "clean": 400, "quarantine": 90}


class SettingsError(ValueError):
    """A ``DAIHUO_*`` variable holds a value its declaration refuses (the message names it)."""


def _f(default: Any, doc: str, shown: str | None = None) -> Any:
    """A field: its default, one line of doc (``who: what``) and, if not the default's text, how the
    README shows the default."""
    return Field(default, description=doc, json_schema_extra={} if shown is None else {"shown": shown})


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("daihuo_settings_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (default: ``os.environ``)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRON.get()
        # case-insensitive names; an empty value is "unset" (``env_ignore_empty``)
        return {k.lower(): v for k, v in (os.environ if env is None else env).items() if v != ""}


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, case_sensitive=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _MappingEnvSource(settings_cls))


class Settings(_Base):
    """The deployed functions' settings (one field per ``DAIHUO_*`` variable)."""

    # -- every function ------------------------------------------------------------------------
    store: str = _f(
        "var/store",
        "every function: where objects live: `gs://bucket[/prefix]`, `s3://bucket[/prefix]` or a local path",
    )
    publish_timeout_s: float = _f(10.0, "every publisher: seconds a Pub/Sub publish may take before it fails")
    test_faults: str = _f(
        "",
        "tests only: comma-separated fault points (`clean:write_clean,...`, shared.runtime); refused on Google Cloud",
    )
    # -- ingest --------------------------------------------------------------------------------
    max_body_bytes: int = _f(1_048_576, "ingest: largest request body (413 above)")
    max_events: int = _f(1000, "ingest: most events in one request (413 above)")
    max_event_bytes: int = _f(16_384, "ingest: largest single event (that event is rejected)")
    max_json_depth: int = _f(16, "ingest: deepest nesting of an event (checked on the bytes before parsing)")
    events_topic: str = _f("viewer-events", "ingest: the topic accepted events are published on")
    # -- time rules (archive and clean) ---------------------------------------------------------
    max_future_s: float = _f(300.0, "archive, clean: an event ts further ahead of its receipt is replaced by it")
    max_past_s: float = _f(30 * 86400.0, "archive, clean: an event ts older than this at receipt is replaced by it")
    late_after_s: float = _f(3600.0, "archive, clean: an event received this long after its ts is flagged `late`")
    # -- archive -------------------------------------------------------------------------------
    archive_subscription: str = _f("viewer-events-archive", "archive: the subscription it pulls")
    archive_max_events: int = _f(20_000, "archive: most events in one batch (one raw object per partition)")
    archive_max_pulls: int = _f(40, "archive: most pulls per batch")
    archive_pull_size: int = _f(1000, "archive: messages asked for per pull")
    archive_pull_timeout_s: float = _f(5.0, "archive: seconds one pull may wait")
    archive_max_batches: int = _f(5, "archive: most batches per tick")
    # -- clean ---------------------------------------------------------------------------------
    cleaned_topic: str = _f("events-cleaned", "clean: the topic a committed run's summary is published on")
    clean_max_objects: int = _f(2000, "clean: most raw objects per run (the rest is the next run's backlog)")
    clean_chunk_bytes: int = _f(128 << 20, "clean: bytes of NDJSON parsed per chunk")
    clean_memory_limit: str = _f("2GB", "clean: DuckDB's memory limit (it spills to disk beyond)")
    clean_threads: int | None = _f(None, "clean: DuckDB threads", shown="(CPU count)")
    clean_unknown_items: Literal["keep", "quarantine"] = _f(
        "keep", "clean: an event of an item no catalog record named yet: `keep` it or `quarantine` it"
    )
    clean_engine: Literal["duckdb", "beam", "dataflow"] = _f(
        "duckdb",
        "clean: the engine of a run: `duckdb` (in the function), `beam` (the Apache Beam job, pipelines/beam) or "
        "`dataflow` (a scheduled Dataflow job cleans: a tick only evaluates the alert rules; infra/dataflow.tf sets it)",
    )
    beam_python: str = _f(
        ".venv-beam/bin/python", "clean (engine `beam`): the Beam environment's interpreter (`make venv-beam`)"
    )
    beam_args: str = _f(
        "--runner=FnApiRunner", "clean (engine `beam`): the Beam pipeline options (e.g. DataflowRunner's)"
    )
    tmp: str | None = _f(None, "clean: scratch directory (DuckDB spill, downloads)", shown="(system temp dir)")
    default_currency: str = _f("CNY", "clean: the currency of a price that names none")
    max_session_s: float = _f(4 * 3600.0, "clean, analytics: longest viewing session counted")
    dedupe_lookback_days: int = _f(35, "clean: days the dedupe index and the done list remember")
    retention_days: Annotated[dict[str, int], NoDecode] = _f(
        dict(DEFAULT_RETENTION_DAYS),
        "clean, retention: days kept per prefix, e.g. `raw=180,quarantine=30` (unnamed prefixes keep the default)",
        shown="raw=365,clean=400,quarantine=90",
    )
    # -- train ---------------------------------------------------------------------------------
    train_window_days: float = _f(30.0, "train: training window (event time)")
    train_holdout_frac: float = _f(0.2, "train: last share of item events held out for the gate")
    promote_tolerance: float = _f(0.02, "train: share of the current model's primary NDCG@10 a new model may lose")
    promote_retries: int = _f(3, "train: re-gates against the newly serving model after another run moved LATEST first")
    gate_strict: bool = _f(False, "train: the candidate must beat the best baseline with the 95 % interval above 0")
    eval_max_users: int = _f(5000, "train: holdout users and (user, stream) pairs scored (md5 samples)")
    train_half_life_days: float = _f(30.0, "train: affinity time decay")
    train_params: Annotated[dict[str, Any], NoDecode] = _f(
        {}, "train: recipe overrides (JSON object, see `DEFAULT_RECIPE`)"
    )
    train_neighbours: Literal["in_process", "precomputed"] = _f(
        "in_process",
        "train: where the served fit's item-item cosine neighbours come from: `in_process`, or `precomputed` (the "
        "Beam job's lists, `neighbours/LATEST.json`, when they cover the training data; else in process, "
        "logged); docs/scale.md",
    )
    train_parallel_fit: bool = _f(
        True,
        "train: fit the served model in a forked child process while the gate runs (2+ CPUs; else, or if the "
        "child fails, in process); docs/serving.md §1",
    )
    model_topic: str = _f("model-published", "train: the topic a training outcome is published on")
    code_version: str | None = _f(None, "train: the code part of the version id", shown="(a hash of the source)")
    # -- recommend -----------------------------------------------------------------------------
    model_refresh_s: float = _f(30.0, "recommend: seconds between checks of `models/LATEST.json`")
    erasure_refresh_s: float = _f(30.0, "recommend: seconds between checks of the erasure list")
    viewer_keys: str = _f("", "recommend: viewer-token public keys, JSON `{kid: base64url}` (none: nobody is personal)")
    viewer_audience: str = _f("daihuo-recommend", "recommend: the token `aud` it accepts")
    viewer_token_max_ttl_s: int = _f(900, "recommend: longest accepted token lifetime (`exp - iat`)")
    recommend_max_body_bytes: int = _f(16_384, "recommend: largest POST body (413 above)")
    recommend_max_per_category: int = _f(
        0,
        "recommend: at most this many items of one catalog category in an answer (0: no cap, the default "
        "tuned on validation; a request's `max_per_category` overrides; too few other items: the rest fill "
        "the end); docs/recommendations.md",
    )
    recommend_near_duplicate: float = _f(
        0.9,
        "recommend: an item whose text (title, description, category) has a TF-IDF cosine at or above this "
        "with a higher-ranked one is not listed after it (0: off)",
    )
    recommend_showcase_only: bool = _f(
        True,
        "recommend: with a `stream_id`, only items on the room's current showcase (the live room's, else "
        "the model's; none known: not restricted, said in `note`); a request's `showcase_only` overrides",
    )
    recommend_max_history: int = _f(
        30,
        "recommend and train: a viewer's strongest history items (time-decayed affinity) that score a request; "
        "bounds its cost (train fits the ranker on the same cap)",
    )
    recommend_kernel: bool = _f(
        True, "recommend: score with the compiled request kernel (0: the numpy reference path, a benchmark's anchor)"
    )
    recommend_live: Literal["auto", "on", "off"] = _f(
        "auto",
        "recommend: merge the live state (Bigtable) into answers with a `stream_id`; `auto`: when "
        "`BIGTABLE_EMULATOR_HOST` is set or on Google Cloud",
    )
    recommend_live_timeout_s: float = _f(
        0.03, "recommend: deadline of the live reads (room and viewer, in parallel); then the batch answer"
    )
    recommend_live_room_cache_s: float = _f(
        1.0,
        "recommend: seconds a room's live state is reused per instance (refreshed in the background; 0: a "
        "room read per request)",
    )
    recommend_live_backoff_s: float = _f(
        5.0, "recommend: after 3 failed live reads in a row, seconds answered from the batch model without trying"
    )
    viewer_private_key: SecretStr | None = _f(
        None, "`python -m shared.identity mint`: the platform's signing seed (base64url)"
    )
    # -- dashboard (the analytics function) ------------------------------------------------------
    operator_auth: str = _f("token", "dashboard: `token` (bearer tokens) or `iam` (Cloud Run IAM)")
    operator_tokens: SecretStr = _f(
        SecretStr(""), "dashboard: comma-separated operator tokens, each at least 16 characters", shown=""
    )
    dashboard_check_s: float = _f(30.0, "dashboard: seconds between checks of the manifest's generation")
    dashboard_max_age: int = _f(300, "dashboard: `Cache-Control: max-age` of a page")
    dashboard_root: str = _f("", "dashboard: URL prefix of the links (empty: the function's root)")
    dashboard_tz: str = _f("Asia/Shanghai", "dashboard: IANA time zone the pages show times in (the JSON stays UTC)")
    dashboard_live_poll_s: float = _f(3.0, "dashboard: seconds between the live page's polls")
    # -- the live layer (shared/live, docs/live.md) ------------------------------------------------
    bigtable_project: str | None = _f(None, "live: project of the Bigtable instance", shown="(the Pub/Sub project)")
    bigtable_instance: str = _f("daihuo-live", "live: the Bigtable instance")
    live_table: str = _f("live", "live: the Bigtable table")
    live_shards: int = _f(1, "live: minute rows and unique-viewer rows per room (change only between streams)")
    live_dedupe_s: int = _f(86400, "live: seconds an event id is remembered (GC of the claims family)")
    live_retention_s: int = _f(
        7 * 86400, "live: seconds counters, state and sessions are kept (older events are not applied)"
    )
    live_session_events: int = _f(20, "live: session events kept per viewer and (type, item); the reader's default")
    live_claim_chunk: int = _f(500, "live: most ids in one append claim")
    live_fast_claim: int = _f(1, "live: a row's claim of at most this many ids is one conditional mutation")
    live_timeout_s: float = _f(10.0, "live: the writer's deadline per Bigtable call")
    live_read_timeout_s: float = _f(1.0, "live: the reader's deadline per read (then `LiveUnavailable`)")
    # -- alerts (shared/alert_rules.py, shared/alerts.py, docs/alerts.md) -------------------------
    alerts_topic: str = _f("alerts", "clean, live: the topic alerts are published on (JSON, docs/alerts.md)")
    alert_rules: Annotated[dict[str, Any], NoDecode] = _f(
        {},
        "clean, live: alert thresholds over the defaults, JSON `{rule: {field: value}}` (docs/alerts.md); "
        "validated at load",
    )
    alert_live_check_s: float = _f(
        60.0, "live: seconds between two evaluations of a room's GMV-drop rule per instance (0: every message)"
    )

    @field_validator("retention_days", mode="before")
    @classmethod
    def _retention(cls, v: Any) -> Any:
        """``raw=180,clean=400`` (or a JSON object) over the defaults; an unknown prefix is refused."""
        if not isinstance(v, str):
            return v
        out = dict(DEFAULT_RETENTION_DAYS)
        for item in v.split(","):
            if item.strip():
                name, _, days = item.partition("=")
                name = name.strip().strip("/")
                if name not in out:
                    raise ValueError(f"unknown prefix {name!r} (known: {', '.join(out)})")
                out[name] = int(days)
        return out

    @field_validator("recommend_max_history")
    @classmethod
    def _history_cap(cls, v: int) -> int:
        if not 1 <= v <= 10_000:
            raise ValueError(f"expected 1..10000 items, got {v}")
        return v

    @field_validator("dashboard_tz")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception as exc:
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai or UTC)") from exc
        return v

    @field_validator("alert_rules", mode="before")
    @classmethod
    def _alert_rules(cls, v: Any) -> Any:
        """A JSON object of overrides; checked against the rules' model now (a bad rule stops the load)."""
        from shared.alert_rules import RulesError, parse_rules

        v = cls._json_object(v)
        if isinstance(v, dict):
            try:
                parse_rules(v)
            except RulesError as exc:
                raise ValueError(str(exc)) from None
        return v

    @property
    def alerts(self):  # -> shared.alert_rules.AlertRules
        """The alert rules: the defaults with ``alert_rules`` applied (validated at load)."""
        from shared.alert_rules import parse_rules

        return parse_rules(self.alert_rules)

    @field_validator("train_params", mode="before")
    @classmethod
    def _json_object(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        try:
            out = json.loads(v)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(out, dict):
            raise ValueError("not a JSON object")
        return out

    @property
    def operator_token_list(self) -> list[str]:
        return [t.strip() for t in self.operator_tokens.get_secret_value().split(",") if t.strip()]


class DevSettings(_Base):
    """Variables only the development tools read (never the deployed functions)."""

    port_base: int = _f(8080, "devtools.localcloud: first port of the local stack")
    local_store: str = _f("local", "devtools.localcloud: the local stack's store backend (`local`, `gcs`, `s3`)")


T = TypeVar("T", bound="_Base")


# -- reading -------------------------------------------------------------------------------------
def _parse(cls: type[T], environ: Mapping[str, str] | None) -> T:
    token = _ENVIRON.set(environ)
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(_explain(cls, exc, os.environ if environ is None else environ)) from None
    finally:
        _ENVIRON.reset(token)


def _explain(cls: type[_Base], exc: ValidationError, env: Mapping[str, str]) -> str:
    parts = []
    for err in exc.errors():
        name = PREFIX + str(err["loc"][0]).upper() if err["loc"] else PREFIX + "?"
        value = next((v for k, v in env.items() if k.upper() == name), None)
        secret = cls.model_fields.get(str(err["loc"][0]) if err["loc"] else "", FieldInfo()).annotation
        shown = "***" if secret in (SecretStr, SecretStr | None) else repr(value)
        parts.append(f"{name}={shown}: {err['msg']}")
    return "; ".join(parts)


_PREFIX_B = PREFIX.encode()


def _fingerprint(env: Mapping[str, str]) -> tuple[tuple[Any, Any], ...]:
    """The ``DAIHUO_*`` variables as they are now (the cache key of ``settings()``, called per request).
    ``os.environ`` is read through its encoded mapping on POSIX: no per-variable decode (~6x cheaper,
    ~2.5 µs for 35 variables against ~15 µs)."""
    data = getattr(env, "_data", None) if env is os.environ and os.name == "posix" else None
    if isinstance(data, dict):  # bytes -> bytes on POSIX
        return tuple(kv for kv in data.items() if kv[0].startswith(_PREFIX_B))
    return tuple((k, v) for k, v in env.items() if k.startswith(PREFIX))


_lock = threading.Lock()
_cached: dict[type, tuple[tuple, Any]] = {}


def _current(cls: type[T]) -> T:
    fp = _fingerprint(os.environ)
    hit = _cached.get(cls)
    if hit is not None and hit[0] == fp:
        return hit[1]
    value = _parse(cls, None)
    with _lock:
        _cached[cls] = (fp, value)
    return value


def settings() -> Settings:
    """The process's settings (re-read when a ``DAIHUO_*`` variable changed)."""
    return _current(Settings)


def dev_settings() -> DevSettings:
    return _current(DevSettings)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings a given environment mapping holds (``None``: the process's, as :func:`settings`)."""
    return settings() if environ is None else _parse(Settings, environ)


def read_one(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One field, parsed from its variable alone (a bad value elsewhere does not stop it): for the
    few values read when a module is imported."""
    var = PREFIX + name.upper()
    env = os.environ if environ is None else environ
    return getattr(_parse(Settings, {k: v for k, v in env.items() if k.upper() == var}), name)


def reset() -> None:
    """Forget the cached values (the next :func:`settings` parses the environment again)."""
    with _lock:
        _cached.clear()


def secret_env_name(platform: str) -> str:
    """The variable holding ``platform``'s webhook secret (:data:`SECRET_PATTERN`)."""
    return PREFIX + "SECRET_" + platform.upper()


def platform_secret(platform: str, environ: Mapping[str, str] | None = None) -> bytes | None:
    """``$DAIHUO_SECRET_<PLATFORM>`` as bytes, or None if unset/empty. Read at each call (a lookup,
    per request): a secret rotated into the environment is used at once."""
    value = (os.environ if environ is None else environ).get(secret_env_name(platform))
    return value.encode() if value else None


# -- documentation -------------------------------------------------------------------------------
_KINDS = {str: "text", int: "integer", float: "number", bool: "0 / 1", SecretStr: "secret"}


def _kind(annotation: Any) -> str:
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin is Literal:
        return " / ".join(map(str, args))
    if origin is dict:
        return "`prefix=days,...`" if args[1] is int else "JSON object"
    if args and origin is not None and len(args) == 1:  # X | None
        return _kind(args[0])
    return _KINDS[annotation]


def _shown(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "shown" in extra:
        return str(extra["shown"])
    d = info.default
    if isinstance(d, bool):
        return "1" if d else "0"
    if isinstance(d, float) and d.is_integer():
        return str(int(d))
    if isinstance(d, dict) and not d:
        return "{}"
    return "" if d is None else str(d)


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, default, type, doc) of every declared variable, the secrets' pattern included."""
    out = []
    for cls in (Settings, DevSettings):
        for name, info in cls.model_fields.items():
            out.append((PREFIX + name.upper(), _shown(info), _kind(info.annotation), info.description or ""))
            if name == "events_topic":
                out.append((SECRET_PATTERN, "", "secret", SECRET_DOC))
    return out


def markdown() -> str:
    """The README's table of variables (``python -m shared.settings --markdown``)."""
    lines = ["| Variable | Default | Type | Read by: meaning |", "|---|---|---|---|"]
    for var, default, kind, doc in rows():
        shown = default if default.startswith("(") else f"`{default}`" if default else "(none)"
        lines.append(f"| `{var}` | {shown} | {kind} | {doc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    if args == ["--check"]:  # the current environment parses
        s = settings()
        sys.stdout.write(s.model_dump_json(indent=2) + "\n")
        return 0
    sys.stderr.write("usage: python -m shared.settings --markdown | --check\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
