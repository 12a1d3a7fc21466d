"""What the cold tier reports about itself: read by the admin views, the metrics and gossip."""

from __future__ import annotations

from typing import Protocol

import attrs

#: the archive is "behind" (the cluster status says degraded) past this many seconds of lag
BEHIND_SECONDS = 60.0


@attrs.frozen
class ColdTierStats:
    """One node's cold tier as of now (its archiver's view of the shards it is primary of)."""

    backend: str  # "filesystem", "s3", "memory", or "none" when the node archives nothing
    location: str  # where objects go: a directory, or s3://bucket/prefix
    flush_ms: int  # DAKERA_COLD_FLUSH_MS
    backlog_limit: int  # DAKERA_COLD_BACKLOG_BYTES
    shards_archived: int = 0  # shards this node is primary of whose chain has a base snapshot
    objects_written: int = 0  # objects uploaded since start
    bytes_written: int = 0
    bytes_read: int = 0
    uploads_ok: int = 0
    uploads_failed: int = 0
    restores: int = 0  # shards restored (or seeded) from the archive since start
    lag_seconds: float = 0.0  # age of the oldest acknowledged record not yet archived (0: none)
    backlog_bytes: int = 0  # bytes of acknowledged records not yet archived
    circuit_open: bool = False  # uploads suspended after repeated failures
    last_upload_at: float | None = None  # Unix time of the last successful upload

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def behind(self) -> bool:
        """Whether the archive is behind enough that the cluster status says degraded."""
        return self.lag_seconds > BEHIND_SECONDS

    @property
    def status(self) -> str:
        """``disabled``, ``down`` (circuit open), ``degraded`` (behind) or ``healthy``."""
        if not self.enabled:
            return "disabled"
        if self.circuit_open:
            return "down"
        return "degraded" if self.behind else "healthy"


class ColdTier(Protocol):
    """What the admin views, the metrics and the node's archive watch read of the cold tier (the
    archiver): a snapshot of its figures, taken on the event loop without blocking."""

    def stats(self) -> ColdTierStats: ...
