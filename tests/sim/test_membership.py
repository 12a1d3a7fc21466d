"""SWIM in simulation: whole clusters on the memory transport under MockClock, seeded."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from dakera_actors.membership.member import MemberState
from dakera_actors.testing import Cluster, open_cluster
from dakera_actors.wire import encode_frame

from ..waiting import eventually

MockClock = trio.testing.MockClock


def states_of(cluster: Cluster, member: str) -> dict[str, str]:
    """What every running node (but ``member``) believes about ``member``."""
    out = {}
    for node_id, node in cluster.nodes.items():
        if node_id != member:
            m = node.membership.view.value.members.get(member)  # type: ignore[union-attr]
            out[node_id] = m.state.label if m else "unknown"
    return out


def full_view(cluster: Cluster) -> bool:
    n = len(cluster.ids)
    return all(node.membership.view.value.count(MemberState.ALIVE) == n  # type: ignore[union-attr]
               for node in cluster.nodes.values())


@pytest.mark.parametrize("n,seed", [(3, 1), (10, 2)])
async def test_cluster_converges_to_a_full_view(n: int, seed: int, autojump_clock: MockClock) -> None:
    async with open_cluster(n, seed=seed) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        async with cluster.client("node-1") as http:
            nodes = (await http.get("/admin/cluster/nodes")).json()
        assert [x["id"] for x in nodes] == sorted(cluster.ids, key=str)
        assert all(x["state"] == "Alive" and x["gossip_address"] and x["incarnation"] > 0 for x in nodes)
        await trio.sleep(5)  # simulated: a few protocol periods
        metrics = cluster.node("node-1").metrics
        assert metrics.sample("dakera_gossip_members", state="alive") == n
        assert metrics.sample("dakera_swim_probes_total") > 0
        assert metrics.sample("dakera_swim_probes_failed_total") == 0


async def test_fifty_nodes_converge(autojump_clock: MockClock) -> None:
    async with open_cluster(50, seed=3) as cluster:
        await eventually(lambda: full_view(cluster), timeout=60, interval=0.5)


@pytest.mark.long
async def test_two_hundred_nodes_converge(autojump_clock: MockClock) -> None:
    """About 90 s of CPU on 2 cores: `make test-long`, not `make test` (bench/RESULTS.md)."""
    async with open_cluster(200, seed=3) as cluster:
        await eventually(lambda: full_view(cluster), timeout=60, interval=0.5)


async def test_killed_node_is_declared_dead_by_every_survivor_and_comes_back(autojump_clock: MockClock) -> None:
    async with open_cluster(10, seed=4) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        cluster.kill("node-7")
        killed_at = trio.current_time()
        await eventually(lambda: set(states_of(cluster, "node-7").values()) == {"Dead"}, timeout=60, interval=0.1)
        detection = trio.current_time() - killed_at
        # protocol bounds in simulated time, from the configured timings: no survivor may call it
        # Dead before a failed probe plus the shortest suspicion timeout (Lifeguard's floor), and
        # every survivor probes it within two shuffled rounds of the others, then waits at most
        # the longest suspicion timeout, even if no gossip about it ever reached it
        config = cluster.node("node-1").membership.core.config  # type: ignore[union-attr]
        n = len(cluster.ids)
        low = config.suspicion_mult * config.probe_interval  # log10 scale is at its floor of 1 here
        high = config.suspicion_mult * max(1.0, math.log10(n)) * config.probe_interval * config.suspicion_max_mult
        earliest = config.probe_timeout + low
        latest = 2 * (n - 1) * config.probe_interval + config.probe_interval + high
        print(f"detection {detection:.2f}s, bounds [{earliest:.2f}, {latest:.2f}]")
        assert earliest <= detection <= latest
        await cluster.restart("node-7")
        await eventually(lambda: set(states_of(cluster, "node-7").values()) == {"Alive"}, timeout=30, interval=0.1)
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)


async def test_graceful_stop_is_seen_as_left_without_suspicion(autojump_clock: MockClock) -> None:
    async with open_cluster(5, seed=5) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        suspicions_before = sum(n.membership.core.stats.suspicions for n in cluster.nodes.values())  # type: ignore[union-attr]
        await cluster.stop("node-2")
        await eventually(lambda: set(states_of(cluster, "node-2").values()) == {"Left"}, timeout=5, interval=0.05)
        suspicions_after = sum(n.membership.core.stats.suspicions for n in cluster.nodes.values())  # type: ignore[union-attr]
        assert suspicions_after == suspicions_before


@pytest.mark.parametrize("seed", [6, 7])
async def test_lossy_node_is_never_declared_dead(seed: int, autojump_clock: MockClock) -> None:
    async with open_cluster(8, seed=seed) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        for other in cluster.ids:
            if other != "node-5":
                cluster.set_link_faults("node-5", other, drop=0.3)
                cluster.set_link_faults(other, "node-5", drop=0.3)
        false_deaths: set[str] = set()
        end = trio.current_time() + 120
        while trio.current_time() < end:
            await trio.sleep(0.1)
            false_deaths |= {k for k, v in states_of(cluster, "node-5").items() if v == "Dead"}
        assert false_deaths == set()


async def test_slow_node_is_suspected_at_worst_never_dead(autojump_clock: MockClock) -> None:
    async with open_cluster(6, seed=8) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        for other in cluster.ids:
            if other != "node-3":  # every packet to and from node-3 takes 100-300 ms each way
                cluster.set_link_faults("node-3", other, delay=(0.1, 0.3))
                cluster.set_link_faults(other, "node-3", delay=(0.1, 0.3))
        seen: set[str] = set()
        end = trio.current_time() + 120
        while trio.current_time() < end:
            await trio.sleep(0.1)
            seen |= set(states_of(cluster, "node-3").values())
        assert "Dead" not in seen


async def test_partition_and_heal(autojump_clock: MockClock) -> None:
    async with open_cluster(5, seed=9) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        cluster.partition(["node-1", "node-2"], ["node-3", "node-4", "node-5"])

        def split() -> bool:
            left = {cluster.node(i).membership.view.value.members[j].state  # type: ignore[union-attr]
                    for i in ("node-1", "node-2") for j in ("node-3", "node-4", "node-5")}
            right = {cluster.node(i).membership.view.value.members[j].state  # type: ignore[union-attr]
                     for i in ("node-3", "node-4", "node-5") for j in ("node-1", "node-2")}
            return MemberState.ALIVE not in left | right

        await eventually(split, timeout=60, interval=0.1)
        await trio.sleep(60)  # a partition longer than gossip-to-the-dead
        cluster.heal()
        await eventually(lambda: full_view(cluster), timeout=120, interval=0.2)


async def test_garbage_and_forged_packets_leave_the_view_alone(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=10, config={"gossip_keys": (bytes(range(32)),)}) as cluster:
        await eventually(lambda: full_view(cluster), timeout=30, interval=0.1)
        from dakera_actors.membership.member import Update
        from dakera_actors.membership.messages import SwimGossip

        forged = SwimGossip([Update("node-2", int(MemberState.DEAD), 10**15, by="evil")])
        raw = cluster.node("node-3").endpoint.transport  # type: ignore[union-attr]
        for frame in (b"\xff" * 40, encode_frame(forged, "evil"), encode_frame(forged, "evil", (bytes(32),))):
            for _ in range(20):
                await raw.send_packet(cluster.address("node-1"), frame)
        await trio.sleep(5)
        assert states_of(cluster, "node-2")["node-1"] == "Alive"
        metrics = cluster.node("node-1").metrics
        assert metrics.sample("dakera_wire_rejected_total", reason="unsealed") == 40
        assert metrics.sample("dakera_wire_rejected_total", reason="auth") == 20
        assert full_view(cluster)
