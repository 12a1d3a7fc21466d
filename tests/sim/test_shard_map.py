"""The shard map in whole in-process clusters (MockClock): one map everywhere, fenced, re-made."""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.sharding.shardmap import ShardMap
from dakera_actors.testing import Cluster, open_cluster
from dakera_actors.wire import encode_frame

from ..waiting import eventually

MockClock = trio.testing.MockClock


def maps(cluster: Cluster) -> dict[str, ShardMap | None]:
    return {i: n.shard_map.view.value for i, n in cluster.nodes.items()}  # type: ignore[union-attr]


def one_map(cluster: Cluster) -> ShardMap | None:
    found = {(m.token, m.version) if m else None for m in maps(cluster).values()}
    return next(iter(maps(cluster).values())) if len(found) == 1 and None not in found else None


async def test_five_nodes_install_the_same_balanced_map(autojump_clock: MockClock) -> None:
    async with open_cluster(5, seed=1) as cluster:
        await eventually(lambda: one_map(cluster) is not None and len(one_map(cluster).members()) == 5,  # type: ignore[union-attr]
                         timeout=30)
        smap = one_map(cluster)
        assert smap is not None and smap.shards == 64 and all(len(c) == 2 for c in smap.placement)
        assert smap.balance() < 0.1
        async with cluster.client("node-4") as http:
            assert (await http.get("/health/ready")).status_code == 200
            status = (await http.get("/admin/cluster/status")).json()
            shards = (await http.get("/admin/cluster/shards")).json()
            nodes = (await http.get("/v1/admin/cluster/nodes")).json()
        assert status["shard_map_version"] == smap.version and status["unassigned_shards"] == 0
        assert sum(d["primary"] for d in status["shard_distribution"].values()) == 64
        assert [s["primary"] for s in shards["shards"]] == [c[0] for c in smap.placement]
        assert sum(len(n["primary_shards"]) for n in nodes) == 64
        assert cluster.node("node-1").metrics.sample("dakera_shard_balance") == smap.balance()


async def test_a_dead_member_is_placed_out_and_the_map_survives_a_leader_change(autojump_clock: MockClock) -> None:
    async with open_cluster(5, seed=2) as cluster:
        await eventually(lambda: one_map(cluster) is not None and len(one_map(cluster).members()) == 5,  # type: ignore[union-attr]
                         timeout=30)
        leader = cluster.node("node-1").lease.view.value.leader  # type: ignore[union-attr]
        assert leader is not None
        before = one_map(cluster)
        cluster.kill(leader)
        await eventually(lambda: (m := one_map(cluster)) is not None and leader not in m.members(), timeout=60)
        after = one_map(cluster)
        assert after is not None and after.key > before.key  # type: ignore[union-attr]
        # surviving copies stay where they are (roles may swap, data does not move); only the
        # dead member's copies are re-made, give or take a balancing move
        lost = sum(len({m for m in old if m != leader} - set(new))
                   for old, new in zip(before.placement, after.placement, strict=True))  # type: ignore[union-attr]
        assert lost <= 2


async def test_a_stale_map_is_refused_by_every_node(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=3) as cluster:
        await eventually(lambda: one_map(cluster) is not None, timeout=30)
        current = one_map(cluster)
        assert current is not None
        stale = ShardMap(token=current.token - 1 if current.token > 1 else 0, version=current.version + 10,
                         rf=current.rf, placement=[["node-1"] * 1 for _ in range(64)])
        sender = cluster.node("node-1").endpoint  # type: ignore[union-attr]
        for target in ("node-2", "node-3"):
            reply = await sender.request(cluster.address(target), stale, timeout=2)  # type: ignore[union-attr]
            assert reply.message.accepted is False
        assert all(m is not None and m.key == current.key for m in maps(cluster).values())
        assert encode_frame(stale, "node-1")  # the stale map is a well-formed message: refused for its token


async def test_a_node_behind_the_gossiped_header_pulls_the_map(autojump_clock: MockClock,
                                                               monkeypatch: object) -> None:
    import dakera_actors.sharding.leader as leader_module

    monkeypatch.setattr(leader_module, "RESEND", 1e9)  # type: ignore[attr-defined]  # no re-sends
    async with open_cluster(3, seed=4) as cluster:
        await eventually(lambda: one_map(cluster) is not None, timeout=30)
        current = one_map(cluster)
        leader = cluster.node("node-1").lease.view.value.leader  # type: ignore[union-attr]
        assert current is not None and leader is not None
        def header_everywhere() -> bool:
            return all(n.membership.view.value.members[leader].meta.get("map")  # type: ignore[union-attr]
                       == [current.token, current.version] for n in cluster.nodes.values())

        await eventually(header_everywhere, timeout=10)  # the header rides in the leader's gossip
        follower = next(i for i in cluster.ids if i != leader)
        older = ShardMap(token=current.token, version=current.version - 1, rf=current.rf,
                         placement=current.placement)
        behind = cluster.node(follower).shard_map
        assert behind is not None
        behind.view.set(older)  # as if it missed the push: the published map and the core's copy
        behind.core.map = older
        other = next(i for i in cluster.ids if i not in (leader, follower))
        await cluster.node(other).membership.set_meta({"maintenance": False, "note": 1})  # type: ignore[union-attr]
        await eventually(lambda: cluster.node(follower).shard_map.view.value.key == current.key,  # type: ignore[union-attr]
                         timeout=10)
