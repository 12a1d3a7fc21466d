"""Packets and streams over WebSocket, for networks that only let HTTP through.

One plain-HTTP server listens on the bind ``host:port`` and serves two resources:

- ``/stream?from=<advertised address>``: each :meth:`WebSocketTransport.connect` opens one
  WebSocket here, and each frame is one binary message. The ``from`` value becomes the inbound
  stream's :attr:`~dakera_actors.transport.Stream.peer` (the remote socket address when absent).
- ``/packet?from=<advertised address>``: each node keeps one cached WebSocket per peer for its
  packets, each packet one binary message; the receiver reports ``from`` as the packet source.
  ``from`` is not authenticated: it is a routing hint, the payload carries the sender's identity.
  It must name the address the connection comes from (its host resolves to the connection's
  remote IP), or the upgrade is refused (403): replies go to ``from``, so a forged one would turn
  this node into a reflector towards a third party. A ``/stream`` ``from`` that does not match
  is ignored (the remote socket address is the peer then). At most ``max_packet_links`` inbound
  packet connections are kept (``packet_links_per_host`` from one remote IP); beyond that the
  upgrade is refused (503). An inbound packet connection with no message for
  ``packet_idle_timeout`` seconds (two of the sender's idle periods) is closed.
- An inbound connection must finish its upgrade within ``handshake_timeout`` seconds; at most
  ``max_pending_connections`` are in their upgrade at once, and one more closes the oldest
  (the node sets both from ``DAKERA_GOSSIP_HANDSHAKE_TIMEOUT_SECONDS`` and
  ``DAKERA_GOSSIP_MAX_PENDING_STREAMS``). Every connection, stream and packet turned away is
  counted by reason in :meth:`WebSocketTransport.refusals`.

Packets stay best effort. :meth:`WebSocketTransport.send_packet` never waits on the network:
it queues the packet (bounded; overflow is dropped) for a per-peer task that dials the peer
(within a short timeout), writes the queue out in order and closes the connection when idle.
When dialling fails or the connection breaks, the queued packets are dropped and the link is
discarded; the next packet dials again. Outbound losses are counted in ``packets_unsent``,
inbound ones (queue full, over-size, text messages) in ``packets_dropped``.

Streams follow the UDP transport's rules: ConnectError when the peer cannot be reached within
the timeout (refused, not a WebSocket server, handshake rejected or cut short), StreamClosed once
the connection is gone, FrameTooLarge on send before anything is written. The message size limit
is ``max_frame_size``: a peer sending more gets the connection closed with status 1009 and the
receiver sees StreamClosed; nothing beyond the limit is buffered. A send cancelled mid-message
closes the connection (see :class:`transports.tcp.TcpConnection`). Closing the transport closes
every connection it holds; peers see StreamClosed.

Binding and the default advertised address work as in :mod:`transports.udp` (TCP only here).
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_client_stream,
    wrap_server_stream,
)

from dakera_actors.log import get_logger
from dakera_actors.transport import (
    DEFAULT_MAX_FRAME_SIZE,
    ConnectError,
    FrameTooLarge,
    Stream,
    StreamClosed,
    Transport,
    format_hostport,
    parse_hostport,
)
from transports.tcp import (
    TcpConnection,
    accept_forever,
    advertised_address,
    bind_tcp_listener,
    check_limits,
    is_ip_literal,
    normalize_host,
    open_tcp_connection,
    resolve_bind_address,
    sockaddr_to_address,
)

log = get_logger("dakera_actors.transports.websocket")

T = TypeVar("T")

STREAM_PATH = "/stream"
PACKET_PATH = "/packet"
_PACKET_BUFFER = 1024  # inbound packets queued before new ones are dropped
_ACCEPT_BACKLOG = 64  # accepted streams queued before new ones are refused
_LINK_QUEUE = 256  # outbound packets queued per peer while dialling or writing
_LINK_CONNECT_TIMEOUT = 2.0  # a packet link that cannot dial this fast is given up
_LINK_IDLE_TIMEOUT = 60.0  # an unused packet link is closed after this long
_CLOSE_TIMEOUT = 1.0  # how long a close waits for the peer's closing handshake
_RECEIVE_BUFFER = 64 * 1024  # bytes per socket read (trio-websocket's default is 4 KiB)
_MESSAGE_QUEUE = 1  # messages trio-websocket buffers per connection before TCP backpressure
_RESOLVE_TIMEOUT = 1.0  # a 'from' host name that does not resolve this fast is refused
_MAX_PACKET_LINKS = 256  # inbound /packet connections kept at once
_PACKET_LINKS_PER_HOST = 16  # ... of which from one remote IP
_PACKET_IDLE_TIMEOUT = 2 * _LINK_IDLE_TIMEOUT  # an inbound packet link silent this long is closed


class WebSocketStream(Stream):
    """A stream over one WebSocket connection: each frame is one binary message.

    trio-websocket serialises concurrent senders with its own FIFO lock, so frames never
    interleave; one task may send while another receives.
    """

    def __init__(self, transport: WebSocketTransport, ws: WebSocketConnection, tcp: TcpConnection,
                 peer: str, *, inbound: bool = False) -> None:
        self.peer = peer
        self._transport = transport
        self._inbound = inbound
        self._ws = ws
        self._tcp = tcp
        self._max = transport.max_frame_size
        self._closed = False

    def limit_receive(self, size: int | None) -> None:
        # trio-websocket checks its limit as message fragments arrive, before joining them, and
        # closes with 1009 beyond it; it has no public setter, so the attribute is set here
        limit = self._max if size is None else min(size, self._max)
        self._ws._max_message_size = limit

    async def send(self, frame: bytes) -> None:
        if len(frame) > self._max:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds {self._max}")
        if self._closed:
            raise StreamClosed("stream is closed")
        try:
            await self._ws.send_message(bytes(frame))  # bytes() of bytes is free; the library wants bytes
        except ConnectionClosed as exc:
            raise StreamClosed(_close_reason(exc)) from None

    async def receive(self) -> bytes:
        if self._closed:
            raise StreamClosed("stream is closed")
        try:
            message = await self._ws.get_message()
        except ConnectionClosed as exc:
            if self._inbound and _too_big(exc):
                self._transport.refused["frame_too_large"] += 1
            raise StreamClosed(_close_reason(exc)) from None
        if isinstance(message, str):
            self._transport.refused["text_message"] += 1
            await self.aclose()
            raise StreamClosed("peer sent a text message on a binary stream")
        return message

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with trio.move_on_after(_CLOSE_TIMEOUT):  # a peer that never answers the close
                await self._ws.aclose()
        except Exception:  # closing never raises; the socket goes below anyway
            pass
        finally:
            self._tcp.close()


class _PacketLink:
    """The queue of packets waiting for (or being written to) one peer's cached WebSocket."""

    def __init__(self) -> None:
        self.queue_in, self.queue = trio.open_memory_channel[bytes](_LINK_QUEUE)


class WebSocketTransport(Transport):
    """Packets and streams as binary WebSocket messages over plain HTTP on one TCP port.

    Open with ``WebSocketTransport.open(bind="host:port", advertise=None, max_frame_size=...,
    packet_buffer=1024, accept_backlog=64)``; see the module docstring for the semantics.
    Counters: ``packets_dropped``, ``packets_unsent`` and ``accepts_dropped`` as on the UDP
    transport.
    """

    name = "websocket"

    def __init__(self, *, listener: trio.socket.SocketType, address: str, max_frame_size: int,
                 packet_buffer: int, accept_backlog: int, nursery: trio.Nursery,
                 max_packet_links: int = _MAX_PACKET_LINKS, packet_links_per_host: int = _PACKET_LINKS_PER_HOST,
                 packet_idle_timeout: float = _PACKET_IDLE_TIMEOUT) -> None:
        self._listener = listener
        self._address = address
        self.bound_address = sockaddr_to_address(listener.getsockname())
        self.max_frame_size = max_frame_size
        self._nursery = nursery
        self._packets_in, self._packets = trio.open_memory_channel[tuple[str, bytes]](packet_buffer)
        self._accepts_in, self._accepts = trio.open_memory_channel[WebSocketStream](accept_backlog)
        self._connections: set[TcpConnection] = set()  # every live TCP connection, both directions
        self._links: dict[str, _PacketLink] = {}
        self._from_query = urllib.parse.urlencode({"from": address})
        self._closed = False
        self.packets_dropped = 0
        self.packets_unsent = 0
        self.accepts_dropped = 0
        self.max_packet_links = max_packet_links
        self.packet_links_per_host = packet_links_per_host
        self.packet_idle_timeout = packet_idle_timeout
        self._packet_links_in: dict[str, int] = {}  # remote IP -> inbound packet connections
        self.packet_links_refused = 0  # inbound packet connections refused (cap or forged from)
        self._handshaking: dict[TcpConnection, None] = {}  # inbound connections not upgraded yet, oldest first
        #: inbound work turned away, by reason (see Transport.refusals)
        self.refused: Counter[str] = Counter(dict.fromkeys(
            ("accept_backlog", "frame_too_large", "handshake_evicted", "handshake_failed", "handshake_timeout",
             "packet_link_from", "packet_link_limit", "packet_oversized", "packet_queue_full", "text_message"), 0))

    def refusals(self) -> Mapping[str, int]:
        return self.refused.copy()

    @property
    def handshaking(self) -> int:
        """Inbound connections that have not finished their WebSocket upgrade yet."""
        return len(self._handshaking)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        *,
        bind: str,
        advertise: str | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        packet_buffer: int = _PACKET_BUFFER,
        accept_backlog: int = _ACCEPT_BACKLOG,
        inbound_frame_limit: int | None = None,
        handshake_timeout: float = 5.0,
        max_pending_connections: int = 64,
        max_packet_links: int = _MAX_PACKET_LINKS,
        packet_links_per_host: int = _PACKET_LINKS_PER_HOST,
        packet_idle_timeout: float = _PACKET_IDLE_TIMEOUT,
        **options: Any,
    ) -> AsyncIterator[WebSocketTransport]:
        if options:
            raise TypeError(f"unknown websocket transport options: {sorted(options)}")
        check_limits(max_frame_size=max_frame_size, packet_buffer=packet_buffer,
                     accept_backlog=accept_backlog)
        host, port = parse_hostport(bind)
        family, sockaddr = await resolve_bind_address(host, port)
        listener = await bind_tcp_listener(family, sockaddr, accept_backlog)
        try:
            address = advertised_address(advertise, listener)
        except BaseException:
            listener.close()
            raise
        async with trio.open_nursery() as nursery:
            transport = cls(listener=listener, address=address, max_frame_size=max_frame_size,
                            packet_buffer=packet_buffer, accept_backlog=accept_backlog, nursery=nursery,
                            max_packet_links=max_packet_links, packet_links_per_host=packet_links_per_host,
                            packet_idle_timeout=packet_idle_timeout)
            transport.inbound_frame_limit = inbound_frame_limit
            transport.handshake_timeout = handshake_timeout
            transport.max_pending_connections = max_pending_connections
            nursery.start_soon(accept_forever, listener, transport._on_accept)
            try:
                yield transport
            finally:
                transport._shutdown()
                nursery.cancel_scope.cancel()

    @property
    def address(self) -> str:
        return self._address

    # -- packets -----------------------------------------------------------------------
    async def send_packet(self, address: str, data: bytes) -> None:
        self.check_packet_size(data)
        await trio.lowlevel.checkpoint()
        if self._closed:
            return
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _PacketLink()
            self._nursery.start_soon(self._run_link, address, link)
        try:
            link.queue_in.send_nowait(bytes(data))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.packets_unsent += 1

    async def receive_packet(self) -> tuple[str, bytes]:
        return await self._packets.receive()

    async def _run_link(self, address: str, link: _PacketLink) -> None:
        """Dial ``address`` and write its queued packets until the link breaks or idles out."""
        ws: WebSocketConnection | None = None
        tcp: TcpConnection | None = None
        try:
            with trio.move_on_after(_LINK_CONNECT_TIMEOUT):
                ws, tcp = await self._dial(address, PACKET_PATH, self.max_packet_size)
            if ws is None or tcp is None:
                return
            async with trio.open_nursery() as nursery:
                # a peer that hangs up ends the link at once, not on the next packet's send
                nursery.start_soon(_cancel_when_set, tcp.ended, nursery.cancel_scope)
                while True:
                    data = None
                    with trio.move_on_after(_LINK_IDLE_TIMEOUT):
                        try:
                            data = await link.queue.receive()
                        except trio.EndOfChannel:
                            break  # the transport is shutting down
                    if data is None:
                        break  # idle: free the connection; the next packet dials afresh
                    try:
                        await ws.send_message(data)
                    except ConnectionClosed:
                        self.packets_unsent += 1
                        break
                nursery.cancel_scope.cancel()
        except ConnectError as exc:
            log.debug("packet_link_failed", peer=address, error=str(exc))
        finally:
            if self._links.get(address) is link:
                del self._links[address]
            link.queue_in.close()
            self.packets_unsent += _drain(link.queue)
            if ws is not None and tcp is not None:
                try:
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await ws.aclose()
                except Exception:  # closing is best effort; the socket goes below anyway
                    pass
                finally:
                    tcp.close()

    async def _receive_packets(self, ws: WebSocketConnection, source: str) -> None:
        while True:
            message: str | bytes | None = None
            try:
                with trio.move_on_after(self.packet_idle_timeout):
                    message = await ws.get_message()
            except ConnectionClosed as exc:
                if _too_big(exc):
                    self.refused["packet_oversized"] += 1
                return
            if message is None:
                log.debug("packet_link_idle", peer=source)
                return  # the caller closes the connection
            if isinstance(message, str) or len(message) > self.max_packet_size:
                self.packets_dropped += 1
                self.refused["text_message" if isinstance(message, str) else "packet_oversized"] += 1
                continue
            try:
                self._packets_in.send_nowait((source, message))
            except trio.WouldBlock:
                self.packets_dropped += 1
                self.refused["packet_queue_full"] += 1
            except trio.ClosedResourceError:
                return

    # -- streams -----------------------------------------------------------------------
    async def connect(self, address: str, *, timeout: float = 5.0) -> Stream:  # noqa: ASYNC109 (timeout is part of the interface)
        if self._closed:
            raise ConnectError("transport is closed")
        with trio.move_on_after(timeout):  # covers dialling and the handshake
            ws, tcp = await self._dial(address, STREAM_PATH, self.max_frame_size)
            stream = WebSocketStream(self, ws, tcp, address)
            if self._closed:
                await stream.aclose()
                raise ConnectError("transport is closed")
            return stream
        raise ConnectError(f"connect to {address} timed out after {timeout}s")

    async def accept(self) -> Stream:
        return await self._accepts.receive()

    # -- client side -------------------------------------------------------------------
    async def _dial(self, address: str, path: str, max_message_size: int
                    ) -> tuple[WebSocketConnection, TcpConnection]:
        """Open a client WebSocket whose reader task lives in the transport's nursery.

        Until the handshake completes the work runs in the caller's cancel scope, so the
        caller bounds it with a deadline.
        """
        if self._closed:
            raise ConnectError("transport is closed")
        result: tuple[WebSocketConnection, TcpConnection] = await self._nursery.start(
            self._run_client, address, f"{path}?{self._from_query}", max_message_size)
        return result

    async def _run_client(self, address: str, resource: str, max_message_size: int,
                          *, task_status: trio.TaskStatus[tuple[WebSocketConnection, TcpConnection]]
                          ) -> None:
        """Connect, hand the open connection to the caller, then run until it ends.

        Errors before the hand-over become ConnectError for the caller; later ones are the
        connection's business (its users see StreamClosed) and never reach the transport.
        """
        tcp = await open_tcp_connection(address)
        if self._closed:  # shut down while dialling: nothing would close this connection
            tcp.close()
            raise ConnectError("transport is closed")
        self._connections.add(tcp)
        host, port = parse_hostport(address)
        failure: BaseException | None = None
        started = False
        try:
            async with trio.open_nursery() as nursery:
                ws = await _unless_ended(tcp, wrap_client_stream(
                    nursery, tcp, format_hostport(host, port), resource,  # type: ignore[arg-type]
                    message_queue_size=_MESSAGE_QUEUE, max_message_size=max_message_size,
                    receive_buffer_size=_RECEIVE_BUFFER))
                if ws is None:
                    nursery.cancel_scope.cancel()
                else:
                    task_status.started((ws, tcp))
                    started = True
        except Exception as exc:  # e.g. ConnectionRejected from the reader task
            failure = exc
        finally:
            self._connections.discard(tcp)
            tcp.close()
        if not started:
            detail = _describe(failure) if failure else "connection closed during the handshake"
            raise ConnectError(f"WebSocket handshake with {address} failed: {detail}")
        if failure is not None:
            log.debug("websocket_client_error", peer=address, error=_describe(failure))

    # -- server side -------------------------------------------------------------------
    def _on_accept(self, sock: trio.socket.SocketType, sockaddr: Any) -> None:
        self._nursery.start_soon(self._serve_connection, TcpConnection(sock), sockaddr_to_address(sockaddr))

    async def _serve_connection(self, tcp: TcpConnection, remote: str) -> None:
        """Run one inbound connection: upgrade it, route it by path, keep it until it ends.

        At most ``max_pending_connections`` connections are in their upgrade at once: a new one
        beyond closes the oldest (a silent or one-byte-at-a-time client cannot lock honest peers
        out, whose upgrade request follows their connect at once); each has ``handshake_timeout``."""
        self._connections.add(tcp)
        if len(self._handshaking) >= self.max_pending_connections:
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]
            self.refused["handshake_evicted"] += 1
            oldest.close()  # its task sees the connection end and lets it go
        self._handshaking[tcp] = None
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(self.handshake_timeout) as deadline:
                    # an unauthenticated stream's messages are limited from its first byte on
                    first_limit = self.inbound_frame_limit or self.max_frame_size
                    request = await _unless_ended(tcp, wrap_server_stream(
                        nursery, tcp, message_queue_size=_MESSAGE_QUEUE,
                        max_message_size=max(min(first_limit, self.max_frame_size), self.max_packet_size),
                        receive_buffer_size=_RECEIVE_BUFFER))
                if tcp in self._handshaking:  # (not evicted: that was counted already)
                    del self._handshaking[tcp]
                    if request is None:
                        self.refused["handshake_timeout" if deadline.cancelled_caught else "handshake_failed"] += 1
                if request is None or not await self._route(request, tcp, remote):
                    nursery.cancel_scope.cancel()
        except Exception as exc:  # a misbehaving client must not stop the server
            log.debug("websocket_server_error", peer=remote, error=_describe(exc))
        finally:
            self._handshaking.pop(tcp, None)
            self._connections.discard(tcp)
            tcp.close()

    async def _route(self, request: WebSocketRequest, tcp: TcpConnection, remote: str) -> bool:
        """Serve ``request``; True when the connection should stay open until its reader ends."""
        target = urllib.parse.urlsplit(request.path)
        source = _source_address(target.query)
        remote_ip = normalize_host(parse_hostport(remote)[0])
        if source is not None and not await _resolves_to(parse_hostport(source)[0], remote_ip):
            if target.path == PACKET_PATH:
                self.packet_links_refused += 1
                self.refused["packet_link_from"] += 1
                if self.refused["packet_link_from"] in (1, 1000) or self.refused["packet_link_from"] % 10_000 == 0:
                    log.warning("packet_link_refused", reason="from_mismatch", peer=remote, claimed=source,
                                count=self.refused["packet_link_from"])
                await request.reject(403, body=b"'from' does not name the address this connection comes from")
                return False
            source = None  # a stream's peer is only a label: use the socket's address
        if target.path == STREAM_PATH:
            ws = await request.accept()
            stream = WebSocketStream(self, ws, tcp, source or remote, inbound=True)
            try:
                self._accepts_in.send_nowait(stream)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.accepts_dropped += 1
                self.refused["accept_backlog"] += 1
                await stream.aclose()
                return False
            return True
        if target.path == PACKET_PATH:
            if source is None:
                await request.reject(400, body=b"missing or malformed 'from' address")
                return False
            links = self._packet_links_in
            if sum(links.values()) >= self.max_packet_links or links.get(remote_ip, 0) >= self.packet_links_per_host:
                self.packet_links_refused += 1
                self.refused["packet_link_limit"] += 1
                if self.refused["packet_link_limit"] in (1, 1000) or self.refused["packet_link_limit"] % 10_000 == 0:
                    log.warning("packet_link_refused", reason="too_many_links", peer=remote,
                                count=self.refused["packet_link_limit"])
                await request.reject(503, body=b"too many packet connections")
                return False
            links[remote_ip] = links.get(remote_ip, 0) + 1
            try:
                await self._receive_packets(await request.accept(), source)
            finally:
                links[remote_ip] -= 1
                if not links[remote_ip]:
                    del links[remote_ip]
            return False
        await request.reject(404)
        return False

    # -- shutdown ----------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._closed = True
        self._packets_in.close()
        self._accepts_in.close()
        self._listener.close()
        for link in self._links.values():
            link.queue_in.close()
        for tcp in list(self._connections):
            tcp.close()  # peers see the connection drop; readers here end with it


async def _unless_ended(tcp: TcpConnection, handshake: Awaitable[T]) -> T | None:
    """Await ``handshake``, or None as soon as the connection ends first.

    trio-websocket waits forever for a handshake whose TCP connection was closed (a peer that
    is not a WebSocket server, a garbage request it answered with 400); this fails it fast.
    """
    result: T | None = None
    async with trio.open_nursery() as nursery:
        async def run() -> None:
            nonlocal result
            result = await handshake
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        nursery.start_soon(_cancel_when_set, tcp.ended, nursery.cancel_scope)
    return result


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _source_address(query: str) -> str | None:
    """The ``from`` parameter as a normalised ``host:port``, or None if absent or malformed."""
    values = urllib.parse.parse_qs(query).get("from")
    if not values:
        return None
    try:
        host, port = parse_hostport(values[0])
    except ValueError:
        return None
    return format_hostport(host, port) if port else None


async def _resolves_to(host: str, remote_ip: str) -> bool:
    """True when ``host`` is ``remote_ip`` (a normalized IP) or a name that resolves to it."""
    if normalize_host(host) == remote_ip:
        return True
    if is_ip_literal(host):
        return False  # a literal that differs
    with trio.move_on_after(_RESOLVE_TIMEOUT):
        try:
            infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
        except OSError:
            return False
        return any(normalize_host(str(info[4][0])) == remote_ip for info in infos)
    return False


def _drain(channel: trio.MemoryReceiveChannel[bytes]) -> int:
    count = 0
    while True:
        try:
            channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return count
        count += 1


def _too_big(exc: ConnectionClosed) -> bool:
    """The connection was closed with 1009: a message over the size limit."""
    return exc.reason is not None and exc.reason.code == 1009


def _close_reason(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "websocket closed"
    return f"websocket closed: {reason.code} {reason.name}" + (f" ({reason.reason})" if reason.reason else "")


def _describe(exc: BaseException) -> str:
    """The one interesting exception inside trio's nursery exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return repr(exc)

