"""The shard map: which members hold each shard, decided by the leader alone, fenced by its token.

A map is ``(token, version, placement)``. Only the lease holder computes maps; every other node
installs a map only if it is newer by ``(token, version)`` and its token passes the lease's
fencing check, so a deposed leader's late map is refused. Without a leader the last map stays
in force: owners keep serving and accepting writes; only reassignment stops (the seed's rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from ..wire import message
from ..wirebounds import EPOCH, MEMBERS, NODE_ID, RF, SHARDS_MAX, TOKEN, VERSION, Seq, bound, epoch_of
from .placement import balance, check, copies_wanted, plan
from .rebalance import settled, step


@message("shard.map")
@attrs.frozen
class ShardMap:
    token: int = attrs.field(metadata=bound(TOKEN))
    version: int = attrs.field(metadata=bound(VERSION))
    rf: int = attrs.field(metadata=bound(RF))
    placement: list[list[str]] = attrs.field(metadata=bound(Seq(Seq(NODE_ID, RF.hi), SHARDS_MAX)))
    #: members still holding copies while down, within their grace period: never primary, and
    #: not counted (nor waited for) by quorum/all acknowledgements
    down: list[str] = attrs.field(factory=list, metadata=bound(MEMBERS))
    #: per shard, the epoch of the map in which its primary took the role: a node that finds
    #: this changed must take the shard over again, even if it was primary before (it may have
    #: missed the maps in between, where another primary wrote)
    since: list[int] = attrs.field(factory=list, metadata=bound(Seq(EPOCH, SHARDS_MAX)))
    #: copies per shard that count (acknowledgements, primaries); copies after them are learners,
    #: new copies still filling during a transfer. 0: every copy counts (maps from before)
    width: int = attrs.field(default=0, metadata=bound(RF))

    @property
    def key(self) -> tuple[int, int]:
        return (self.token, self.version)

    @property
    def epoch(self) -> int:
        """The epoch records written under this map carry (see :mod:`dakera_actors.replication`)."""
        return epoch_of(self.token, self.version)

    def primary_since(self, shard: int) -> int:
        return self.since[shard] if shard < len(self.since) else 0

    @property
    def counted(self) -> int:
        """Copies per shard that count; what follows them in a shard's list are learners."""
        return self.width or max((len(c) for c in self.placement), default=0)

    def learners_any(self) -> bool:
        return any(len(c) > self.counted for c in self.placement)

    def live_copies(self, shard: int) -> list[str]:
        """The copies acknowledgements count: not learners, not marked down."""
        return [m for m in self.placement[shard][:self.counted] if m not in self.down]

    @property
    def shards(self) -> int:
        return len(self.placement)

    def owner(self, shard: int) -> str | None:
        copies = self.placement[shard]
        return copies[0] if copies else None

    def members(self) -> set[str]:
        return {m for copies in self.placement for m in copies}

    def primaries_of(self, member: str) -> list[int]:
        return [s for s, copies in enumerate(self.placement) if copies and copies[0] == member]

    def replicas_of(self, member: str) -> list[int]:
        return [s for s, copies in enumerate(self.placement) if member in copies[1:]]

    def distribution(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for copies in self.placement:
            for rank, member in enumerate(copies):
                entry = out.setdefault(member, {"primary": 0, "replica": 0})
                entry["primary" if rank == 0 else "replica"] += 1
        return dict(sorted(out.items()))

    def balance(self) -> float:
        return balance([tuple(c) for c in self.placement], self.members())


def target_of(current: ShardMap | None, eligible: Iterable[str], *, shards: int, rf: int,
              keep: Iterable[str] = (), order: list[list[str]] | None = None,
              draining: Iterable[str] = ()) -> list[list[str]]:
    """Where the leader wants every copy: a plan over the current map's counted copies."""
    base = order if order is not None else (settled(current.placement, current.counted) if current else None)
    return [list(c) for c in plan(base, sorted(set(eligible)), shards, rf, keep, draining)]


def next_map(current: ShardMap | None, eligible: Iterable[str], *, token: int, shards: int,
             rf: int, keep: Iterable[str] = (), order: list[list[str]] | None = None,
             caught_up: Callable[[int, str], bool] | None = None, concurrency: int = 4,
             only: set[int] | None = None, abandon: Callable[[int, str], bool] | None = None,
             draining: Iterable[str] = ()) -> ShardMap | None:
    """The leader's next map, or None when the current one already fits (same token, placement).

    ``keep``: down members within their grace period (their copies stay, marked down);
    ``order``: the current counted copies reordered by position (promotion order);
    ``caught_up(shard, member)``: whether a learner has caught up with its primary; the map
    walks toward the target through :func:`~.rebalance.step` (``concurrency``, ``only``,
    ``abandon``: stalled learners to drop; ``draining``: members in maintenance, alive: they
    may keep serving (and leading) what cannot move yet)."""
    members = sorted(set(eligible))
    if not members:
        return None
    target = target_of(current, members, shards=shards, rf=rf, keep=keep, order=order, draining=draining)
    if current is None:
        as_lists = target
    else:
        may_lead = set(members) | set(draining)
        as_lists = step(current.placement, current.counted, target, caught_up or (lambda _s, _m: False),
                        concurrency=concurrency, only=only, abandon=abandon,
                        down=current.members() - may_lead, ranked=order)
    width = copies_wanted(members, rf, keep)
    held = {m for c in as_lists for m in c}
    down = sorted(set(keep) & held - set(members))
    if current is not None and width > current.counted:
        # more copies per shard than before (the cluster grew back toward RF): the new copies are
        # learners (after the old width) until every shard has its full count and each of them
        # has caught up; then one map makes them count, all shards at once
        old, ready = current.counted, caught_up or (lambda _s, _m: False)
        if not all(len(c) >= width and all(ready(s, m) for m in c[old:width])
                   for s, c in enumerate(as_lists) if c and not set(c) <= set(down)):
            width = old
    if (current is not None and current.token == token and current.placement == as_lists
            and current.down == down and current.counted == width):
        return None
    version = (current.version + 1) if current is not None else 1
    epoch = epoch_of(token, version)
    since = [current.since[s] if current is not None and s < len(current.since) and current.placement[s][:1] == c[:1]
             else epoch for s, c in enumerate(as_lists)]
    return ShardMap(token=token, version=version, rf=rf, placement=as_lists, down=down, since=since, width=width)


def acceptable(current: ShardMap | None, offered: ShardMap, *, shards: int) -> list[str]:
    """Why ``offered`` must not be installed over ``current`` (empty: install it)."""
    if current is not None and offered.key <= current.key:
        return [f"not newer: {offered.key} <= {current.key}"]
    if offered.shards != shards:
        return [f"{offered.shards} shards, this cluster has {shards}"]
    if offered.since and len(offered.since) != offered.shards:
        return [f"{len(offered.since)} primary epochs for {offered.shards} shards"]
    return check([tuple(c) for c in offered.placement], offered.members(), shards, offered.rf, offered.down,
                 width=offered.counted)
