"""UDP/TCP transport specifics: framing on the wire, hostile input, buffers and addresses."""

from __future__ import annotations

import errno
import socket
import struct
import sys
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from dakera_actors.transport import ConnectError, StreamClosed, parse_hostport
from transports.udp import UdpTransport

DEADLINE = 10


@asynccontextmanager
async def raw_tcp(address: str) -> AsyncIterator[trio.SocketStream]:
    host, port = parse_hostport(address)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        yield stream


async def read_until_eof(stream: trio.SocketStream) -> bytes:
    """Everything the peer sends before it closes (a reset counts as closed)."""
    data = b""
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until true (counters have no event to wait on); callers set a deadline."""
    while True:
        if condition():
            return
        await trio.sleep(0.01)


async def test_oversized_length_prefix_closes_without_allocating() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with raw_tcp(b.address) as raw:
                server = await b.accept()
                await raw.send_all(struct.pack(">I", 0xFFFF_FFFF) + b"tiny")
                tracemalloc.start()
                try:
                    with pytest.raises(StreamClosed, match="above the"):
                        await server.receive()
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert peak < 1024 * 1024  # a 4 GiB prefix cost no more than one read buffer
                assert await read_until_eof(raw) == b""  # and the connection was closed
                with pytest.raises(StreamClosed):
                    await server.receive()


async def test_inbound_streams_start_small_until_the_limit_is_lifted() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0", inbound_frame_limit=1024) as b:
        with trio.fail_after(DEADLINE):
            async with raw_tcp(b.address) as raw:  # an unauthenticated peer announcing 1 MiB
                server = await b.accept()
                await raw.send_all(struct.pack(">I", 1024 * 1024) + b"x" * 2000)
                with pytest.raises(StreamClosed, match="above the 1024-byte limit"):
                    await server.receive()
                assert await read_until_eof(raw) == b""
            async with raw_tcp(b.address) as raw:
                server = await b.accept()
                await raw.send_all(struct.pack(">I", 5) + b"hello")
                assert await server.receive() == b"hello"
                server.limit_receive(None)  # what the endpoint does once a frame authenticated
                await raw.send_all(struct.pack(">I", 100_000) + b"y" * 100_000)
                assert await server.receive() == b"y" * 100_000
            async with UdpTransport.open(bind="127.0.0.1:0") as a, await a.connect(b.address) as out:
                server = await b.accept()
                await server.send(b"z" * 100_000)  # outbound directions are not limited
                assert await out.receive() == b"z" * 100_000


async def test_frame_split_across_writes_survives_a_cancelled_receive() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with raw_tcp(b.address) as raw:
                server = await b.accept()
                body = bytes(range(256)) * 100
                await raw.send_all(struct.pack(">I", len(body)) + body[:1000])
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(server.receive)
                        await trio.testing.wait_all_tasks_blocked()  # the partial frame is buffered
                        scope.cancel()
                await raw.send_all(body[1000:] + struct.pack(">I", 2) + b"ok")
                assert await server.receive() == body
                assert await server.receive() == b"ok"


async def test_peer_closing_mid_frame_is_stream_closed() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with raw_tcp(b.address) as raw:
                server = await b.accept()
                await raw.send_all(struct.pack(">I", 10) + b"abc")
            with pytest.raises(StreamClosed, match="mid-frame"):
                await server.receive()


async def test_garbage_does_not_disturb_the_transport() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as a, UdpTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00", bytes(range(256)) * 64):
                async with raw_tcp(b.address) as raw:
                    await raw.send_all(junk)
                inbound = await b.accept()
                async with inbound:
                    with pytest.raises(StreamClosed):
                        while True:
                            await inbound.receive()
            host, port = parse_hostport(b.address)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"x" * 5000, (host, port))  # over the packet limit: dropped, counted
            await wait_for(lambda: b.packets_dropped == 1)

            # still fully working
            async with await a.connect(b.address) as client, await b.accept() as server:
                await client.send(b"still here")
                assert await server.receive() == b"still here"
            await a.send_packet(b.address, b"packet")
            assert await b.receive_packet() == (a.address, b"packet")


async def test_full_packet_buffer_drops_and_counts() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as a, \
            UdpTransport.open(bind="127.0.0.1:0", packet_buffer=4) as b:
        with trio.fail_after(DEADLINE):
            for i in range(50):
                await a.send_packet(b.address, i.to_bytes(2, "big"))
            await wait_for(lambda: b.packets_dropped == 46)  # loopback UDP loses nothing itself
            got = [int.from_bytes((await b.receive_packet())[1], "big") for _ in range(4)]
            assert got == [0, 1, 2, 3]


async def test_accepts_beyond_the_backlog_are_closed() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as a, \
            UdpTransport.open(bind="127.0.0.1:0", accept_backlog=2) as b:
        with trio.fail_after(DEADLINE):
            clients = [await a.connect(b.address) for _ in range(5)]
            await wait_for(lambda: b.accepts_dropped == 3)
            for client in clients[2:]:
                with pytest.raises(StreamClosed):
                    await client.receive()
            for _ in range(2):
                server = await b.accept()
                await server.send(b"welcome")
            for client in clients[:2]:
                assert await client.receive() == b"welcome"


async def test_cancelled_send_mid_frame_closes_the_stream() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as a, UdpTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    # bigger than loopback socket buffers, so the write stalls part-way
                    nursery.start_soon(client.send, b"x" * (30 * 1024 * 1024))
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            with pytest.raises(StreamClosed):
                await client.send(b"next")
            with pytest.raises(StreamClosed):  # the peer never sees a torn frame as data
                while True:
                    await server.receive()


async def test_port_zero_holds_the_port_for_tcp_and_udp() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as t:
        host, port = parse_hostport(t.address)
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe, pytest.raises(OSError) as info:
                probe.bind((host, port))
            assert info.value.errno == errno.EADDRINUSE


async def test_fixed_port_conflict_raises() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as t:
        with pytest.raises(OSError):
            async with UdpTransport.open(bind=t.address):
                pass


async def test_advertise_is_derived_or_taken_as_given() -> None:
    async with UdpTransport.open(bind="0.0.0.0:0") as wild:
        host, port = parse_hostport(wild.address)
        assert host != "0.0.0.0" and port == parse_hostport(wild.bound_address)[1]
    async with UdpTransport.open(bind="127.0.0.1:0", advertise="node-7.example") as named:
        assert named.address == f"node-7.example:{parse_hostport(named.bound_address)[1]}"
    async with UdpTransport.open(bind="127.0.0.1:0", advertise="10.0.0.9:7946") as fixed:
        assert fixed.address == "10.0.0.9:7946"


async def test_packets_to_unusable_addresses_are_counted_not_raised() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as a:
        for target in ("not an address", "[::1]:7946", "127.0.0.1:9"):
            await a.send_packet(target, b"hello")
        assert a.packets_unsent == 2  # the third is sent; the kernel may bounce it later, silently


async def test_host_names_are_resolved_for_packets() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as a, UdpTransport.open(bind="127.0.0.1:0") as b:
        _, port = parse_hostport(b.address)
        with trio.fail_after(DEADLINE):
            await a.send_packet(f"localhost:{port}", b"by name")
            assert await b.receive_packet() == (a.address, b"by name")


async def test_inbound_peer_is_the_remote_socket_address() -> None:
    async with UdpTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with raw_tcp(b.address) as raw:
                server = await b.accept()
                host, port = raw.socket.getsockname()[:2]
                assert server.peer == f"{host}:{port}"
                await server.aclose()


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full backlog")
async def test_connect_timeout_is_connect_error() -> None:
    # Linux drops SYNs to a listener whose accept queue is full, so this connect hangs
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(full.getsockname())
            async with UdpTransport.open(bind="127.0.0.1:0") as a:
                host, port = full.getsockname()
                with trio.fail_after(DEADLINE), pytest.raises(ConnectError, match="timed out"):
                    await a.connect(f"{host}:{port}", timeout=0.3)
        finally:
            for filler in fillers:
                filler.close()


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="no IPv6 loopback")
async def test_ipv6_literals() -> None:
    async with UdpTransport.open(bind="[::1]:0") as a, UdpTransport.open(bind="[::1]:0") as b:
        assert a.address.startswith("[::1]:")
        with trio.fail_after(DEADLINE):
            await a.send_packet(b.address, b"v6")
            assert await b.receive_packet() == (a.address, b"v6")
            async with await a.connect(b.address) as client, await b.accept() as server:
                assert server.peer.startswith("[::1]:")
                await client.send(b"v6 stream")
                assert await server.receive() == b"v6 stream"
