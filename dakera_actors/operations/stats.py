"""Cluster-wide counts: the memories and agents of every shard, each counted once, at its primary.

``GET /v1/ops/stats`` and ``GET /admin/cluster/status`` answer how many memories and agents the
whole cluster holds, not only this node. Each shard is counted at the copy the asker's shard map
names primary (a replica may lag it): the asker sends every other member that is primary of some
shard a :class:`ShardCountsQuery` naming those shards, and the member answers, in a
:class:`ShardCounts`, the memories and agents of each of them it holds and is not still taking
over. A shard whose primary did not answer (down, partitioned, slow), no longer holds it, is
still copying it in, or that the map places nowhere is left out of the totals and named: a total
is never silently short. :func:`tally` is that merge, pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..endpoint import Endpoint, MessageStream
from ..peers import Peers, PeerUnavailable
from ..runtime.published import Published
from ..wire import Envelope, message
from ..wirebounds import I63, SHARD, SHARD_LIST, SHARDS_MAX, Fixed, Int, Seq, bound

if TYPE_CHECKING:
    from ..sharding.shardmap import ShardMap

#: shard -> (memories, agents) of the shards a node holds and can count
Counts = Mapping[int, tuple[int, int]]
COUNT = Int(0, I63)


@message("ops.counts")
@attrs.frozen
class ShardCountsQuery:
    """Ask a member for the counts of these shards (those the asker's map says it leads)."""

    shards: list[int] = attrs.field(metadata=bound(SHARD_LIST))


@message("ops.counts.reply")
@attrs.frozen
class ShardCounts:
    """``[shard, memories, agents]`` of each asked shard the member holds and has fully taken over."""

    counts: list[list[int]] = attrs.field(metadata=bound(Seq(Fixed((SHARD, COUNT, COUNT)), SHARDS_MAX)))


@attrs.frozen
class Totals:
    """What :func:`tally` found: the sums over the shards counted, and what was left out."""

    memories: int
    agents: int
    shards: int  # the shards there are
    counted: int  # the shards counted
    #: members whose answer is missing, with why (each leads some shard left out)
    unavailable: list[dict[str, str]] = attrs.Factory(list)
    #: the shards left out of the totals (their primary did not answer, or did not count them)
    missing_shards: list[int] = attrs.Factory(list)
    #: shard -> (memories, agents) of each shard counted
    per_shard: dict[int, tuple[int, int]] = attrs.Factory(dict)

    @property
    def partial(self) -> bool:
        return self.counted < self.shards

    def json(self) -> dict[str, Any]:
        """The fields ``/v1/ops/stats`` and ``/admin/cluster/status`` add for these totals."""
        out: dict[str, Any] = {"total_memories": self.memories, "agent_count": self.agents,
                               "partial": self.partial, "shards_counted": self.counted}
        if self.partial:  # as Dakera's own servers do: the key only when something is left out
            out["unavailable"] = self.unavailable or [{"node_id": "", "reason": "no primary placed"}]
            out["missing_shards"] = self.missing_shards
        return out


def tally(placement: Sequence[Sequence[str]], answers: Mapping[str, Counts | str]) -> Totals:
    """Sum each shard's counts as its primary (``placement[shard][0]``) answered them.

    ``answers`` maps a member to its counts, or to why it gave none (a member the placement
    names and ``answers`` lacks counts as not answering). A shard with no copy, whose primary gave
    no counts, or whose primary's counts lack it, is left out and listed."""
    memories = agents = counted = 0
    per_shard: dict[int, tuple[int, int]] = {}
    missing: list[int] = []
    unavailable: dict[str, str] = {}
    for shard, copies in enumerate(placement):
        primary = copies[0] if copies else None
        answer = answers.get(primary, "did not answer") if primary is not None else "no primary placed"
        if isinstance(answer, str):
            missing.append(shard)
            if primary is not None:
                unavailable.setdefault(primary, answer)
            continue
        if shard not in answer:
            missing.append(shard)
            unavailable.setdefault(primary or "", f"did not count shard {shard} (not held there, or still "
                                                  "being taken over)")
            continue
        shard_memories, shard_agents = answer[shard]
        memories += shard_memories
        agents += shard_agents
        counted += 1
        per_shard[shard] = (shard_memories, shard_agents)
    return Totals(memories, agents, len(placement), counted,
                  [{"node_id": n, "reason": r} for n, r in sorted(unavailable.items())], missing, per_shard)


class ClusterCounts:
    """Counts memories and agents across the cluster (see the module's docstring).

    ``local(shards)`` counts the shards this node holds among ``shards`` (leaving out any it is
    still taking over); ``shard_map`` is the map this node follows (None: a single node, which
    holds every shard); ``peers`` and ``endpoint`` ask and answer the other members."""

    def __init__(self, *, node_id: str, shards: int, local: Callable[[Iterable[int]], dict[int, tuple[int, int]]],
                 shard_map: Published[ShardMap | None] | None = None, peers: Peers | None = None,
                 endpoint: Endpoint | None = None, timeout: float = 5.0) -> None:
        self.node_id = node_id
        self.shards = shards
        self.local = local
        self.shard_map = shard_map
        self.peers = peers
        self.timeout = timeout
        if endpoint is not None:
            endpoint.on_stream(ShardCountsQuery, self._serve)

    async def totals(self, *, timeout: float | None = None) -> Totals:
        """The cluster's totals; members that do not answer within ``timeout`` are left out (named)."""
        if self.shard_map is None:  # a single node holds every shard
            return tally([[self.node_id]] * self.shards, {self.node_id: self.local(range(self.shards))})
        smap = self.shard_map.value
        if smap is None:
            return Totals(0, 0, self.shards, 0, [{"node_id": self.node_id, "reason": "no shard map yet"}],
                          list(range(self.shards)))
        leads: dict[str, list[int]] = {}
        for shard, copies in enumerate(smap.placement):
            if copies:
                leads.setdefault(copies[0], []).append(shard)
        answers: dict[str, Counts | str] = {}
        if self.node_id in leads:
            answers[self.node_id] = self.local(leads[self.node_id])
        others = [n for n in leads if n != self.node_id]
        if others:
            assert self.peers is not None
            replies = await self.peers.gather(others, lambda n: ShardCountsQuery(leads[n]),
                                              timeout=timeout if timeout is not None else self.timeout)
            for member, reply in replies.items():
                if isinstance(reply, PeerUnavailable):
                    answers[member] = reply.reason
                elif isinstance(reply, ShardCounts):
                    answers[member] = {s: (m, a) for s, m, a in reply.counts}
                else:
                    answers[member] = f"answered {type(reply).__name__}"
        return tally(smap.placement, answers)

    async def _serve(self, envelope: Envelope, stream: MessageStream) -> None:
        query: ShardCountsQuery = envelope.message
        counts = self.local(s for s in query.shards if s < self.shards)
        await stream.send(ShardCounts([[s, m, a] for s, (m, a) in sorted(counts.items())]))
