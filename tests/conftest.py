"""Shared fixtures: the real emulators, started once per test session.

Environment variables the fixtures set are restored afterwards so that tests which need the
*absence* of an emulator (Pub/Sub down) can control them precisely.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools import emulators  # noqa: E402

LOG_DIR = ROOT / "var" / "test-logs"


@contextmanager
def _running(start):
    """Start an emulator, export its *_EMULATOR_HOST variables, and undo both afterwards."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    emu = start(log_dir=LOG_DIR)
    old = {k: os.environ.get(k) for k in emu.env}
    os.environ.update(emu.env)
    try:
        yield emu
    finally:
        emu.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def gcs_emulator():
    """A running gcp-storage-emulator; STORAGE_EMULATOR_HOST points at it for the session."""
    with _running(emulators.start_gcs) as emu:
        yield emu


@pytest.fixture(scope="session")
def pubsub_emulator():
    """Google's Pub/Sub emulator; PUBSUB_EMULATOR_HOST points at it for the session."""
    with _running(emulators.start_pubsub) as emu:
        yield emu


@pytest.fixture(scope="session")
def bigtable_emulator():
    """Google's Bigtable emulator (in memory); BIGTABLE_EMULATOR_HOST points at it for the session."""
    with _running(emulators.start_bigtable) as emu:
        yield emu
