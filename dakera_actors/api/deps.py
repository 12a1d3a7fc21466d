"""What the HTTP facade reads, handed to :func:`~dakera_actors.api.app.create_app` by the node.

The app is created before the services it fronts (so ``/health`` answers while storage recovers
and the cluster forms); the node fills the optional fields in as each service starts. Nothing
here is the node itself: the facade sees only these views and services.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from ..config import Config
from ..log import EventLogger
from ..metrics import NodeMetrics
from ..runtime.offload import Offload
from ..runtime.published import Published
from ..runtime.readiness import Readiness

if TYPE_CHECKING:
    from ..backup.service import Backups
    from ..cache.facade import NodeCache
    from ..cold.stats import ColdTier
    from ..lease.actor import LeaseView
    from ..membership.actor import MembershipView
    from ..operations.service import Operations
    from ..operations.stats import ClusterCounts
    from ..replication.status import ClusterReplication
    from ..routing.router import Router
    from ..sharding.shardmap import ShardMap
    from ..store.reembed import Reembedder
    from ..store.service import MemoryService


class ReplicationReport(Protocol):
    """What the admin views read of replication (cluster mode)."""

    @property
    def map(self) -> ShardMap | None: ...

    async def cluster_status(self) -> ClusterReplication: ...


class InFlight:
    """HTTP requests being served: a stopping node waits for them (``idle`` fires at zero)."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = trio.Event()

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()
            self.idle = trio.Event()


@attrs.define(eq=False)
class FacadeDeps:
    """The facade's dependencies: fixed ones first, then those the node fills in as they start."""

    config: Config
    node_id: str
    metrics: NodeMetrics
    log: EventLogger
    offload: Offload
    readiness: Readiness
    in_flight: InFlight = attrs.field(factory=InFlight)
    #: this node's API address, known once the HTTP listener is bound
    api_address: str = ""
    router: Router | None = None
    operations: Operations | None = None  # cluster mode
    memory: MemoryService | None = None  # once storage is recovered
    membership: Published[MembershipView] | None = None  # cluster mode
    lease: Published[LeaseView] | None = None  # cluster mode
    shard_map: Published[ShardMap | None] | None = None  # cluster mode
    replication: ReplicationReport | None = None  # cluster mode, once storage is recovered
    cold: ColdTier | None = None  # the archiver, once it runs
    backups: Backups | None = None  # once storage is ready
    cache: NodeCache | None = None  # the L1.5 cache, with DAKERA_REDIS_URL, once storage is ready
    reembed: Reembedder | None = None  # the background re-embedding, once storage is ready
    #: Unix time (``timestamp`` fields); ``started_at`` is ``trio.current_time()`` at start (uptime)
    wall_clock: Callable[[], float] = time.time
    started_at: float | None = None
    #: what every node of this cluster calls it (see ``Node._cluster_id``); set once known
    cluster_id: str = ""
    counts: ClusterCounts | None = None  # memories and agents across the cluster, once storage is ready
