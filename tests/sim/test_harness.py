"""The in-process cluster harness under MockClock: start, stop, kill, restart, partition, heal."""

from __future__ import annotations

import logging

import httpx
import pytest
import trio
import trio.testing

from dakera_actors import node as node_module
from dakera_actors.testing import open_cluster
from dakera_actors.transport import TransportError
from dakera_actors.wire import Ping, encode_frame

from ..waiting import eventually

KEY = bytes(range(32))


async def test_three_nodes_start_and_stop_quickly_under_mock_clock(
        autojump_clock: trio.testing.MockClock) -> None:
    simulated = trio.current_time()
    async with open_cluster(3, seed=1) as cluster:
        assert sorted(cluster.nodes) == ["node-1", "node-2", "node-3"]
        await trio.sleep(60)  # a minute of cluster life: joined, a leader elected, a shard map out
        for node_id in cluster.ids:
            async with cluster.client(node_id) as http:
                r = await http.get("/health")
                assert r.status_code == 200 and r.json()["node_id"] == node_id
                assert (await http.get("/health/ready")).status_code == 200
    assert cluster.nodes == {}
    # the minute is simulated: the run's clock is the mock one, which advances only by jumps
    # (rate 0), so the minute passed without waiting for the wall clock; checked on the clock
    # itself, not with a stopwatch a loaded CI machine could miss
    assert trio.lowlevel.current_clock() is autojump_clock and autojump_clock.rate == 0
    assert trio.current_time() - simulated >= 60


async def test_nodes_reach_each_other_over_packets_and_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(3, seed=2) as cluster:
        one = cluster.node("node-1").endpoint
        assert one is not None
        for other in ("node-2", "node-3"):
            assert await one.ping(cluster.address(other), timeout=1)
            reply = await one.request(cluster.address(other), Ping(seq=9), timeout=1)
            assert reply.sender == other and reply.message.seq == 9


async def test_partition_and_heal(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(3, seed=3) as cluster:
        ep = {i: cluster.node(i).endpoint for i in cluster.ids}
        cluster.partition(["node-1"], ["node-2", "node-3"])
        assert not await ep["node-1"].ping(cluster.address("node-2"), timeout=1)
        assert await ep["node-2"].ping(cluster.address("node-3"), timeout=1)
        with pytest.raises(TransportError):  # the SYN goes nowhere until the timeout
            await ep["node-1"].request(cluster.address("node-3"), Ping(seq=1), timeout=1)
        cluster.heal()
        assert await ep["node-1"].ping(cluster.address("node-2"), timeout=1)


async def test_kill_and_restart_keep_id_address_and_data_dir(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(3, seed=4) as cluster:
        ep1 = cluster.node("node-1").endpoint
        first = cluster.node("node-2")
        async with cluster.client("node-2") as http:
            assert (await http.get("/health")).status_code == 200
            cluster.kill("node-2")
            assert "node-2" not in cluster.nodes
            with pytest.raises(httpx.ConnectError):
                await http.get("/health")
            assert not await ep1.ping(cluster.address("node-2"), timeout=1)
            second = await cluster.restart("node-2")
            assert second is not first and second.node_id == "node-2"
            assert second.data_dir == first.data_dir
            assert (await http.get("/health")).status_code == 200  # the client follows the restart
        assert await ep1.ping(cluster.address("node-2"), timeout=1)


async def test_graceful_stop_and_start(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(2, seed=5) as cluster:
        await cluster.stop("node-2")
        assert list(cluster.nodes) == ["node-1"]
        with pytest.raises(RuntimeError):
            await cluster.stop("node-2")
        await cluster.start("node-2")
        assert sorted(cluster.nodes) == ["node-1", "node-2"]


async def test_sealed_cluster_rejects_outsiders_and_counts_them(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(3, seed=6, config={"gossip_keys": (KEY,)},
                            node_config={"node-3": {"gossip_keys": (bytes(32),)}}) as cluster:
        ep = {i: cluster.node(i).endpoint for i in cluster.ids}
        assert await ep["node-1"].ping(cluster.address("node-2"), timeout=1)
        assert not await ep["node-3"].ping(cluster.address("node-1"), timeout=1)
        assert cluster.node("node-1").metrics.sample("dakera_wire_rejected_total", reason="auth") >= 1


async def test_garbage_and_forged_packets_are_dropped_and_counted(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(2, seed=7, config={"gossip_keys": (KEY,)}) as cluster:
        target = cluster.node("node-1")
        ep2 = cluster.node("node-2").endpoint
        transport = ep2.transport
        await transport.send_packet(cluster.address("node-1"), b"\x00garbage")
        await transport.send_packet(cluster.address("node-1"), encode_frame(Ping(seq=1), "node-2"))  # unsealed
        await transport.send_packet(cluster.address("node-1"),
                                    encode_frame(Ping(seq=1), "node-2", (bytes(32),)))  # forged key
        await trio.testing.wait_all_tasks_blocked()
        assert target.metrics.sample("dakera_wire_rejected_total", reason="unsealed") == 2  # garbage too
        assert target.metrics.sample("dakera_wire_rejected_total", reason="auth") == 1
        assert await ep2.ping(cluster.address("node-1"), timeout=1)  # still serving


async def test_network_faults_apply_to_the_cluster(autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(2, seed=8) as cluster:
        ep = cluster.node("node-1").endpoint
        cluster.set_faults(drop=1.0)
        assert not await ep.ping(cluster.address("node-2"), timeout=1)
        cluster.set_faults(delay=(0.3, 0.3))
        t0 = trio.current_time()
        assert await ep.ping(cluster.address("node-2"), timeout=1)
        assert trio.current_time() - t0 == pytest.approx(0.6)  # there and back
        cluster.set_faults()
        cluster.cut("node-2", "node-1")
        assert not await ep.ping(cluster.address("node-2"), timeout=1)


@pytest.mark.real
@pytest.mark.parametrize("transport", ["udp", "websocket"])
async def test_the_same_cluster_forms_over_real_transports(transport: str) -> None:
    """DESIGN: the same cluster test runs on any transport (here in real time, on loopback)."""
    from dakera_actors.membership.member import MemberState

    async with open_cluster(3, transport=transport, seed=11) as cluster:
        def full() -> bool:
            return all(n.membership.view.value.count(MemberState.ALIVE) == 3  # type: ignore[union-attr]
                       for n in cluster.nodes.values())

        await eventually(full, timeout=20)
        cluster.kill("node-3")
        await eventually(lambda: all(
            n.membership.view.value.members["node-3"].state == MemberState.DEAD  # type: ignore[union-attr]
            for i, n in cluster.nodes.items()), timeout=30)
        await cluster.restart("node-3")
        await eventually(full, timeout=20)


async def test_requests_reuse_a_pooled_stream_and_recover_from_a_dropped_one(
        autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(2, seed=12) as cluster:
        ep = cluster.node("node-1").endpoint
        assert ep is not None and cluster.network is not None
        target = cluster.address("node-2")
        await ep.request(target, Ping(seq=1), timeout=1)
        opened = cluster.network.stats.streams_opened
        for seq in range(2, 12):
            assert (await ep.request(target, Ping(seq=seq), timeout=1)).message.seq == seq
        assert cluster.network.stats.streams_opened == opened  # ten requests, no new stream
        cluster.partition(["node-1"], ["node-2"])  # breaks every stream between them, kept ones too
        cluster.heal()
        assert (await ep.request(target, Ping(seq=99), timeout=1)).message.seq == 99  # a fresh one
        assert cluster.network.stats.streams_opened > opened


async def test_a_peer_that_refuses_push_pull_does_not_fail_a_node(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    """A peer whose transport is up before its membership (a node mid-start) answers a push-pull
    with an error reply; the asking node keeps running and tries again later."""
    from dakera_actors.membership.messages import SwimPushPull

    async with open_cluster(2, seed=13, config={"gossip_push_pull_interval_ms": 500}) as cluster:
        await trio.sleep(5)
        refusing = cluster.node("node-2").endpoint
        assert refusing is not None
        served = refusing._stream_handlers.pop(SwimPushPull)  # as if its membership had not started yet
        with caplog.at_level(logging.DEBUG, logger="dakera_actors.node"):
            await trio.sleep(10)  # both push-pull with each other every half second meanwhile
        refused = [r for r in caplog.records if r.getMessage() == "push_pull_failed"
                   and "unhandled" in str(getattr(r, "error", ""))]
        assert refused  # node-1 was refused, several times
        assert cluster.node("node-1").readiness.ready  # and is still running
        refusing._stream_handlers[SwimPushPull] = served
        async with cluster.client("node-1") as http:
            assert (await http.get("/health")).status_code == 200


async def test_metadata_updates_of_different_keys_do_not_undo_each_other(autojump_clock: trio.testing.MockClock) -> None:
    """The maintenance flag (operator) and the map header (leader) are separate keys of one
    node's gossip metadata. Updated back to back, before the view publishes either, both stay
    (a read of the lagging view and a write of the whole dict once lost the maintenance flag)."""
    async with open_cluster(3, seed=14) as cluster:
        await trio.sleep(5)
        membership = cluster.node("node-2").membership
        assert membership is not None
        before = dict(membership.view.value.members["node-2"].meta)
        await membership.update_meta(maintenance=True)
        await membership.update_meta(map=[7, 7])  # the view has not published the first yet
        await membership.update_meta(map=[7, 7])  # unchanged: no new incarnation
        incarnation = membership.core.me.incarnation
        await trio.sleep(2)
        for node in cluster.nodes.values():
            meta = node.membership.view.value.members["node-2"].meta  # type: ignore[union-attr]
            assert meta == {**before, "maintenance": True, "map": [7, 7]}
        assert membership.core.me.incarnation == incarnation
        await membership.update_meta(maintenance=False)
        await eventually(lambda: all(not n.membership.view.value.members["node-2"].maintenance  # type: ignore[union-attr]
                                     for n in cluster.nodes.values()), timeout=10)


async def test_the_harness_seals_clusters_by_default(autojump_clock: trio.testing.MockClock) -> None:
    from dakera_actors.testing.cluster import cluster_key

    async with open_cluster(2, seed=11) as cluster:
        assert all(n.config.gossip_keys == (cluster_key(11),) for n in cluster.nodes.values())
        assert await cluster.node("node-1").endpoint.ping(cluster.address("node-2"), timeout=1)
    async with open_cluster(1, seed=11, config={"gossip_insecure": True}) as cluster:
        assert cluster.node("node-1").config.gossip_keys == ()


async def test_insecure_cluster_mode_warns_at_start_and_every_hour(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="dakera_actors.node")
    assert node_module.INSECURE_REMINDER == 3600.0  # hourly; simulated below at a minute (hours cost 20 s of CPU)
    monkeypatch.setattr(node_module, "INSECURE_REMINDER", 60.0)

    def warnings() -> int:
        return sum(1 for r in caplog.records if r.getMessage() == "gossip_insecure")

    async with open_cluster(1, seed=12, config={"gossip_insecure": True}) as cluster:
        assert warnings() == 1
        record = next(r for r in caplog.records if r.getMessage() == "gossip_insecure")
        assert "bypasses the API key" in record.__dict__["detail"]
        await trio.sleep(60 * 2 + 1)
        assert warnings() == 3
        assert cluster.node("node-1").endpoint is not None
    async with open_cluster(1, seed=12):
        await trio.sleep(61)
    assert warnings() == 3  # a keyed cluster never says it


async def test_a_replayed_frame_is_refused_even_by_a_restarted_receiver(
        autojump_clock: trio.testing.MockClock) -> None:
    async with open_cluster(2, seed=13) as cluster:
        sender = cluster.node("node-2").endpoint
        frame = sender.codec.encode(Ping(seq=99))
        for _ in range(2):
            await sender.transport.send_packet(cluster.address("node-1"), frame)
        await trio.testing.wait_all_tasks_blocked()
        metrics = cluster.node("node-1").metrics
        assert metrics.sample("dakera_wire_rejected_total", reason="replay") == 1
        await trio.sleep(5)
        restarted = await cluster.restart("node-1")  # an empty replay cache, well inside the window
        await sender.transport.send_packet(cluster.address("node-1"), frame)
        await trio.testing.wait_all_tasks_blocked()
        assert restarted.metrics.sample("dakera_wire_rejected_total", reason="stale") == 1
        assert await sender.ping(cluster.address("node-1"), timeout=1)
