"""A node whose cold-tier archive falls behind makes every node's cluster status degraded, through
its member metadata, and healthy again once it catches up (simulated cluster, MockClock)."""

from __future__ import annotations

import attrs
import trio.testing

from dakera_actors.api.admin_views import cluster_status
from dakera_actors.cold.stats import BEHIND_SECONDS, ColdTierStats
from dakera_actors.membership.member import MemberState
from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually

HEALTHY = ColdTierStats("memory", "mem://", 1000, 1 << 28)


@attrs.define
class FakeTier:
    figures: ColdTierStats = HEALTHY

    def stats(self) -> ColdTierStats:
        return self.figures


def statuses(cluster: Cluster) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for node_id, node in cluster.nodes.items():
        view = cluster_status(node.facade)
        out[node_id] = (view["status"], view["archive_behind"])
    return out


def settled(cluster: Cluster) -> bool:
    return all(node.membership is not None and node.membership.view.value.count(MemberState.ALIVE) == 3
               and node.readiness.ready for node in cluster.nodes.values())


async def test_one_archive_behind_degrades_every_node_until_it_catches_up(
        autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(3, seed=16) as cluster:
        await eventually(lambda: settled(cluster), timeout=30, interval=0.1)
        assert {s for s, _ in statuses(cluster).values()} == {"healthy"}
        tier = FakeTier()
        for node in cluster.nodes.values():
            node.attach_cold(tier if node.node_id == "node-2" else FakeTier())
        tier.figures = attrs.evolve(HEALTHY, lag_seconds=BEHIND_SECONDS + 30)
        await eventually(lambda: statuses(cluster) == dict.fromkeys(cluster.ids, ("degraded", ["node-2"])),
                         timeout=30, interval=0.1)
        # the metrics read the same archiver
        assert cluster.node("node-2").metrics.sample("dakera_cold_tier_lag_seconds") == BEHIND_SECONDS + 30
        tier.figures = HEALTHY
        await eventually(lambda: statuses(cluster) == dict.fromkeys(cluster.ids, ("healthy", [])),
                         timeout=30, interval=0.1)
