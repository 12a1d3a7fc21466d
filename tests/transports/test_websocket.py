"""WebSocket transport specifics: HTTP routing, hostile input, packet links and buffers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from dakera_actors.transport import ConnectError, StreamClosed, parse_hostport
from transports.websocket import WebSocketTransport

DEADLINE = 10


@asynccontextmanager
async def raw_tcp(address: str) -> AsyncIterator[trio.SocketStream]:
    host, port = parse_hostport(address)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        yield stream


@asynccontextmanager
async def raw_websocket(address: str, resource: str) -> AsyncIterator[WebSocketConnection]:
    """A bare client WebSocket whose socket is always closed (open_websocket_url can leak it)."""
    async with raw_tcp(address) as tcp, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, tcp, address, resource)
        yield ws
        nursery.cancel_scope.cancel()


async def upgrade_status(address: str, path: str) -> bytes:
    """The status line the server answers a WebSocket upgrade request for ``path`` with."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
    async with raw_tcp(address) as raw:
        await raw.send_all(request.encode())
        reply = b""
        while b"\r\n" not in reply and (chunk := await raw.receive_some()):
            reply += chunk
        return reply.split(b"\r\n", 1)[0]


async def read_until_eof(stream: trio.SocketStream) -> bytes:
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


async def resend_until_received(sender: WebSocketTransport, receiver: WebSocketTransport,
                                payload: bytes) -> tuple[str, bytes]:
    async with trio.open_nursery() as nursery:
        async def resend() -> None:
            while True:
                await sender.send_packet(receiver.address, payload)
                await trio.sleep(0.05)

        nursery.start_soon(resend)
        got = await receiver.receive_packet()
        nursery.cancel_scope.cancel()
    return got


async def test_garbage_does_not_disturb_the_transport() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a, \
            WebSocketTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            for junk in (bytes(range(256)) * 16,
                         b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # plain HTTP, no upgrade
                         b"GET /stream HTTP/1.1\r\n"):  # cut off mid-request
                async with raw_tcp(b.address) as raw:
                    await raw.send_all(junk)
                    await raw.send_eof()
                    reply = await read_until_eof(raw)
                assert not reply or reply.startswith(b"HTTP/1.1 4")
            # connections that never upgraded are released at once, not after the handshake timeout
            await wait_for(lambda: not b._connections)

            async with await a.connect(b.address) as client, await b.accept() as server:
                await client.send(b"still here")
                assert await server.receive() == b"still here"
            assert await resend_until_received(a, b, b"packet") == (a.address, b"packet")


async def test_unknown_path_and_anonymous_packets_are_rejected() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            for path, status in (("/nope", b"404"), ("/packet", b"400"), ("/packet?from=bad", b"400")):
                assert (await upgrade_status(b.address, path)).startswith(b"HTTP/1.1 " + status)
            assert (await upgrade_status(b.address, "/packet?from=127.0.0.1:1")).startswith(b"HTTP/1.1 101")
            assert (await upgrade_status(b.address, "/packet?from=localhost:1")).startswith(b"HTTP/1.1 101")


async def test_a_packet_link_must_come_from_the_address_it_claims() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            # replies go to `from`: a forged one would make this node reflect traffic elsewhere
            for claimed in ("10.9.8.7:7946", "192.0.2.1:1", "no-such-host.invalid:1"):
                status = await upgrade_status(b.address, f"/packet?from={claimed}")
                assert status.startswith(b"HTTP/1.1 403"), (claimed, status)
            assert b.packet_links_refused == 3
            # a stream's forged `from` is ignored: its peer is the socket address
            async with raw_websocket(b.address, "/stream?from=10.9.8.7:7946"), await b.accept() as inbound:
                assert parse_hostport(inbound.peer)[0] == "127.0.0.1"


async def test_inbound_packet_links_are_capped() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0", max_packet_links=3, packet_links_per_host=2) as b:
        with trio.fail_after(DEADLINE):
            async with raw_websocket(b.address, "/packet?from=127.0.0.1:1"), \
                    raw_websocket(b.address, "/packet?from=127.0.0.1:2"):
                await wait_for(lambda: sum(b._packet_links_in.values()) == 2)
                # a third from the same host is over the per-host cap
                assert (await upgrade_status(b.address, "/packet?from=127.0.0.1:3")).startswith(b"HTTP/1.1 503")
            await wait_for(lambda: not b._packet_links_in)  # released when they close
            assert (await upgrade_status(b.address, "/packet?from=127.0.0.1:3")).startswith(b"HTTP/1.1 101")


async def test_an_idle_inbound_packet_link_is_closed() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0", packet_idle_timeout=0.2) as b:
        with trio.fail_after(DEADLINE):
            async with raw_websocket(b.address, "/packet?from=127.0.0.1:1") as ws:
                await ws.send_message(b"one")
                assert await b.receive_packet() == ("127.0.0.1:1", b"one")
                await wait_for(lambda: ws.closed is not None)  # the server hung up on the silent link
            assert not b._packet_links_in and not b._connections


async def test_inbound_streams_start_with_the_inbound_frame_limit() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a, \
            WebSocketTransport.open(bind="127.0.0.1:0", inbound_frame_limit=1024) as b:
        with trio.fail_after(DEADLINE):
            async with await a.connect(b.address) as client, await b.accept() as server:
                await client.send(b"x" * 2048)  # unauthenticated and over the inbound limit
                with pytest.raises(StreamClosed):
                    await server.receive()
            async with await a.connect(b.address) as client, await b.accept() as server:
                await client.send(b"small")
                assert await server.receive() == b"small"
                server.limit_receive(None)  # what the endpoint does once a frame authenticated
                await client.send(b"x" * 4096)
                assert await server.receive() == b"x" * 4096


async def test_inbound_stream_peer_is_the_from_address() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a, \
            WebSocketTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with await a.connect(b.address) as client, await b.accept() as server:
                assert client.peer == b.address
                assert server.peer == a.address
            async with raw_websocket(b.address, "/stream"), await b.accept() as anonymous:
                host, _ = parse_hostport(anonymous.peer)  # no `from`: the socket address
                assert host == "127.0.0.1"


async def test_message_over_the_limit_closes_the_stream() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a, \
            WebSocketTransport.open(bind="127.0.0.1:0", max_frame_size=1024) as b:
        with trio.fail_after(DEADLINE):
            client = await a.connect(b.address)
            server = await b.accept()
            await client.send(b"x" * 2048)  # within a's limit, over b's
            with pytest.raises(StreamClosed):
                await server.receive()
            with pytest.raises(StreamClosed):
                await client.receive()


async def test_text_message_closes_the_stream() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with raw_websocket(b.address, "/stream?from=x:1") as ws:
                server = await b.accept()
                await ws.send_message("not bytes")
                with pytest.raises(StreamClosed, match="text"):
                    await server.receive()


async def test_full_packet_buffer_drops_and_counts() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a, \
            WebSocketTransport.open(bind="127.0.0.1:0", packet_buffer=4) as b:
        with trio.fail_after(DEADLINE):
            for i in range(50):
                await a.send_packet(b.address, i.to_bytes(2, "big"))
            await wait_for(lambda: b.packets_dropped == 46)
            got = [int.from_bytes((await b.receive_packet())[1], "big") for _ in range(4)]
            assert got == [0, 1, 2, 3]  # one connection per peer keeps packets in order


async def test_packet_link_redials_after_the_peer_restarts() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a:
        with trio.fail_after(DEADLINE):
            async with WebSocketTransport.open(bind="127.0.0.1:0") as b:
                address = b.address
                assert await resend_until_received(a, b, b"one") == (a.address, b"one")
            await wait_for(lambda: address not in a._links)  # the broken link is discarded
            async with WebSocketTransport.open(bind=address) as b2:
                assert await resend_until_received(a, b2, b"two") == (a.address, b"two")


async def test_send_packet_never_waits_for_a_stuck_peer() -> None:
    with socket.socket() as stuck:  # accepts TCP (in the kernel) but never speaks HTTP
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(16)
        host, port = stuck.getsockname()
        async with WebSocketTransport.open(bind="127.0.0.1:0") as a:
            with trio.fail_after(1):
                for _ in range(300):
                    await a.send_packet(f"{host}:{port}", b"hello?")
            assert a.packets_unsent >= 300 - 256  # beyond the per-peer queue: dropped and counted


async def test_connect_to_a_non_websocket_server_fails_fast() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some()  # read the upgrade request, then close without answering
        await stream.aclose()

    async with WebSocketTransport.open(bind="127.0.0.1:0") as a, trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(2), pytest.raises(ConnectError, match="handshake"):
            await a.connect(f"127.0.0.1:{port}", timeout=5)
        nursery.cancel_scope.cancel()


async def test_unreachable_packet_peer_is_silently_dropped() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as a:
        with trio.fail_after(DEADLINE):
            await a.send_packet("127.0.0.1:9", b"hello")
            await a.send_packet("not an address", b"hello")
            await wait_for(lambda: not a._links)  # both dials failed and the links were dropped
            assert a.packets_unsent == 2


async def test_closing_with_idle_packet_links_is_clean() -> None:
    async with WebSocketTransport.open(bind="127.0.0.1:0") as b:
        with trio.fail_after(DEADLINE):
            async with WebSocketTransport.open(bind="127.0.0.1:0") as a:
                await a.send_packet(b.address, b"one")
                assert await b.receive_packet() == (a.address, b"one")
                await trio.testing.wait_all_tasks_blocked()  # the link now idles in its queue
            # leaving the block must not raise from the link task
