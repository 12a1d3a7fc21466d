"""Replication status: the cluster-wide merge of every primary's typed rows (:mod:`.rows`).

:func:`merge` believes each primary about its own shards only; ``GET /admin/cluster/replication``
is that merge as JSON (:func:`dakera_actors.api.admin_views.replication_report`). Pure: the
fan-out that gathers the rows is the replicator's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from .rows import ShardStatus

if TYPE_CHECKING:
    from ..sharding.shardmap import ShardMap


@attrs.frozen
class ClusterReplication:
    """Every primary's view of its replicas, merged: ``rows`` maps a shard to its primary's row
    (a shard whose primary did not answer, or that has none, is absent); ``unreachable`` names
    the primaries that did not answer."""

    map: ShardMap
    rows: dict[int, ShardStatus]
    unreachable: list[str]

    def under_replicated(self, shard: int) -> bool:
        """Fewer healthy replicas than wanted, or unheard of."""
        row = self.rows.get(shard)
        return row is None or row.healthy_replicas < wanted_replicas(self.map)


def merge(smap: ShardMap, rows: Mapping[str, Sequence[ShardStatus] | None]) -> ClusterReplication:
    """Merge every primary's rows (``rows``: member -> its rows, or None when it did not answer).
    Only a shard's primary in ``smap`` is believed about it."""
    merged: dict[int, ShardStatus] = {}
    for member, answer in rows.items():
        for reported in answer or ():
            if 0 <= reported.shard < len(smap.placement) and smap.owner(reported.shard) == member:
                merged[reported.shard] = reported
    return ClusterReplication(smap, merged, sorted(m for m, answer in rows.items() if answer is None))


def wanted_replicas(smap: ShardMap) -> int:
    """Healthy replicas a shard should have: RF - 1, fewer while the cluster has fewer members."""
    return min(smap.rf, len(smap.members())) - 1


def primaries(smap: ShardMap, *, besides: Iterable[str] = ()) -> list[str]:
    """The members leading at least one shard in ``smap`` (the ones to ask for rows)."""
    return sorted({c[0] for c in smap.placement if c} - set(besides))
