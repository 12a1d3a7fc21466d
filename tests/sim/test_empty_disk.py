"""Copies lost with their disks vouch for nothing (found by the 30-minute chaos run, issue 20).

A node restarted on an empty disk is still named in the map as a copy of the shards it held; it
acknowledged their writes in its previous life and no longer has them. When a second copy of the
same shard was also replaced before it could catch up, the two empty copies made a takeover
quorum on their own while the one copy holding the data was cut off: the new primary went live
empty, every listing of the agent answered 200 with nothing, and when the holder came back its
history was replaced by the empty one (every acknowledged write lost). Now a copy lost with its
disk counts toward no takeover until it has caught up with a live primary (or taken the shard
over from copies that vouch), so the shard waits for the copy that has the data.
"""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.membership.member import MemberState
from dakera_actors.store.shard import shard_of
from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually, eventually_async
from .test_replication import one_map, settled, store

CONFIG = {"replication_factor": 3, "shards": 16, "write_ack": "quorum", "rereplication_grace": 120.0}


def alive_everywhere(cluster: Cluster, node_id: str) -> bool:
    return all(n.membership is not None and (m := n.membership.view.value.members.get(node_id)) is not None
               and m.state == MemberState.ALIVE for i, n in cluster.nodes.items() if i != node_id)


async def listing(cluster: Cluster, via: str, agent: str) -> tuple[int, list[str]]:
    with trio.move_on_after(8):
        async with cluster.client(via) as http:
            r = await http.get(f"/v1/agents/{agent}/memories", params={"limit": 1000})
        return r.status_code, sorted(m["id"] for m in r.json()) if r.status_code == 200 else []
    return 0, []


async def test_two_replaced_copies_do_not_outvote_the_one_that_holds_the_data(
        autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(5, seed=3, config=CONFIG) as cluster:
        await eventually(lambda: settled(cluster, 5), timeout=60)
        smap = one_map(cluster)
        assert smap is not None
        agent = "agent-0"
        shard = shard_of(agent, smap.shards)
        holder, first, second = smap.placement[shard]
        others = [i for i in cluster.ids if i not in (holder, first, second)]
        ids = [f"m{i}" for i in range(20)]
        for mid in ids:
            assert await store(cluster, others[0], agent, mid, f"fact {mid}") == 200
        # two copies replaced one after the other, each cut off from the holder while it is back,
        # so neither can copy the shard: both are named in the map, both empty
        for victim in (first, second):
            cluster.kill(victim)
            down = cluster.slot(victim).down
            assert down is not None
            await down.wait()
            cluster.wipe(victim)
            cluster.cut(holder, victim, both=True)
            await cluster.start(victim)
            await eventually(lambda v=victim: alive_everywhere(cluster, v), timeout=60)  # type: ignore[misc]
        assert cluster.node(first).memory.shards.shard(shard).position == (0, 0)  # type: ignore[union-attr]
        assert cluster.node(second).memory.shards.shard(shard).position == (0, 0)  # type: ignore[union-attr]
        cluster.heal()
        cluster.partition([holder], [i for i in cluster.ids if i != holder])
        # the map moves the shard to an empty copy; no node may answer the listing without the data
        await eventually(lambda: (m := cluster.node(first).shard_map.view.value) is not None  # type: ignore[union-attr]
                         and m.owner(shard) != holder, timeout=60)
        end = trio.current_time() + 40
        while trio.current_time() < end:
            for via in [first, second, *others]:
                status, listed = await listing(cluster, via, agent)
                assert status != 200 or listed == sorted(ids), (
                    f"{via} listed {len(listed)} of the {len(ids)} acknowledged memories while the only copy "
                    f"holding them ({holder}) was cut off")
            await trio.sleep(1)
        cluster.heal()

        async def whole_everywhere() -> bool:
            answers = [await listing(cluster, via, agent) for via in cluster.ids]
            return all(answer == (200, sorted(ids)) for answer in answers)

        # healed: the holder's history wins, nothing acknowledged was lost
        await eventually_async(whole_everywhere, timeout=120, interval=1.0)
