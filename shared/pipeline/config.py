"""Pipeline knobs, all overridable from the environment (documented in docs/pipeline.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default, cast=int):
    v = os.environ.get(name)
    return default if v in (None, "") else cast(v)


@dataclass(frozen=True)
class TimeRules:
    """Clock-skew rules, shared by archive (partitioning) and clean (ts correction).

    lag = received_at - ts.
    * lag < -max_future_s  (ts in the future of the receiver): device clock ahead -> ts := received_at,
      flagged ``ts_corrected``;
    * lag > max_past_s     (implausibly old):                     ts := received_at, ``ts_corrected``;
    * lag > late_after_s   (old but plausible):                   ts kept, flagged ``late``.
    """

    max_future_s: float = field(default_factory=lambda: _env("DAIHUO_MAX_FUTURE_S", 300.0, float))
    max_past_s: float = field(default_factory=lambda: _env("DAIHUO_MAX_PAST_S", 30 * 86400.0, float))
    late_after_s: float = field(default_factory=lambda: _env("DAIHUO_LATE_AFTER_S", 3600.0, float))
