"""Fencing that decides: a deposed leader's messages refused for their TOKEN alone.

In every test the message a deposed leader sends would be accepted on every other ground (its
map is newer by version, well formed, its announce is authentic): only the fencing token,
older than one the receiver already knows, stands in the way. Removing the fence check
(``lease.fence(offered.token)`` in ``ShardMapActor._consider`` for maps offered by push, pull or
a takeover's position query; the ``ann.token < fence_floor`` check for announces) fails them.

How the receiver knows a newer token: for the maps, it is told through its lease actor's public
``fence`` (what it does on any message of a newer leader), so its installed map is still the old
leader's and the version comparison cannot refuse first; for the announce, a real election.
"""

from __future__ import annotations

import attrs
import trio
import trio.testing

from dakera_actors.lease.messages import LeaseAnnounce
from dakera_actors.replication.messages import PositionQuery, Positions
from dakera_actors.runtime import ActorTimeout
from dakera_actors.sharding.shardmap import ShardMap
from dakera_actors.testing import Cluster, open_cluster

from ..waiting import eventually
from .test_shard_map import maps, one_map

MockClock = trio.testing.MockClock


async def deposed_leader_and_receiver(cluster: Cluster) -> tuple[str, str, ShardMap, ShardMap]:
    """Settle a map; make one follower know a token newer than the leader's. Returns the
    (deposed) leader, that follower, the installed map and the leader's next map: newer by
    version, otherwise valid, under the leader's old token."""
    await eventually(lambda: one_map(cluster) is not None, timeout=30)
    current = one_map(cluster)
    leader = cluster.node("node-1").lease.view.value.leader  # type: ignore[union-attr]
    assert current is not None and leader is not None and current.token >= 1
    receiver = next(i for i in cluster.ids if i != leader)
    assert await cluster.node(receiver).lease.fence(current.token + 1)  # type: ignore[union-attr]
    newer = attrs.evolve(current, version=current.version + 100)
    assert newer.key > current.key  # so only the token can refuse it
    return leader, receiver, current, newer


def assert_unchanged(cluster: Cluster, receiver: str, current: ShardMap) -> None:
    installed = maps(cluster)[receiver]
    assert installed is not None and installed.key == current.key, installed


async def test_a_pushed_map_newer_by_version_under_an_old_token_is_refused(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=21) as cluster:
        leader, receiver, current, newer = await deposed_leader_and_receiver(cluster)
        reply = await cluster.node(leader).endpoint.request(  # type: ignore[union-attr]
            cluster.address(receiver), newer, timeout=5)
        assert reply.message.accepted is False and "stale token" in reply.message.reason, reply.message
        assert_unchanged(cluster, receiver, current)


async def test_a_pulled_map_newer_by_version_under_an_old_token_is_refused(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=22) as cluster:
        leader, receiver, current, newer = await deposed_leader_and_receiver(cluster)
        cluster.node(leader).shard_map.view.set(newer)  # type: ignore[union-attr]  # what it serves to a pull
        metrics = cluster.node(receiver).metrics
        before = metrics.sample("dakera_fencing_rejections_total")
        await cluster.node(receiver).shard_map.catch_up(  # type: ignore[union-attr]
            leader, newer.version, timeout=5)
        # the pull happened and was refused for its token (not skipped, not lost on the way)
        assert metrics.sample("dakera_fencing_rejections_total") == before + 1
        assert_unchanged(cluster, receiver, current)


async def test_a_takeover_position_query_under_an_old_token_is_refused(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=23) as cluster:
        leader, receiver, current, newer = await deposed_leader_and_receiver(cluster)
        reply = await cluster.node(leader).endpoint.request(  # type: ignore[union-attr]
            cluster.address(receiver), PositionQuery([0, 1, 2], newer), timeout=5)
        answer = reply.message
        assert isinstance(answer, Positions)
        assert answer.positions == [] and "stale token" in answer.refused, answer
        assert_unchanged(cluster, receiver, current)


async def test_a_deposed_leaders_announce_is_ignored(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=24) as cluster:
        def agreed() -> tuple[str, int] | None:
            views = {(n.lease.view.value.leader, n.lease.view.value.token)  # type: ignore[union-attr]
                     for n in cluster.nodes.values()}
            found = views.pop() if len(views) == 1 else None
            return found if found is not None and found[0] is not None else None  # type: ignore[return-value]

        await eventually(lambda: agreed() is not None, timeout=30)
        old, old_token = agreed()  # type: ignore[misc]
        cluster.kill(old)
        await eventually(lambda: (now := agreed()) is not None and now[1] > old_token, timeout=60)
        await cluster.restart(old)  # back with its old token on disk, a follower now
        await eventually(lambda: (now := agreed()) is not None and now[0] != old, timeout=60)
        new, new_token = agreed()  # type: ignore[misc]
        receiver = next(i for i in cluster.ids if i not in (old, new))
        view = cluster.node(receiver).lease.view  # type: ignore[union-attr]
        seen: list[tuple[str | None, int]] = []

        async def record() -> None:
            async for v in view.changes(include_current=False):
                seen.append((v.leader, v.token))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            await trio.testing.wait_all_tasks_blocked()
            # authentic (sent by the old leader's own endpoint), only its token is old
            await cluster.node(old).endpoint.send(  # type: ignore[union-attr]
                cluster.address(receiver), LeaseAnnounce(token=old_token, remaining=30.0))
            await eventually(lambda: len(seen) >= 2, timeout=30)  # the new leader announced since
            nursery.cancel_scope.cancel()
        assert (old, old_token) not in seen and all(s == (new, new_token) for s in seen), seen


async def test_a_fence_check_that_times_out_refuses_the_map_and_the_node_lives_on(autojump_clock: MockClock) -> None:
    """The chaos runner found this: a node whose lease actor was stuck in an fsync for 5 s (a
    saturated disk) failed the shard-map actor's fencing ask, and the actor crashed the node. Now
    the offer is refused with a reason, and the next one installs."""
    async with open_cluster(3, seed=22) as cluster:
        await eventually(lambda: one_map(cluster) is not None, timeout=30)
        current = one_map(cluster)
        assert current is not None
        leader = cluster.node("node-1").lease.view.value.leader  # type: ignore[union-attr]
        receiver = next(i for i in cluster.ids if i != leader)
        actor = cluster.node(receiver).shard_map
        assert actor is not None
        real_fence = actor.fence

        async def stuck(token: int) -> bool:
            raise ActorTimeout("lease did not answer within 5.0s")

        actor.fence = stuck
        newer = attrs.evolve(current, version=current.version + 100)
        reply = await cluster.node(leader).endpoint.request(  # type: ignore[union-attr]
            cluster.address(receiver), newer, timeout=5)
        assert reply.message.accepted is False and "timed out" in reply.message.reason, reply.message
        assert_unchanged(cluster, receiver, current)
        actor.fence = real_fence
        reply = await cluster.node(leader).endpoint.request(  # type: ignore[union-attr]
            cluster.address(receiver), newer, timeout=5)
        assert reply.message.accepted is True, reply.message
        assert maps(cluster)[receiver] == newer
