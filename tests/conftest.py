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
from tests.logdir import LOGS as LOG_DIR  # noqa: E402  (var/test-logs/, per xdist worker)


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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Give every item a unique node id. schemathesis' ``schema.parametrize()`` makes one item per API
    operation, named ``test_x[GET /]``, ``test_x[POST /]``, but under pytest 9 they share the node id
    ``test_x``; pytest-xdist schedules and reports by node id (``--dist loadfile`` ran only the first
    of each such group and reported 11 of tests/test_api_contract.py's 65 items). The id becomes the
    module's id and the item's own name (``test_x[GET /]``), as pytest names a parametrized test."""
    seen: dict[str, int] = {}
    for item in items:
        seen[item.nodeid] = seen.get(item.nodeid, 0) + 1
    for item in items:
        if seen[item.nodeid] > 1:
            nodeid = f"{item.parent.nodeid}::{item.name}"
            if hasattr(item, "_id"):  # pytest 9: a structured NodeId
                item._id = type(item._id).parse(nodeid)
            else:
                item._nodeid = nodeid
    assert len({item.nodeid for item in items}) == len(items), "duplicate test node ids"
