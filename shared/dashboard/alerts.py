"""The alerts view: ``/api/alerts`` (JSON) and ``/alerts`` (HTML), the recent alerts recorded under
``alerts/`` by clean and live (shared/alerts.py, docs/alerts.md).

Read from the store at each request (a listing of the last days' partitions and one small object per
alert), never cached: a live alert shows at the next poll, whatever the batch data version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared import alerts
from shared.alert_rules import RULE_NAMES
from shared.dashboard.queries import BadParameter

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
FIELDS = ("id", "rule", "subject", "value", "threshold", "time", "source", "message", "published", "recorded_at")


def _limit(args: Mapping[str, str]) -> int:
    raw = args.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        n = int(raw)
    except ValueError:
        raise BadParameter("limit", f"limit must be an integer 1..{MAX_LIMIT}, got {raw!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise BadParameter("limit", f"limit must be an integer 1..{MAX_LIMIT}, got {raw!r}")
    return n


def list_alerts(store, args: Mapping[str, str], *, now: float | None = None) -> dict[str, Any]:
    """``{"alerts": [...newest first], "rules": [...], "days": N}``; ``rule=`` filters by one rule."""
    rule = args.get("rule") or None
    if rule is not None and rule not in RULE_NAMES:
        raise BadParameter("rule", f"unknown rule {rule!r} (known: {', '.join(RULE_NAMES)})")
    limit = _limit(args)
    docs = alerts.recent(store, limit=MAX_LIMIT, now=now)
    if rule:
        docs = [d for d in docs if d.get("rule") == rule]
    out = [{**{k: d.get(k) for k in FIELDS}, "details": d.get("details") or {}} for d in docs[:limit]]
    return {"alerts": out, "rules": list(RULE_NAMES), "days": alerts.LIST_DAYS}
