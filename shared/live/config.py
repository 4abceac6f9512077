"""Settings of the live layer, all from the environment (docs/live.md, "Configuration")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _project() -> str:
    return (
        os.environ.get("DAIHUO_BIGTABLE_PROJECT")
        or os.environ.get("GOOGLE_CLOUD_PROJECT")
        or os.environ.get("PUBSUB_PROJECT_ID")
        or "daihuo-local"
    )


@dataclass(frozen=True)
class LiveConfig:
    """``shards``: minute and unique-viewer rows per room (hot-room write spreading; readers sum them).
    ``dedupe_s``: how long an event id is remembered (the GC max age of the claims family; a copy
    arriving later than that after the first one is counted again). ``retention_s``: how long the
    counters live (an event older than that is not applied: its cells would be collected at once).
    ``session_events``: the last N product events kept per viewer. ``claim_chunk``: most event ids
    claimed by one append; ``fast_claim``: up to this many ids of a row are claimed with one
    conditional mutation (falling back to the append on any hit). ``timeout_s``: the writer's deadline per Bigtable call;
    ``read_timeout_s`` the reader's per read."""

    project: str = field(default_factory=_project)
    instance: str = field(default_factory=lambda: _env("DAIHUO_BIGTABLE_INSTANCE", "daihuo-live"))
    table: str = field(default_factory=lambda: _env("DAIHUO_LIVE_TABLE", "live"))
    shards: int = field(default_factory=lambda: int(_env("DAIHUO_LIVE_SHARDS", "1")))
    dedupe_s: int = field(default_factory=lambda: int(_env("DAIHUO_LIVE_DEDUPE_S", str(24 * 3600))))
    retention_s: int = field(default_factory=lambda: int(_env("DAIHUO_LIVE_RETENTION_S", str(7 * 86400))))
    session_events: int = field(default_factory=lambda: int(_env("DAIHUO_LIVE_SESSION_EVENTS", "20")))
    claim_chunk: int = field(default_factory=lambda: int(_env("DAIHUO_LIVE_CLAIM_CHUNK", "500")))
    fast_claim: int = field(default_factory=lambda: int(_env("DAIHUO_LIVE_FAST_CLAIM", "1")))
    timeout_s: float = field(default_factory=lambda: float(_env("DAIHUO_LIVE_TIMEOUT_S", "10")))
    read_timeout_s: float = field(default_factory=lambda: float(_env("DAIHUO_LIVE_READ_TIMEOUT_S", "1.0")))

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 64:
            raise ValueError(f"DAIHUO_LIVE_SHARDS must be 1..64, got {self.shards}")
        if self.session_events < 1 or self.claim_chunk < 1:
            raise ValueError("DAIHUO_LIVE_SESSION_EVENTS and DAIHUO_LIVE_CLAIM_CHUNK must be >= 1")
