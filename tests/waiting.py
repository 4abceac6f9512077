"""Polling for asynchronous outcomes (Pub/Sub deliveries, scheduled runs) in tests."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.3):
    """Call ``predicate`` until it returns something truthy or ``timeout`` seconds pass; return its
    last value (falsy on timeout, so the caller's assertion says what was missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
