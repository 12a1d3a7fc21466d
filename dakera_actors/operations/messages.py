"""The operator commands one node sends another (answered with :class:`~dakera_actors.routing.messages.Reply`)."""

from __future__ import annotations

import attrs

from ..wire import message
from ..wirebounds import REASON, SHARD_LIST, Int, Optional, bound


@message("ops.maintenance")
@attrs.frozen
class MaintenanceCommand:
    enable: bool | None = None  # None: only report
    reject_requests: bool = False
    duration_minutes: int | None = attrs.field(default=None, metadata=bound(Optional(Int(0, 100 * 366 * 24 * 60))))
    reason: str = attrs.field(default="", metadata=bound(REASON))


@message("ops.rebalance")
@attrs.frozen
class RebalanceCommand:
    dry_run: bool = False
    shard_ids: list[int] | None = attrs.field(default=None, metadata=bound(Optional(SHARD_LIST)))
