"""Recommendation ids and serving experiments (A/B splits by a stable hash of the viewer).

**The recommendation id** (``rec_id``) of every recommend answer is ``r1.<experiment>.<arm>.<ulid>``:

* ``r1`` the format's version; ``<experiment>`` and ``<arm>`` the experiment and arm that served the
  answer (``none`` / ``default`` outside any experiment); names match :data:`NAME` (no ``.``), so the
  analytics recover the arm from the id alone (``shared.pipeline.experiments``) and no serving log is
  needed;
* ``<ulid>`` 26 Crockford base32 characters: 48 bits of milliseconds since the epoch and 80 random bits
  (``os.urandom``), unique and sortable by time.

The whole id matches the contract's id pattern (``shared.contract._ID``): the viewer app sends it back
on ``rec_impression`` (one per item shown, with its ``position``) and on the ``product_click`` /
``add_to_cart`` / ``purchase`` the recommendation led to (docs/experiments.md).

**The experiment config** is one object next to the promoted pointer, ``models/EXPERIMENT.json``
(``layout.EXPERIMENT``), read by every recommend instance on its model refresh (``DAIHUO_MODEL_REFRESH_S``)::

    {"experiment": "ranker-vs-popular", "enabled": true,
     "arms": [{"name": "control", "weight": 0.5, "recipe": "popular"},
              {"name": "ranker",  "weight": 0.5, "recipe": "model", "version": "<model version>"}]}

* ``recipe``: ``model`` (the model's answer as without an experiment) or ``popular`` (the same model asked
  as for a stranger: the stream's bestsellers, else the global ones; no history, no session context);
* ``version``: a model version to serve (loaded next to LATEST by the refresh thread); absent: LATEST;
* ``weight``: the arm's share of viewers (weights are normalised by their sum).

Assignment: ``u = sha256("<experiment>\\0<user_id>")[:8] / 2**64`` against the arms' cumulative shares:
the same viewer always gets the same arm of an experiment (on every instance, across restarts), and a
new experiment name reshuffles everyone. A request without ``user_id`` is outside the experiment.
Bad configs have defined outcomes: unparseable or invalid -> logged, no experiment (every answer as
without one, ``rec_id`` ``r1.none.default.…``); an arm whose version cannot be loaded -> its viewers
get LATEST's answer tagged ``none`` (not counted for either arm), ``experiment.status`` says why.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = r"^[A-Za-z0-9_-]{1,40}$"
NO_EXPERIMENT = "none"
DEFAULT_ARM = "default"
RECIPES = ("model", "popular")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits -> their 2 characters
#: a rec_id (the analytics' SQL and the OpenAPI documents use this one pattern)
REC_ID_PATTERN = r"^r1\.[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{1,40}\.[0-9A-HJKMNP-TV-Z]{26}$"
REC_ID_RE = re.compile(REC_ID_PATTERN)

Name = Annotated[str, Field(pattern=NAME)]


class _RandomPool(threading.local):
    """``os.urandom`` bytes read 4 KiB at a time, per thread: ``getrandom`` is a system call that releases
    the GIL, and in a worker with busy request threads every release cost a context switch (one per
    answer: docs/serving.md §4). The bytes are the same kernel CSPRNG's; a pool is never shared across
    threads, and a forked worker starts with an empty one (``os.register_at_fork``)."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            self.buf, self.pos = os.urandom(4096), 0
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


_POOL = _RandomPool()


def _reset_pool() -> None:
    global _POOL
    _POOL = _RandomPool()


os.register_at_fork(after_in_child=_reset_pool)


def ulid(now_ms: int | None = None, rand: bytes | None = None) -> str:
    """26 Crockford base32 characters: 48-bit milliseconds + 80 random bits (time-sortable, unique)."""
    ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    r = _POOL.take(10) if rand is None else rand
    n = ((ms & ((1 << 48) - 1)) << 80) | int.from_bytes(r[:10], "big")
    return "".join([_PAIRS[(n >> (10 * (12 - i))) & 1023] for i in range(13)])  # 2 characters per lookup


def rec_id(experiment: str = NO_EXPERIMENT, arm: str = DEFAULT_ARM, now_ms: int | None = None) -> str:
    return f"r1.{experiment}.{arm}.{ulid(now_ms)}"


def parse_rec_id(value: str) -> tuple[str, str] | None:
    """``(experiment, arm)`` of a rec_id, or None when it is not one (the analytics drop it)."""
    if not isinstance(value, str) or not REC_ID_RE.match(value):
        return None
    _, experiment, arm, _ = value.split(".")
    return experiment, arm


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    weight: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    recipe: Literal["model", "popular"] = "model"
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:@-]{1,128}$")] | None = None


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: Name
    enabled: bool = True
    arms: list[Arm] = Field(min_length=1, max_length=8)
    description: Annotated[str, Field(max_length=500)] | None = None

    @field_validator("experiment")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v == NO_EXPERIMENT:
            raise ValueError(f"{NO_EXPERIMENT!r} is reserved (answers outside any experiment)")
        return v

    @model_validator(mode="after")
    def _unique_arms(self) -> Experiment:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        return self

    @classmethod
    def parse(cls, data: bytes | str | dict) -> Experiment:
        """Raises ``ValueError`` (a ``ValidationError`` or a JSON error) naming what is wrong."""
        try:
            obj = orjson.loads(data) if isinstance(data, (bytes, bytearray, str)) else data
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None

    def versions(self) -> list[str]:
        """The pinned model versions (besides LATEST) the arms need."""
        return sorted({a.version for a in self.arms if a.version})

    def assign(self, user_id: str) -> Arm:
        """The viewer's arm: a stable hash of (experiment, user_id) against the cumulative shares."""
        return self.arms[arm_index(self.experiment, user_id, [a.weight for a in self.arms])]


def bucket(experiment: str, user_id: str) -> float:
    """A uniform number in [0, 1) fixed by (experiment, viewer)."""
    h = hashlib.sha256(f"{experiment}\0{user_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def arm_index(experiment: str, user_id: str, weights: list[float]) -> int:
    u = bucket(experiment, user_id) * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return len(weights) - 1  # (rounding at the top end)
