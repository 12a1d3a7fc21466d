"""A node restarted on the shard map it stored (simulated cluster, MockClock): while it was down its
shards failed over and were written to; until the leader confirms its map or sends a newer one it
must not answer from its own old copy."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dakera_actors.testing import open_cluster

from ..sim.test_crash import settled
from ..waiting import eventually

CONFIG = {"shards": 8, "replication_factor": 2, "write_ack": "quorum"}
MEMORIES = 16


@pytest.mark.parametrize("cut_from_leader", [False, True])
async def test_a_restarted_node_never_answers_from_its_stored_map(
        autojump_clock: trio.testing.MockClock, cut_from_leader: bool) -> None:
    """Reads through the restarted node from the moment it starts: the new version or 503, never
    the old copy. Without the leader (cut off from it, the other member reachable) nothing
    confirms its map: every read is 503 and it is not ready, until the cut heals."""
    async with open_cluster(3, seed=21, config=CONFIG) as cluster:
        await eventually(lambda: settled(cluster), timeout=60)
        leader = next(i for i, n in cluster.nodes.items() if n.lease is not None and n.lease.view.value.is_self)
        victim = next(i for i in cluster.ids if i != leader)
        agents = {f"m{i}": f"agent-{i}" for i in range(MEMORIES)}
        async with cluster.client(leader) as http:
            for mid, agent in agents.items():
                r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": f"{mid} v1", "id": mid})
                assert r.status_code == 200, r.text
        stored_map = cluster.node(victim).shard_map.view.value  # type: ignore[union-attr]
        assert stored_map is not None
        # the memories whose shards the victim leads: they fail over when it dies
        moved = {mid: a for mid, a in agents.items() if stored_map.owner(_shard(a)) == victim}
        assert moved
        cluster.kill(victim)
        await cluster.slot(victim).down.wait()  # type: ignore[union-attr]

        def failed_over() -> bool:
            smap = cluster.node(leader).shard_map.view.value  # type: ignore[union-attr]
            return smap is not None and all(smap.owner(_shard(a)) != victim for a in moved.values())

        await eventually(failed_over, timeout=60)
        async with cluster.client(leader) as http:
            for mid, agent in moved.items():
                r = await http.put(f"/v1/memory/update/{mid}", params={"agent_id": agent},
                                   json={"content": f"{mid} v2"})
                assert r.status_code == 200, r.text
        if cut_from_leader:
            cluster.cut(victim, leader, both=True)  # it can reach the other member, not the leader
        node = await cluster.start(victim)
        answers: set[int] = set()
        with trio.move_on_after(10 if cut_from_leader else 3):  # reads through the restarted node
            while True:
                for mid, agent in moved.items():
                    async with cluster.client(victim) as http:
                        r = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
                    answers.add(r.status_code)
                    if r.status_code == 200:
                        assert r.json()["content"] == f"{mid} v2", r.json()  # never the stored map's copy
                    else:
                        assert r.status_code == 503, r.text
                await trio.sleep(0.01)
        if cut_from_leader:
            assert answers == {503}  # nobody confirmed its map: it answered nothing
            assert not node.shard_map.current.value  # type: ignore[union-attr]
            assert "shard_map" in node.readiness.missing()
        cluster.heal()
        await eventually(lambda: node.shard_map.current.value, timeout=30)  # type: ignore[union-attr]
        await eventually(lambda: node.readiness.ready, timeout=30)
        async with cluster.client(victim) as http:
            for mid, agent in moved.items():
                r = await http.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
                assert r.status_code == 200 and r.json()["content"] == f"{mid} v2", r.text


def _shard(agent: str) -> int:
    from dakera_actors.store.shard import shard_of

    return shard_of(agent, CONFIG["shards"])  # type: ignore[arg-type]
