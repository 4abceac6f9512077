"""Pipeline knobs, all overridable from the environment (declared in shared/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import settings


@dataclass(frozen=True)
class TimeRules:
    """Clock-skew rules, shared by archive (partitioning) and clean (ts correction).

    lag = received_at - ts.
    * lag < -max_future_s  (ts in the future of the receiver): device clock ahead -> ts := received_at,
      flagged ``ts_corrected``;
    * lag > max_past_s     (implausibly old):                     ts := received_at, ``ts_corrected``;
    * lag > late_after_s   (old but plausible):                   ts kept, flagged ``late``.
    """

    max_future_s: float = field(default_factory=lambda: settings().max_future_s)
    max_past_s: float = field(default_factory=lambda: settings().max_past_s)
    late_after_s: float = field(default_factory=lambda: settings().late_after_s)
