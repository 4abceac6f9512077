"""What a function instance keeps between requests, and the fault hook of the at-least-once tests.

**Per-instance state** — the one way every ``functions/*/main.py`` holds a singleton (a client, a
service, a loaded model): a module-level ``per_instance(build)`` holder. ``holder.get()`` builds the
value on the first call (not at import: an instance that never serves pays nothing, and a missing
dependency fails the request, not the deploy), under the holder's lock (concurrent first requests
build it once), and returns the same value to every later call of the process. A build that raises
is not remembered: the next request tries again. ``reset()`` (tests) forgets the value, so the next
``get()`` builds anew; ``reset_all()`` forgets every holder. Example::

    _service = runtime.per_instance(lambda: Recommender(ModelHolder(runtime.get_store())))

    @functions_framework.http
    def recommend(request):
        return http.to_flask(_service.get().handle(...))

``get_bus()`` / ``get_store()`` are the process's Pub/Sub client and object store, held that way:
``DAIHUO_STORE`` is where objects live (``gs://bucket[/prefix]``, ``s3://bucket[/prefix]`` or a
local path / ``file://`` URL; default ``var/store``); ``PUBSUB_PROJECT_ID`` /
``GOOGLE_CLOUD_PROJECT`` the Pub/Sub project.

**Fault injection** — ``faults.point(name, store)`` marks a place where a test may make the code
crash (``InjectedCrash``): after archive wrote its objects but before it acked, after clean wrote
clean/ but before the manifest moved, ... It does nothing unless a test installed a plan naming
that point, and nothing outside the hook decides whether to crash: no argument, no message body,
no request field. In-process tests use ``with faults.installed("clean:write_clean"): ...`` (the
point crashes every time it is reached). Tests that run functions in other processes
(functions-framework, the local cloud) set the **test-only** variable ``DAIHUO_TEST_FAULTS``
(comma-separated point names), read once when this module is imported: each named point crashes
the first time it is reached *in that store* (a create-only marker ``state/faults/<point>``, so
"first" holds across processes and retries) and never again. Deployments never set it (infra/ has
no such variable), and on Google Cloud (``K_SERVICE`` set) a plan from the environment is refused
and logged.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_HOLDERS: weakref.WeakSet[PerInstance[Any]] = weakref.WeakSet()


class PerInstance(Generic[T]):
    """A value built on first use and shared by every later request of this process."""

    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._value: T | None = None
        self._built = False
        self._lock = threading.Lock()
        _HOLDERS.add(self)

    def get(self) -> T:
        if not self._built:
            with self._lock:
                if not self._built:
                    self._value = self._build()
                    self._built = True
        return self._value  # type: ignore[return-value]  # built above

    def reset(self) -> None:
        """Tests: forget the value; the next ``get()`` builds a new one."""
        with self._lock:
            self._value, self._built = None, False


def per_instance(build: Callable[[], T]) -> PerInstance[T]:
    return PerInstance(build)


def reset_all() -> None:
    """Tests: forget every per-instance value of this process."""
    for holder in list(_HOLDERS):
        holder.reset()


def _new_bus():
    from shared.adapters.bus import Bus

    return Bus()


def _open_store():
    from shared.adapters.storage import open_store
    from shared.settings import settings

    return open_store(settings().store)


def numba_cache_dir(source_dir: str) -> None:
    """``numba``'s ``cache=True`` writes compiled kernels beside their source; a deployed function's source
    directory is read-only (``os.access`` also sees a read-only mount, which root's file modes would not):
    then the cache goes to the temp directory (numba reads ``NUMBA_CACHE_DIR``, its own variable, when it is
    imported). An instance's workers share it; a new instance compiles once. A set value is kept."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.access(source_dir, os.W_OK):
        return
    import tempfile

    os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "daihuo-numba-cache")


_bus = per_instance(_new_bus)
_store = per_instance(_open_store)


def get_bus():
    return _bus.get()


def get_store():
    return _store.get()


# ------------------------------------------------------------------------------ fault injection
TEST_FAULTS_ENV = "DAIHUO_TEST_FAULTS"  # test-only: never set in a deployment (shared/settings.py)


class InjectedCrash(RuntimeError):
    """Raised at a fault point a test planned."""


class Faults:
    """The fault hook: ``point()`` is a no-op unless a plan names the point (see the module doc)."""

    def __init__(self) -> None:
        self._plan: dict[str, bool] = {}  # point -> once per store (else: every time)
        self._lock = threading.Lock()

    def install(self, *points: str, once: bool = False) -> None:
        with self._lock:
            self._plan.update(dict.fromkeys(points, once))

    def remove(self, *points: str) -> None:
        with self._lock:
            for p in points:
                self._plan.pop(p, None)

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    @contextmanager
    def installed(self, *points: str, once: bool = False) -> Iterator[Faults]:
        """In-process tests: the points crash while the block runs."""
        self.install(*points, once=once)
        try:
            yield self
        finally:
            self.remove(*points)

    @property
    def planned(self) -> list[str]:
        return sorted(self._plan)

    def point(self, name: str, store: Any = None, what: str = "") -> None:
        """Raise ``InjectedCrash`` if a plan names this point (``once``: only the first time in
        ``store``, or in this process without a store); otherwise do nothing."""
        if not self._plan:  # production: nothing is ever planned
            return
        once = self._plan.get(name)
        if once is None:
            return
        if once and not self._first(name, store):
            return
        raise InjectedCrash(f"injected crash at {name}" + (f": {what}" if what else ""))

    def _first(self, name: str, store: Any) -> bool:
        if store is None:
            with self._lock:
                return self._plan.pop(name, None) is not None
        from shared import layout
        from shared.adapters.storage import ABSENT, PreconditionFailed

        try:
            store.put(layout.fault_key(name), b"injected", if_generation_match=ABSENT)
        except PreconditionFailed:
            return False
        return True


def _environ_plan(environ) -> list[str]:
    from shared.settings import read_one

    points = [p.strip() for p in read_one("test_faults", environ).split(",") if p.strip()]
    if points and environ.get("K_SERVICE"):
        from shared.log import get_logger

        get_logger("runtime").error(
            f"{TEST_FAULTS_ENV} is test-only; ignored on Google Cloud", extra={"points": points}
        )
        return []
    return points


faults = Faults()
faults.install(*_environ_plan(os.environ), once=True)


def bigtable_configured(environ=None) -> bool:
    """A Bigtable to talk to: the emulator's variable (``BIGTABLE_EMULATOR_HOST``, tests and the local
    stack) or Google Cloud (``K_SERVICE``). recommend's ``DAIHUO_RECOMMEND_LIVE=auto`` asks this."""
    env = os.environ if environ is None else environ
    return bool(env.get("BIGTABLE_EMULATOR_HOST") or env.get("K_SERVICE"))


# ------------------------------------------------------------------------------ Pub/Sub push
def pubsub_json(cloud_event) -> dict:
    """The JSON object carried by a Pub/Sub push CloudEvent (``data.message.data``, base64), or {}
    when the message has no body or it is not a JSON object (ticks may be empty)."""
    import base64
    import binascii
    import json

    msg = (cloud_event.data or {}).get("message") or {}
    try:
        body = json.loads(base64.b64decode(msg.get("data") or b"") or b"{}")
    except (ValueError, binascii.Error):
        return {}
    return body if isinstance(body, dict) else {}


def pubsub_message_id(cloud_event) -> str | None:
    msg = (cloud_event.data or {}).get("message") or {}
    return msg.get("messageId") or msg.get("message_id")
