"""The cluster as a backup job sees it (:class:`~.service.Cluster`), over the node's services: the
shard map, the peer layer (a shard's copy from its primary, by the replication layer's snapshot
stream), and the router (a restore write goes to the agent's primary like any write)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ..errors import Unavailable
from ..peers import Peers, PeerUnavailable
from ..replication.messages import SnapshotChunk, SnapshotRequest
from ..routing.router import Router
from ..sharding.shardmap import ShardMap
from ..store.shard import ShardSet
from .bundle import Part

COPY_TIMEOUT = 120.0  # one shard's whole copy
AGENT_PAGE = 10_000


class NodeCluster:
    def __init__(self, *, node_id: str, shards: ShardSet, router: Router, peers: Peers | None,
                 shard_map: Callable[[], ShardMap | None] | None, request_timeout: float,
                 archive_behind: Callable[[], list[str]] = list) -> None:
        self.node_id = node_id
        self.shards = shards
        self.router = router
        self.peers = peers
        self.shard_map = shard_map
        self.request_timeout = request_timeout
        self._archive_behind = archive_behind

    def _map(self) -> ShardMap | None:
        return self.shard_map() if self.shard_map is not None else None

    def map_key(self) -> int:
        smap = self._map()
        return smap.epoch if smap is not None else 0

    def primaries(self) -> list[str]:
        if self.shard_map is None:
            return [self.node_id] * self.shards.shard_count  # a single node is every shard's primary
        smap = self._map()
        if smap is None:
            raise Unavailable("no shard map yet: the cluster is still forming")
        missing = [s for s, copies in enumerate(smap.placement) if not copies]
        if missing:
            raise Unavailable(f"shard {missing[0]} has no copy in the map: a backup would miss it")
        return [copies[0] for copies in smap.placement]

    async def copy_shard(self, shard: int, member: str) -> Part:
        if member == self.node_id:
            frozen = self.shards.freeze(shard)  # consistent: nothing is applied while it is taken
            return Part(shard, frozen.epoch, frozen.seq, [[m.to_record(), v] for m, v in frozen.memories],
                        [s.to_record() for s in frozen.sessions])
        if self.peers is None:
            raise Unavailable(f"shard {shard} is on {member}, and this node has no peers")

        def finished(reply: Any) -> bool:
            return not isinstance(reply, SnapshotChunk) or reply.shard != shard or reply.last

        try:
            with trio.fail_after(COPY_TIMEOUT):
                replies = await self.peers.receive_until(member, SnapshotRequest(shard), finished,
                                                         timeout=self.request_timeout)
        except (PeerUnavailable, trio.TooSlowError) as exc:
            raise Unavailable(f"shard {shard}'s primary {member} did not send its copy ({exc})") from None
        last = replies[-1]
        if not isinstance(last, SnapshotChunk) or last.shard != shard:
            raise Unavailable(f"shard {shard}'s primary {member} answered with something else")
        return Part(shard, last.epoch, last.seq, [m for r in replies for m in r.memories],
                    [s for r in replies for s in r.sessions])

    async def run(self, op: str, body: bytes) -> tuple[int, Any]:
        status, payload, _owner = await self.router.run(op, body, {})
        return status, payload

    async def agents(self) -> list[str]:
        found: list[str] = []
        while True:
            page = await self.router.list_agents(AGENT_PAGE, len(found))
            found += [a["agent_id"] for a in page]
            if len(page) < AGENT_PAGE:
                return found

    def archive_behind(self) -> list[str]:
        return self._archive_behind()
