"""One conformance suite for every transport: the same behaviour over memory, UDP/TCP and WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from dakera_actors.transport import (
    ConnectError,
    FrameTooLarge,
    StreamClosed,
    Transport,
    load_transport,
    parse_hostport,
)
from transports.memory import MemoryNetwork

KINDS = ["memory", "udp", "websocket"]
DEADLINE = 10  # seconds: generous, only reached when something is broken


@asynccontextmanager
async def open_pair(kind: str) -> AsyncIterator[tuple[Transport, Transport]]:
    cls = load_transport(kind)
    async with AsyncExitStack() as stack:
        if kind == "memory":
            net = MemoryNetwork(seed=1)
            a = await stack.enter_async_context(cls.open(bind="a:7946", network=net))
            b = await stack.enter_async_context(cls.open(bind="b:7946", network=net))
        else:
            a = await stack.enter_async_context(cls.open(bind="127.0.0.1:0"))
            b = await stack.enter_async_context(cls.open(bind="127.0.0.1:0"))
        yield a, b


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_registered_by_entry_point(kind: str) -> None:
    assert load_transport(kind).name == kind


async def test_address_is_hostport_with_real_port(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        host, port = parse_hostport(a.address)
        assert host and port > 0
        assert a.address != b.address


async def test_packet_arrives_intact_with_source(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        payload = bytes(range(256)) * 5  # 1280 bytes, under the limit
        with trio.fail_after(DEADLINE):
            # a packet may be lost; keep sending until one lands, as a real caller would
            async with trio.open_nursery() as nursery:
                async def resend() -> None:
                    while True:
                        await a.send_packet(b.address, payload)
                        await trio.sleep(0.05)
                nursery.start_soon(resend)
                src, data = await b.receive_packet()
                nursery.cancel_scope.cancel()
        assert data == payload
        assert src == a.address


async def test_oversized_packet_is_refused(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        with pytest.raises(FrameTooLarge):
            await a.send_packet(b.address, b"x" * (a.max_packet_size + 1))


async def test_packet_to_nowhere_is_silently_dropped(kind: str) -> None:
    async with open_pair(kind) as (a, _):
        target = "nowhere:1" if kind == "memory" else "127.0.0.1:9"
        await a.send_packet(target, b"hello")  # must not raise


async def test_stream_delivers_frames_in_order_both_ways(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        frames = [b"", b"x", b"y" * 70_000] + [str(i).encode() for i in range(200)]
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            async with client, server, trio.open_nursery() as nursery:
                async def send_all() -> None:
                    for f in frames:
                        await client.send(f)
                nursery.start_soon(send_all)
                got = [await server.receive() for _ in frames]
                assert got == frames
                await server.send(b"reply")
                assert await client.receive() == b"reply"


async def test_concurrent_streams_are_independent(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                async def echo_server() -> None:
                    while True:
                        s = await b.accept()
                        nursery.start_soon(echo, s)

                async def echo(s) -> None:  # type: ignore[no-untyped-def]
                    async with s:
                        async for frame in s:
                            await s.send(frame)

                nursery.start_soon(echo_server)
                results: dict[int, list[bytes]] = {}

                async def client(i: int) -> None:
                    async with await a.connect(b.address) as s:
                        out = []
                        for j in range(20):
                            await s.send(f"{i}-{j}".encode())
                            out.append(await s.receive())
                        results[i] = out

                async with trio.open_nursery() as clients:
                    for i in range(5):
                        clients.start_soon(client, i)
                nursery.cancel_scope.cancel()
        for i in range(5):
            assert results[i] == [f"{i}-{j}".encode() for j in range(20)]


async def test_closed_peer_is_reported(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            await client.send(b"ping")
            assert await server.receive() == b"ping"
            await server.aclose()
            with pytest.raises(StreamClosed):
                await client.receive()
            await client.aclose()
            await client.aclose()  # idempotent


async def test_oversized_frame_is_refused(kind: str) -> None:
    cls = load_transport(kind)
    async with AsyncExitStack() as stack:
        extra = {"network": MemoryNetwork()} if kind == "memory" else {}
        bind = "127.0.0.1:0" if kind != "memory" else "a:1"
        a = await stack.enter_async_context(cls.open(bind=bind, max_frame_size=1024, **extra))
        bind_b = "127.0.0.1:0" if kind != "memory" else "b:1"
        b = await stack.enter_async_context(cls.open(bind=bind_b, max_frame_size=1024, **extra))
        with trio.fail_after(DEADLINE):
            async with await a.connect(b.address) as s:
                with pytest.raises(FrameTooLarge):
                    await s.send(b"x" * 1025)


async def test_connect_to_nothing_fails(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        closed_address = b.address
    cls = load_transport(kind)
    net = MemoryNetwork()
    extra = {"network": net} if kind == "memory" else {}
    async with cls.open(bind="a:1" if kind == "memory" else "127.0.0.1:0", **extra) as c:
        with trio.fail_after(DEADLINE), pytest.raises(ConnectError):
            await c.connect(closed_address, timeout=2)


async def test_peer_closing_transport_breaks_its_streams(kind: str) -> None:
    cls = load_transport(kind)
    net = MemoryNetwork()
    extra = {"network": net} if kind == "memory" else {}
    bind = (lambda n: f"{n}:1") if kind == "memory" else (lambda n: "127.0.0.1:0")
    async with cls.open(bind=bind("a"), **extra) as a:
        with trio.fail_after(DEADLINE):
            async with cls.open(bind=bind("b"), **extra) as b:
                client = await a.connect(b.address)
                server = await b.accept()
                await client.send(b"hi")
                assert await server.receive() == b"hi"
            with pytest.raises(StreamClosed):
                await client.receive()


# -- properties every transport must share beyond the basics above ----------------------------

@asynccontextmanager
async def open_pair_with(kind: str, **kwargs: Any) -> AsyncIterator[tuple[Transport, Transport]]:
    """Like open_pair, with extra open() arguments for both ends."""
    cls = load_transport(kind)
    async with AsyncExitStack() as stack:
        extra: dict[str, Any] = {"network": MemoryNetwork(seed=1)} if kind == "memory" else {}
        binds = ("a:1", "b:1") if kind == "memory" else ("127.0.0.1:0", "127.0.0.1:0")
        a = await stack.enter_async_context(cls.open(bind=binds[0], **extra, **kwargs))
        b = await stack.enter_async_context(cls.open(bind=binds[1], **extra, **kwargs))
        yield a, b


async def test_unknown_option_is_rejected(kind: str) -> None:
    cls = load_transport(kind)
    with pytest.raises(TypeError):
        async with cls.open(bind="127.0.0.1:0", no_such_option=1):
            pass


async def test_packet_at_the_size_limit_arrives(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        payload = bytes(i % 251 for i in range(a.max_packet_size))
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                async def resend() -> None:
                    while True:
                        await a.send_packet(b.address, payload)
                        await trio.sleep(0.05)
                nursery.start_soon(resend)
                _, data = await b.receive_packet()
                nursery.cancel_scope.cancel()
        assert data == payload


async def test_frame_at_the_size_limit_is_delivered(kind: str) -> None:
    async with open_pair_with(kind, max_frame_size=1024) as (a, b):
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            async with client, server:
                await client.send(b"z" * 1024)
                assert await server.receive() == b"z" * 1024


async def test_concurrent_senders_do_not_interleave(kind: str) -> None:
    size, count = 100_000, 20  # frames larger than one socket write, so interleaving would show
    async with open_pair(kind) as (a, b):
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            async with client, server, trio.open_nursery() as nursery:
                async def sender(tag: int) -> None:
                    for i in range(count):
                        await client.send(bytes([tag]) + i.to_bytes(4, "big") + bytes([tag]) * size)

                nursery.start_soon(sender, 1)
                nursery.start_soon(sender, 2)
                seen: dict[int, list[int]] = {1: [], 2: []}
                for _ in range(2 * count):
                    frame = await server.receive()
                    tag = frame[0]
                    assert frame[5:] == bytes([tag]) * size
                    seen[tag].append(int.from_bytes(frame[1:5], "big"))
        assert seen == {1: list(range(count)), 2: list(range(count))}


async def test_send_and_receive_run_concurrently_on_one_stream(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            async with client, server, trio.open_nursery() as nursery:
                async def echo() -> None:
                    async for frame in server:
                        await server.send(frame)

                async def produce() -> None:
                    for i in range(300):
                        await client.send(i.to_bytes(2, "big") * 500)

                nursery.start_soon(echo)
                nursery.start_soon(produce)
                for i in range(300):
                    assert await client.receive() == i.to_bytes(2, "big") * 500
                nursery.cancel_scope.cancel()


async def test_cancelled_receive_loses_nothing(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            async with client, server:
                with trio.move_on_after(0.05):  # a receive that times out, as a caller's would
                    await server.receive()
                big = bytes(range(256)) * 4096  # 1 MiB: arrives over many reads
                async with trio.open_nursery() as nursery:
                    async def send_both() -> None:
                        await client.send(big)
                        await client.send(b"after")

                    nursery.start_soon(send_both)
                    got = None
                    with trio.move_on_after(0.001):  # likely cancelled part-way through the big frame
                        got = await server.receive()
                    if got is None:
                        got = await server.receive()
                    assert got == big
                    assert await server.receive() == b"after"


async def test_local_close_wakes_a_pending_receive(kind: str) -> None:
    async with open_pair(kind) as (a, b):
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            async with server, trio.open_nursery() as nursery:
                async def closer() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    await client.aclose()

                nursery.start_soon(closer)
                with pytest.raises(StreamClosed):
                    await client.receive()
            with pytest.raises(StreamClosed):
                await client.send(b"too late")


async def test_closing_transport_breaks_streams_it_opened(kind: str) -> None:
    cls = load_transport(kind)
    extra: dict[str, Any] = {"network": MemoryNetwork()} if kind == "memory" else {}
    bind = (lambda n: f"{n}:1") if kind == "memory" else (lambda n: "127.0.0.1:0")
    async with cls.open(bind=bind("b"), **extra) as b:
        with trio.fail_after(DEADLINE):
            async with cls.open(bind=bind("a"), **extra) as a:
                client = await a.connect(b.address)
                await client.send(b"hi")
                server = await b.accept()
                assert await server.receive() == b"hi"
            with pytest.raises(StreamClosed):
                await server.receive()
            await server.aclose()


async def test_an_inbound_frame_over_the_limit_is_counted_as_refused(kind: str) -> None:
    async with AsyncExitStack() as stack:
        cls = load_transport(kind)
        extra = {"network": MemoryNetwork()} if kind == "memory" else {}
        a = await stack.enter_async_context(cls.open(bind="127.0.0.1:0" if kind != "memory" else "a:1", **extra))
        b = await stack.enter_async_context(cls.open(bind="127.0.0.1:0" if kind != "memory" else "b:1",
                                                     inbound_frame_limit=1024, **extra))
        assert b.refusals()["frame_too_large"] == 0
        with trio.fail_after(DEADLINE):
            async with await a.connect(b.address) as s:
                inbound = await b.accept()
                await s.send(b"x" * 1024)  # at the limit: delivered
                assert await inbound.receive() == b"x" * 1024
                await s.send(b"x" * 4096)
                with pytest.raises(StreamClosed):
                    await inbound.receive()
        assert b.refusals()["frame_too_large"] == 1
        assert a.refusals()["frame_too_large"] == 0
