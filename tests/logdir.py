"""Where the tests' emulators and functions write their logs: ``var/test-logs/``, or under pytest-xdist
``var/test-logs/<worker>/`` (``gw0``, ``gw1``...; ``PYTEST_XDIST_WORKER``): each worker starts its own
emulators and functions, and some tests read their function's log from an offset (``live.log``,
``ingest.log``, ``recommend.log``), so two workers must never append to the same file."""

from __future__ import annotations

import os
from pathlib import Path

LOGS = Path(__file__).resolve().parent.parent / "var" / "test-logs" / os.environ.get("PYTEST_XDIST_WORKER", "")
LOGS.mkdir(parents=True, exist_ok=True)
