"""Alert rules: their thresholds (``DAIHUO_ALERT_RULES``, validated) and their evaluation, pure (no I/O).

Four rules (docs/alerts.md). Each evaluation returns the :class:`Alert` s that fire, and nothing for a
normal situation:

* ``gmv_drop``: a stream's GMV per minute over the last ``window_min`` complete minutes is below
  ``drop_below`` x its own rate over the ``baseline_min`` minutes before (live layer and batch), or,
  after a clean run, a stream's GMV per minute is below ``drop_below`` x its host's typical rate
  (the host's other streams). Streams whose baseline is under ``min_baseline_gmv_per_min`` are
  ignored (a quiet room dropping from 0.2 to 0 is noise).
* ``quarantine_rate``: a clean run quarantined more than ``max_rate`` of its rows (runs of at least
  ``min_rows`` rows).
* ``dead_letter_depth``: more than ``max_messages`` messages wait on a dead-letter subscription.
* ``model_not_promoted``: the last ``runs`` train runs (model versions) were all not promoted.

Every alert carries a ``window``: the identity of the condition (the window bucket of a GMV drop,
the run of a quarantine spike, ...). ``Alert.id`` hashes (rule, subject, window), so evaluating the
same condition twice, or redelivering the message that triggered it, gives the same id and the
sink (shared/alerts.py) records and publishes it once.

The rules' configuration: ``DAIHUO_ALERT_RULES`` is a JSON object of overrides over
:data:`DEFAULT_RULES`, e.g. ``{"gmv_drop": {"drop_below": 0.4}, "dead_letter_depth": {"enabled":
false}}``. An unknown rule or field, a wrong type or an out-of-range value is refused when the
settings are read (``SettingsError`` naming the rule and field).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

RULE_NAMES = ("gmv_drop", "quarantine_rate", "dead_letter_depth", "model_not_promoted")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True


class GmvDropRule(_Rule):
    window_min: int = Field(default=10, ge=1, le=240, description="minutes of the recent window")
    baseline_min: int = Field(
        default=30, ge=1, le=1440, description="minutes before the window that set the stream's rate"
    )
    drop_below: float = Field(default=0.5, gt=0, lt=1, description="fires when recent < drop_below x baseline")
    min_baseline_gmv_per_min: float = Field(
        default=10.0, ge=0, description="ignore streams whose baseline rate is lower"
    )
    min_baseline_coverage: float = Field(
        default=0.5, gt=0, le=1, description="share of baseline_min the stream must have been on (else: too young)"
    )
    compare_host: bool = Field(
        default=True, description="after a clean run, also compare each stream with its host's rate"
    )
    min_stream_minutes: float = Field(
        default=10.0, ge=0, description="host comparison: streams shorter than this are skipped"
    )


class QuarantineRateRule(_Rule):
    max_rate: float = Field(default=0.05, gt=0, lt=1, description="fires when dropped / rows_in is above")
    min_rows: int = Field(default=100, ge=1, description="runs with fewer input rows are not judged")


class DeadLetterRule(_Rule):
    max_messages: int = Field(default=0, ge=0, description="fires when more messages than this wait")
    subscriptions: list[str] = Field(default_factory=lambda: ["dead-letters-inspect"], min_length=1)
    window_s: int = Field(default=3600, ge=60, description="one alert per subscription per window while it persists")


class ModelRule(_Rule):
    runs: int = Field(default=3, ge=1, le=100, description="fires when this many train runs in a row were not promoted")


class AlertRules(BaseModel):
    """Every rule's thresholds. Built from :data:`DEFAULT_RULES` and the overrides of ``DAIHUO_ALERT_RULES``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gmv_drop: GmvDropRule = Field(default_factory=lambda: GmvDropRule())
    quarantine_rate: QuarantineRateRule = Field(default_factory=lambda: QuarantineRateRule())
    dead_letter_depth: DeadLetterRule = Field(default_factory=lambda: DeadLetterRule())
    model_not_promoted: ModelRule = Field(default_factory=lambda: ModelRule())

    @model_validator(mode="after")
    def _baseline_not_shorter(self) -> AlertRules:
        g = self.gmv_drop
        if g.baseline_min < g.window_min:
            raise ValueError(f"gmv_drop.baseline_min ({g.baseline_min}) is shorter than window_min ({g.window_min})")
        return self


DEFAULT_RULES: dict[str, dict[str, Any]] = AlertRules().model_dump(mode="json")


class RulesError(ValueError):
    """A rules document the model refuses (the message names the rule and the field)."""


def parse_rules(overrides: Mapping[str, Any] | None) -> AlertRules:
    """The defaults with ``overrides`` (rule -> {field: value}) applied; RulesError on a bad one."""
    overrides = dict(overrides or {})
    doc: dict[str, Any] = {k: dict(v) for k, v in DEFAULT_RULES.items()}
    for name, fields in overrides.items():
        if name not in doc:
            raise RulesError(f"unknown rule {name!r} (known: {', '.join(RULE_NAMES)})")
        if not isinstance(fields, Mapping):
            raise RulesError(f"{name}: expected an object of fields, got {type(fields).__name__}")
        doc[name].update(fields)
    try:
        return AlertRules.model_validate(doc)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "rules"
            parts.append(f"{loc}: {err['msg']}")
        raise RulesError("; ".join(parts)) from None


# ------------------------------------------------------------------------------------------ alerts
def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Alert:
    """One firing. ``time``: when the condition holds (event time where there is one), ISO UTC."""

    rule: str
    subject: str  # "stream:<id>", "clean", "subscription:<name>", "model"
    value: float
    threshold: float
    time: str
    window: str  # the condition's identity within (rule, subject): the dedupe key
    source: Literal["clean", "live", "train"] = "clean"
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.rule}|{self.subject}|{self.window}".encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "subject": self.subject,
            "value": self.value,
            "threshold": self.threshold,
            "time": self.time,
            "window": self.window,
            "source": self.source,
            "message": self.message,
            "details": self.details,
        }


# --------------------------------------------------------------------------------------- gmv_drop
def gmv_drop_series(
    subject: str,
    gmv_by_minute: Mapping[int, float],
    last_minute: int,
    rule: GmvDropRule,
    *,
    first_minute: int | None = None,
    source: Literal["clean", "live", "train"] = "live",
) -> Alert | None:
    """The own-rate comparison over one stream's GMV per minute (minute = epoch // 60).

    ``last_minute``: the newest COMPLETE minute to judge (the recent window is ``last_minute -
    window_min + 1 .. last_minute``); ``first_minute``: the stream's first minute (default: the
    first minute with a value; minutes without one count as 0). The window bucket is
    ``last_minute // window_min``: one alert per ``window_min`` minutes while the drop lasts."""
    if not rule.enabled:
        return None
    if first_minute is None:
        if not gmv_by_minute:
            return None
        first_minute = min(gmv_by_minute)
    w, b = rule.window_min, rule.baseline_min
    recent_from = last_minute - w + 1
    base_to = recent_from - 1
    base_from = max(base_to - b + 1, first_minute)
    base_len = base_to - base_from + 1
    if base_len < max(1, rule.min_baseline_coverage * b):
        return None  # the stream is too young to have a rate of its own
    recent = sum(gmv_by_minute.get(m, 0.0) for m in range(recent_from, last_minute + 1)) / w
    baseline = sum(gmv_by_minute.get(m, 0.0) for m in range(base_from, base_to + 1)) / base_len
    if baseline < rule.min_baseline_gmv_per_min or baseline <= 0:
        return None
    threshold = rule.drop_below * baseline
    if recent >= threshold:
        return None
    return Alert(
        rule="gmv_drop",
        subject=subject,
        value=round(recent, 4),
        threshold=round(threshold, 4),
        time=iso((last_minute + 1) * 60),
        window=f"own:{last_minute // w}",
        source=source,
        message=(
            f"{subject}: GMV {recent:.2f}/min over the last {w} min, below {rule.drop_below:.0%} of its own "
            f"{baseline:.2f}/min over the {base_len} min before"
        ),
        details={"compare": "own", "recent_per_min": recent, "baseline_per_min": baseline, "baseline_min": base_len},
    )


def gmv_drop_vs_host(streams: Iterable[Mapping[str, Any]], rule: GmvDropRule, *, at: str) -> list[Alert]:
    """After a clean run: each stream's GMV per minute against its host's typical rate (the host's
    OTHER streams: their GMV over their minutes). ``streams``: rows of the ``stream`` analytics table
    (stream_id, host_id, gmv, duration_s, end); a host needs another stream to compare with."""
    if not rule.enabled or not rule.compare_host:
        return []
    rows = [
        r
        for r in streams
        if r.get("host_id") and r.get("duration_s") and float(r["duration_s"]) / 60 >= rule.min_stream_minutes
    ]
    by_host: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_host.setdefault(str(r["host_id"]), []).append(r)
    out = []
    for host, rs in sorted(by_host.items()):
        if len(rs) < 2:
            continue
        total_gmv = sum(float(r.get("gmv") or 0.0) for r in rs)
        total_min = sum(float(r["duration_s"]) / 60 for r in rs)
        for r in rs:
            minutes = float(r["duration_s"]) / 60
            other_min = total_min - minutes
            if other_min <= 0:
                continue
            typical = (total_gmv - float(r.get("gmv") or 0.0)) / other_min
            rate = float(r.get("gmv") or 0.0) / minutes
            if typical < rule.min_baseline_gmv_per_min:
                continue
            threshold = rule.drop_below * typical
            if rate >= threshold:
                continue
            sid = str(r["stream_id"])
            out.append(
                Alert(
                    rule="gmv_drop",
                    subject=f"stream:{sid}",
                    value=round(rate, 4),
                    threshold=round(threshold, 4),
                    time=str(r.get("end") or at),
                    window="host",  # once per stream: its whole span was judged
                    source="clean",
                    message=(
                        f"stream {sid}: GMV {rate:.2f}/min, below {rule.drop_below:.0%} of host {host}'s typical "
                        f"{typical:.2f}/min (its other {len(rs) - 1} streams)"
                    ),
                    details={"compare": "host", "host_id": host, "rate_per_min": rate, "host_per_min": typical},
                )
            )
    return out


def host_rates(streams: Iterable[Mapping[str, Any]], rule: GmvDropRule) -> dict[str, dict[str, float]]:
    """Each host's typical GMV per minute over its streams (rows of the ``stream`` analytics table;
    streams under ``min_stream_minutes`` left out): ``{host_id: {"gmv_per_min", "streams", "minutes"}}``.
    The live rule compares a room with it (:func:`gmv_drop_vs_host_live`)."""
    acc: dict[str, list[float]] = {}
    for r in streams:
        minutes = float(r.get("duration_s") or 0.0) / 60
        if not r.get("host_id") or minutes < max(rule.min_stream_minutes, 1e-9):
            continue
        a = acc.setdefault(str(r["host_id"]), [0.0, 0.0, 0.0])
        a[0] += float(r.get("gmv") or 0.0)
        a[1] += minutes
        a[2] += 1
    return {h: {"gmv_per_min": g / m, "streams": int(n), "minutes": m} for h, (g, m, n) in sorted(acc.items()) if m > 0}


def gmv_drop_vs_host_live(
    subject: str,
    gmv_by_minute: Mapping[int, float],
    last_minute: int,
    rule: GmvDropRule,
    *,
    first_minute: int,
    host_id: str,
    host_per_min: float,
) -> Alert | None:
    """A live room against its host's typical GMV per minute (``host_rates`` of the batch data): the
    last ``window_min`` complete minutes below ``drop_below`` x the host's rate, once the room has
    been on for ``window_min`` minutes. Once per room (window ``host``): a room that sells below its
    host all evening is one alert, not one per window."""
    if not rule.enabled or not rule.compare_host or host_per_min < rule.min_baseline_gmv_per_min:
        return None
    w = rule.window_min
    recent_from = last_minute - w + 1
    if recent_from < first_minute:
        return None  # not on for a whole window yet
    recent = sum(gmv_by_minute.get(m, 0.0) for m in range(recent_from, last_minute + 1)) / w
    threshold = rule.drop_below * host_per_min
    if recent >= threshold:
        return None
    return Alert(
        rule="gmv_drop",
        subject=subject,
        value=round(recent, 4),
        threshold=round(threshold, 4),
        time=iso((last_minute + 1) * 60),
        window="host-live",
        source="live",
        message=(
            f"{subject}: GMV {recent:.2f}/min over the last {w} min, below {rule.drop_below:.0%} of host "
            f"{host_id}'s typical {host_per_min:.2f}/min"
        ),
        details={"compare": "host", "host_id": host_id, "recent_per_min": recent, "host_per_min": host_per_min},
    )


# -------------------------------------------------------------------------------- quarantine_rate
def quarantine_rate(summary: Mapping[str, Any], rule: QuarantineRateRule, *, at: str) -> Alert | None:
    """A committed clean run's summary (rows_in, dropped, dropped_by_reason, run_id)."""
    if not rule.enabled or summary.get("status") != "committed":
        return None
    rows = int(summary.get("rows_in") or 0)
    dropped = int(summary.get("dropped") or 0)
    if rows < rule.min_rows:
        return None
    rate = dropped / rows
    if rate <= rule.max_rate:
        return None
    reasons = dict(summary.get("dropped_by_reason") or {})
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
    return Alert(
        rule="quarantine_rate",
        subject="clean",
        value=round(rate, 6),
        threshold=rule.max_rate,
        time=at,
        window=f"run:{summary.get('run_id')}",
        source="clean",
        message=(
            f"clean run {summary.get('run_id')} quarantined {dropped} of {rows} rows ({rate:.1%} > {rule.max_rate:.1%})"
            + (f"; top reasons: {', '.join(f'{k} {v}' for k, v in top)}" if top else "")
        ),
        details={"run_id": summary.get("run_id"), "rows_in": rows, "dropped": dropped, "by_reason": reasons},
    )


# ------------------------------------------------------------------------------ dead_letter_depth
def dead_letter_depth(depths: Mapping[str, int], rule: DeadLetterRule, *, now: float, capped: int) -> list[Alert]:
    """``depths``: subscription -> messages counted waiting (at most ``capped``: a lower bound then)."""
    if not rule.enabled:
        return []
    out = []
    bucket = int(now // rule.window_s)
    for sub, n in sorted(depths.items()):
        if n <= rule.max_messages:
            continue
        out.append(
            Alert(
                rule="dead_letter_depth",
                subject=f"subscription:{sub}",
                value=float(n),
                threshold=float(rule.max_messages),
                time=iso(bucket * rule.window_s),
                window=f"t:{bucket}",
                source="clean",
                message=f"{'at least ' if n >= capped else ''}{n} dead letters wait on {sub} (> {rule.max_messages})",
                details={"subscription": sub, "lower_bound": n >= capped},
            )
        )
    return out


# ----------------------------------------------------------------------------- model_not_promoted
def model_not_promoted(
    metas: Sequence[Mapping[str, Any]], latest: Mapping[str, Any] | None, rule: ModelRule
) -> Alert | None:
    """``metas``: the newest model versions' ``meta.json`` (any order); ``latest``: LATEST.json or None.

    The streak is the versions created after the served one (or all, before any promotion) whose
    decision did not promote them, newest first, stopping at the served version or a promoted one."""
    if not rule.enabled or not metas:
        return None
    served = (latest or {}).get("version")
    streak: list[Mapping[str, Any]] = []
    for m in sorted(metas, key=lambda m: (str(m.get("created_at") or ""), str(m.get("version"))), reverse=True):
        if m.get("version") == served or (m.get("decision") or {}).get("promote"):
            break
        streak.append(m)
    if len(streak) < rule.runs:
        return None
    newest = streak[0]
    return Alert(
        rule="model_not_promoted",
        subject="model",
        value=float(len(streak)),
        threshold=float(rule.runs),
        time=str(newest.get("created_at") or ""),
        window=f"served:{served}:{len(streak) // rule.runs}",  # again after another `runs` runs
        source="train",
        message=(
            f"the last {len(streak)} train runs were not promoted (serving {served or 'nothing'}); newest "
            f"{newest.get('version')}: {(newest.get('decision') or {}).get('reason', '')}"
        ),
        details={"served": served, "versions": [m.get("version") for m in streak]},
    )
