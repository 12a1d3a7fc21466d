"""The memory transport's fault injection, under MockClock: it must do exactly what it is told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from dakera_actors.transport import ConnectError, StreamClosed
from transports.memory import MemoryNetwork, MemoryTransport


@asynccontextmanager
async def endpoints(net: MemoryNetwork, *names: str) -> AsyncIterator[list[MemoryTransport]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(MemoryTransport.open(bind=f"{n}:1", network=net))
               for n in names]


async def drain(t: MemoryTransport) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(t._packets.receive_nowait()[1])
        except trio.WouldBlock:
            return got


async def test_drop_probability_is_applied(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=42)
    net.set_faults(drop=0.3)
    async with endpoints(net, "a", "b") as (a, b):
        for i in range(1000):  # under the 1024-packet receive buffer
            await a.send_packet(b.address, str(i).encode())
        got = await drain(b)
    assert 600 < len(got) < 800  # 700 expected; the bounds are ~7 sigma wide
    assert net.stats.packets_dropped == 1000 - len(got)


async def test_full_receive_buffer_drops_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with endpoints(net, "a", "b") as (a, b):
        for _ in range(1100):
            await a.send_packet(b.address, b"x")
        assert len(await drain(b)) == 1024
    assert net.stats.packets_dropped == 1100 - 1024


async def test_same_seed_same_losses(autojump_clock: trio.testing.MockClock) -> None:
    runs = []
    for _ in range(2):
        net = MemoryNetwork(seed=7)
        net.set_faults(drop=0.5)
        async with endpoints(net, "a", "b") as (a, b):
            for i in range(100):
                await a.send_packet(b.address, str(i).encode())
            runs.append(await drain(b))
    assert runs[0] == runs[1]


async def test_delay_holds_packets_for_the_configured_time(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=1)
    net.set_faults(delay=(0.2, 0.2))
    async with endpoints(net, "a", "b") as (a, b):
        t0 = trio.current_time()
        await a.send_packet(b.address, b"x")
        assert await drain(b) == []
        assert await b.receive_packet() == ("a:1", b"x")
        assert trio.current_time() - t0 == pytest.approx(0.2)


async def test_jittered_delay_reorders(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=3)
    net.set_faults(delay=(0.0, 0.1))
    async with endpoints(net, "a", "b") as (a, b):
        for i in range(50):
            await a.send_packet(b.address, bytes([i]))
        got = [(await b.receive_packet())[1][0] for _ in range(50)]
    assert sorted(got) == list(range(50)) and got != list(range(50))


async def test_duplication(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=5)
    net.set_faults(duplicate=1.0)
    async with endpoints(net, "a", "b") as (a, b):
        await a.send_packet(b.address, b"x")
        assert await drain(b) == [b"x", b"x"]


async def test_partition_blocks_across_groups_only(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with endpoints(net, "a", "b", "c", "d") as (a, b, c, d):
        net.partition(["a:1", "b:1"], ["c:1"])  # d is in no group: a group of its own
        for src in (a, b, c, d):
            for dst in (a, b, c, d):
                if src is not dst:
                    await src.send_packet(dst.address, src.address.encode())
        assert sorted(await drain(a)) == [b"b:1"]
        assert sorted(await drain(b)) == [b"a:1"]
        assert await drain(c) == [] and await drain(d) == []
        net.heal()
        await a.send_packet(c.address, b"healed")
        assert await drain(c) == [b"healed"]


async def test_one_way_cut(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with endpoints(net, "a", "b") as (a, b):
        net.cut("a:1", "b:1")
        await a.send_packet(b.address, b"lost")
        await b.send_packet(a.address, b"arrives")
        assert await drain(b) == [] and await drain(a) == [b"arrives"]


async def test_partition_breaks_streams_and_connect_times_out(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with endpoints(net, "a", "b") as (a, b):
        client = await a.connect(b.address)
        server = await b.accept()
        net.partition(["a:1"], ["b:1"])
        with pytest.raises(StreamClosed):
            await server.receive()
        with pytest.raises(StreamClosed):
            await client.send(b"x")
        t0 = trio.current_time()
        with pytest.raises(ConnectError):
            await a.connect(b.address, timeout=3)
        assert trio.current_time() - t0 == pytest.approx(3)


async def test_killed_endpoint_refuses_at_once_and_revives(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with endpoints(net, "a", "b") as (a, b):
        client = await a.connect(b.address)
        net.kill("b:1")
        with pytest.raises(StreamClosed):
            await client.receive()
        t0 = trio.current_time()
        with pytest.raises(ConnectError, match="refused"):
            await a.connect(b.address, timeout=3)
        assert trio.current_time() == t0
        await a.send_packet(b.address, b"void")
        assert await drain(b) == []
        net.revive("b:1")
        await a.send_packet(b.address, b"back")
        assert await drain(b) == [b"back"]


async def test_per_link_faults_override_network_faults(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    async with endpoints(net, "a", "b", "c") as (a, b, c):
        net.set_link_faults("a:1", "b:1", drop=1.0)
        await a.send_packet(b.address, b"x")
        await a.send_packet(c.address, b"y")
        assert await drain(b) == [] and await drain(c) == [b"y"]


async def test_address_in_use_is_refused() -> None:
    net = MemoryNetwork()
    async with MemoryTransport.open(bind="a:1", network=net):
        with pytest.raises(OSError, match="in use"):
            async with MemoryTransport.open(bind="a:1", network=net):
                pass


def test_bad_fault_values_are_rejected() -> None:
    net = MemoryNetwork()
    with pytest.raises(ValueError):
        net.set_faults(drop=1.5)
    with pytest.raises(ValueError):
        net.set_faults(delay=(0.5, 0.1))
    with pytest.raises(ValueError):
        net.partition(["a"], ["a", "b"])
