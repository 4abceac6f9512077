"""The clock-skew rule, written once: archive applies it in Python, clean gets its SQL form from it.

``lag = received_at - ts`` (seconds), with the parameters of :class:`shared.pipeline.config.TimeRules`:

* ``lag < -max_future_s`` (ts in the future of the receiver: the device clock is ahead) or
  ``lag > max_past_s`` (implausibly old): the sent ts is not believed -- ``corrected``: ts := received_at;
* ``late_after_s < lag <= max_past_s`` (old but plausible): ts kept, flagged ``late``.

:func:`skew_flags` is that rule. It takes a number (archive: where to partition a line) or an
:class:`Sql` expression (clean: the ``ts_corrected`` / ``late`` columns), so both read the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from shared.pipeline.config import TimeRules


@dataclass(frozen=True)
class Sql:
    """A SQL boolean/numeric expression built with Python operators (``<``, ``>``, ``<=``, ``-``, ``&``,
    ``|``): enough to render :func:`skew_flags` as SQL. NULL operands give NULL, as in SQL."""

    text: str

    def _cmp(self, op: str, other: float) -> Sql:
        return Sql(f"({self.text} {op} {float(other)!r})")

    def __lt__(self, other: float) -> Sql:  # type: ignore[override]
        return self._cmp("<", other)

    def __gt__(self, other: float) -> Sql:  # type: ignore[override]
        return self._cmp(">", other)

    def __le__(self, other: float) -> Sql:  # type: ignore[override]
        return self._cmp("<=", other)

    def __ge__(self, other: float) -> Sql:  # type: ignore[override]
        return self._cmp(">=", other)

    def __or__(self, other: Sql) -> Sql:
        return Sql(f"({self.text} OR {other.text})")

    def __and__(self, other: Sql) -> Sql:
        return Sql(f"({self.text} AND {other.text})")


L = TypeVar("L", float, Sql)


def skew_flags(lag: L, rules: TimeRules) -> tuple[L, L]:
    """``(corrected, late)`` for a lag in seconds (received_at - ts): the rule of the module docstring."""
    corrected = (lag < -rules.max_future_s) | (lag > rules.max_past_s)
    late = (lag > rules.late_after_s) & (lag <= rules.max_past_s)
    return corrected, late  # type: ignore[return-value]


def skew_sql(lag_expr: str, rules: TimeRules) -> tuple[str, str]:
    """The SQL of :func:`skew_flags` over ``lag_expr`` (an unknown lag -- NULL -- flags nothing)."""
    corrected, late = skew_flags(Sql(lag_expr), rules)
    return f"coalesce({corrected.text}, false)", f"coalesce({late.text}, false)"
