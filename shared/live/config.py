"""Settings of the live layer: the ``DAIHUO_BIGTABLE_*`` / ``DAIHUO_LIVE_*`` fields of
shared/settings.py (docs/live.md, "Configuration"), gathered in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import settings


def _s(name: str):
    return field(default_factory=lambda: getattr(settings(), name))


def _project() -> str:
    from shared.adapters.bus import project_id

    return settings().bigtable_project or project_id()


@dataclass(frozen=True)
class LiveConfig:
    """``shards``: minute and unique-viewer rows per room (hot-room write spreading; readers sum them).
    ``dedupe_s``: how long an event id is remembered (the GC max age of the claims family; a copy
    arriving later than that after the first one is counted again). ``retention_s``: how long the
    counters live (an event older than that is not applied: its cells would be collected at once).
    ``session_events``: the last N product events kept per viewer. ``claim_chunk``: most event ids
    claimed by one append; ``fast_claim``: up to this many ids of a row are claimed with one
    conditional mutation (falling back to the append on any hit). ``timeout_s``: the writer's
    deadline per Bigtable call; ``read_timeout_s`` the reader's per read."""

    project: str = field(default_factory=_project)
    instance: str = _s("bigtable_instance")
    table: str = _s("live_table")
    shards: int = _s("live_shards")
    dedupe_s: int = _s("live_dedupe_s")
    retention_s: int = _s("live_retention_s")
    session_events: int = _s("live_session_events")
    claim_chunk: int = _s("live_claim_chunk")
    fast_claim: int = _s("live_fast_claim")
    timeout_s: float = _s("live_timeout_s")
    read_timeout_s: float = _s("live_read_timeout_s")

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 64:
            raise ValueError(f"DAIHUO_LIVE_SHARDS must be 1..64, got {self.shards}")
        if self.session_events < 1 or self.claim_chunk < 1:
            raise ValueError("DAIHUO_LIVE_SESSION_EVENTS and DAIHUO_LIVE_CLAIM_CHUNK must be >= 1")
