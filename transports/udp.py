"""The default network transport: UDP datagrams for packets, TCP for streams, on one port number.

A node bound to ``host:P`` receives packets on UDP port P and streams on TCP port P, the layout
memberlist uses, so one firewall rule per protocol opens a node. A packet is one datagram holding
exactly the caller's bytes. A stream is one TCP connection carrying frames, each a 4-byte
big-endian length followed by that many bytes.

Behaviour worth knowing:

- **Binding.** The bind host is resolved and its first address is bound (TCP first, then UDP on
  the same port number). With port 0 the kernel picks the TCP port and UDP is bound to the same
  number; on a collision both are released and a new port is tried. A wildcard IPv6 bind
  (``[::]``) is made dual-stack so IPv4 peers reach it too.
- **Advertised address.** Defaults to the bound IP and port. For a wildcard bind (``0.0.0.0`` or
  ``::``) it is the source address the kernel would use on the default route (found by
  "connecting" a throwaway UDP socket, which sends nothing); without a default route it falls back
  to loopback and logs a warning, so pass ``advertise=`` on multi-homed or NAT'd hosts. A port-less
  ``advertise`` (or port 0) takes the bound port.
- **Packet sources.** The source reported by :meth:`UdpTransport.receive_packet` is the sender's
  UDP socket address, i.e. its bound address; it equals the sender's advertised address unless
  the sender bound a wildcard or sits behind NAT.
- **Oversized frames.** A receiver that reads a length prefix above its ``max_frame_size``
  closes the connection before allocating anything and raises :class:`StreamClosed` (not
  FrameTooLarge, which means "nothing was sent" and would escape ``async for frame in stream``).
- **Cancellation.** A cancelled ``receive`` loses nothing: partial input stays buffered for the
  next call. A ``send`` cancelled after part of a frame reached the socket closes the stream,
  since the peer could no longer find the frame boundaries.
- **Buffers.** Inbound packets wait in a bounded queue (``packet_buffer``); when it is full new
  ones are dropped and counted in ``packets_dropped``, as a kernel socket buffer would. Inbound
  streams not yet taken by :meth:`UdpTransport.accept` wait in a queue of ``accept_backlog``;
  beyond it they are closed and counted in ``accepts_dropped``.

The TCP helpers (:class:`~transports.tcp.TcpConnection`, binding, accepting, advertised
addresses) live in :mod:`transports.tcp`, shared with the WebSocket transport.
"""

from __future__ import annotations

import errno
import math
import socket as stdlib_socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from dakera_actors.log import get_logger
from dakera_actors.transport import (
    DEFAULT_MAX_FRAME_SIZE,
    ConnectError,
    FrameTooLarge,
    Stream,
    StreamClosed,
    Transport,
    parse_hostport,
)
from transports.tcp import (
    RECV_CHUNK,
    TcpConnection,
    accept_forever,
    advertised_address,
    allow_dual_stack,
    bind_tcp_listener,
    check_limits,
    is_ip_literal,
    open_tcp_connection,
    resolve_bind_address,
    sockaddr_to_address,
)

log = get_logger("dakera_actors.transports.udp")

_HEADER = struct.Struct(">I")
_PACKET_BUFFER = 1024  # inbound packets queued before new ones are dropped
_ACCEPT_BACKLOG = 64  # accepted streams queued before new ones are refused
_BIND_ATTEMPTS = 16  # port-0 retries when the TCP port is already taken for UDP
_MAX_RECV_CHUNK = 1024 * 1024  # cap on one read while a large frame is arriving
_COALESCE_LIMIT = 64 * 1024  # frames up to this size go out with their header in one write
_UDP_SOCKET_BUFFER = 4 * 1024 * 1024  # requested SO_RCVBUF/SO_SNDBUF; the kernel may cap it
_RESOLVE_TIMEOUT = 1.0
_RESOLVE_TTL = 30.0  # seconds a resolved host name is reused
_RESOLVE_RETRY = 5.0  # seconds a failed lookup is remembered before it is tried again
_RESOLVE_CACHE = 4096  # cached destinations before the cache is flushed



class UdpStream(Stream):
    """A stream over one TCP connection, framed by 4-byte big-endian length prefixes.

    One task may send while another receives. Concurrent senders are serialised by a FIFO lock
    so frames never interleave; concurrent receivers are serialised the same way.
    """

    def __init__(self, transport: UdpTransport, conn: TcpConnection, peer: str) -> None:
        self.peer = peer
        self._transport = transport
        self._conn = conn
        self._max = transport.max_frame_size
        self._receive_max = self._max  # see limit_receive
        self._buffer = bytearray()  # bytes read but not yet returned as a frame
        self._send_lock = trio.StrictFIFOLock()
        self._receive_lock = trio.StrictFIFOLock()
        self._closed_locally = False
        self._broken: str | None = None  # why the connection ended, once it has
        transport._streams.add(self)

    async def send(self, frame: bytes) -> None:
        size = len(frame)
        if size > self._max:
            raise FrameTooLarge(f"frame of {size} bytes exceeds {self._max}")
        async with self._send_lock:
            self._check_sendable()
            header = _HEADER.pack(size)
            # one write for small frames (one TCP segment with NODELAY); no 2nd copy of big ones
            parts = (header + frame,) if size <= _COALESCE_LIMIT else (header, frame)
            try:
                await self._conn.send_chunks(parts)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._break(f"connection lost: {exc}")
                raise StreamClosed(self._broken) from None
            except BaseException:
                if self._conn.ended.is_set():  # cancelled part-way: the connection had to go
                    self._break("a send was interrupted part-way through a frame")
                raise

    async def receive(self) -> bytes:
        async with self._receive_lock:
            while True:
                if self._closed_locally:
                    raise StreamClosed("stream is closed")
                frame = self._take_frame()
                if frame is not None:
                    return frame
                if self._broken is not None:
                    raise StreamClosed(self._broken)
                try:
                    data = await self._conn.receive_some(self._read_size())
                except trio.ClosedResourceError:
                    self._break("stream is closed")
                    continue
                except trio.BrokenResourceError as exc:
                    self._break(f"connection lost: {exc}")
                    continue
                if not data:
                    why = "peer closed the stream" + (" mid-frame" if self._buffer else "")
                    self._break(why)
                    continue
                self._buffer += data

    async def aclose(self) -> None:
        self._close_now()
        await trio.lowlevel.checkpoint()

    def limit_receive(self, size: int | None) -> None:
        self._receive_max = self._max if size is None else min(size, self._max)

    def _close_now(self) -> None:
        """Close synchronously (the transport uses this while shutting down)."""
        self._closed_locally = True
        self._break("stream is closed")

    def _check_sendable(self) -> None:
        if self._closed_locally:
            raise StreamClosed("stream is closed")
        if self._broken is not None:
            raise StreamClosed(self._broken)

    def _break(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
        self._conn.close()
        self._transport._streams.discard(self)

    def _read_size(self) -> int:
        """Ask for the rest of the current frame in one read when it is large."""
        if len(self._buffer) < _HEADER.size:
            return RECV_CHUNK
        (size,) = _HEADER.unpack_from(self._buffer)
        missing = _HEADER.size + min(size, self._receive_max) - len(self._buffer)
        return min(max(missing, RECV_CHUNK), _MAX_RECV_CHUNK)

    def _take_frame(self) -> bytes | None:
        """Pop one complete frame off the buffer; close the stream on an oversized prefix."""
        buf = self._buffer
        if len(buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buf)
        if size > self._receive_max:
            # checked before reading any of it: a hostile prefix costs 4 bytes, not `size`
            self._transport.refused["frame_too_large"] += 1
            self._buffer.clear()
            self._break(f"peer sent a frame of {size} bytes, above the {self._receive_max}-byte limit")
            raise StreamClosed(self._broken)
        end = _HEADER.size + size
        if len(buf) < end:
            return None
        with memoryview(buf) as view, view[_HEADER.size:end] as body:
            frame = bytes(body)  # one copy, straight out of the buffer
        del buf[:end]
        return frame


class UdpTransport(Transport):
    """UDP packets and length-prefixed TCP streams on the same port number.

    Open with ``UdpTransport.open(bind="host:port", advertise=None, max_frame_size=...,
    packet_buffer=1024, accept_backlog=64)``; see the module docstring for the semantics.
    Counters: ``packets_dropped`` (inbound packets lost to a full queue or over the size limit),
    ``packets_unsent`` (outbound packets lost to an unusable address or a socket error) and
    ``accepts_dropped`` (inbound streams closed because the accept queue was full).
    """

    name = "udp"

    def __init__(self, *, udp: trio.socket.SocketType, listener: trio.socket.SocketType, address: str,
                 max_frame_size: int, packet_buffer: int, accept_backlog: int) -> None:
        self._udp = udp
        self._listener = listener
        self._address = address
        self.bound_address = sockaddr_to_address(listener.getsockname())
        self.max_frame_size = max_frame_size
        self._packets_in, self._packets = trio.open_memory_channel[tuple[str, bytes]](packet_buffer)
        self._accepts_in, self._accepts = trio.open_memory_channel[UdpStream](accept_backlog)
        self._streams: set[UdpStream] = set()
        self._destinations: dict[str, tuple[float, Any]] = {}  # address -> (expiry, sockaddr | None)
        self._closed = False
        self.packets_dropped = 0
        self.packets_unsent = 0
        self.accepts_dropped = 0
        #: inbound work turned away, by reason (see Transport.refusals)
        self.refused: Counter[str] = Counter(dict.fromkeys(
            ("accept_backlog", "frame_too_large", "packet_oversized", "packet_queue_full"), 0))

    def refusals(self) -> Mapping[str, int]:
        return self.refused.copy()

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
        **options: Any,
    ) -> AsyncIterator[UdpTransport]:
        if options:
            raise TypeError(f"unknown udp transport options: {sorted(options)}")
        check_limits(max_frame_size=max_frame_size, packet_buffer=packet_buffer,
                     accept_backlog=accept_backlog)
        host, port = parse_hostport(bind)
        family, sockaddr = await resolve_bind_address(host, port)
        listener, udp = await _bind_tcp_and_udp(family, sockaddr, accept_backlog)
        try:
            address = advertised_address(advertise, listener)
            transport = cls(udp=udp, listener=listener, address=address, max_frame_size=max_frame_size,
                            packet_buffer=packet_buffer, accept_backlog=accept_backlog)
            transport.inbound_frame_limit = inbound_frame_limit
            transport.handshake_timeout = handshake_timeout
            transport.max_pending_connections = max_pending_connections
        except BaseException:
            listener.close()
            udp.close()
            raise
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport._read_packets)
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
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        sockaddr = await self._destination(address)
        if sockaddr is None:
            self.packets_unsent += 1
            await trio.lowlevel.checkpoint()
            return
        try:
            # No deadline here: a UDP send only waits while the kernel hands earlier datagrams
            # to the device, which is brief, and a cancel scope per packet costs ~40% of a send.
            await self._udp.sendto(data, sockaddr)
        except (OSError, trio.ClosedResourceError):
            # e.g. ECONNREFUSED left by an earlier ICMP port-unreachable, EHOSTUNREACH, ENOBUFS
            self.packets_unsent += 1

    async def receive_packet(self) -> tuple[str, bytes]:
        return await self._packets.receive()

    async def _destination(self, address: str) -> Any:
        """The socket address for ``address``, or None when it cannot be used; cached."""
        now = trio.current_time()
        cached = self._destinations.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]
        sockaddr, ttl = await self._resolve(address)
        if len(self._destinations) >= _RESOLVE_CACHE:
            self._destinations.clear()  # crude but bounded; entries are cheap to rebuild
        self._destinations[address] = (now + ttl, sockaddr)
        return sockaddr

    async def _resolve(self, address: str) -> tuple[Any, float]:
        try:
            host, port = parse_hostport(address)
        except ValueError:
            return None, math.inf
        family = self._udp.family
        numeric = _numeric_sockaddr(family, host, port)
        if numeric is not None:
            return numeric, math.inf
        if is_ip_literal(host) and "%" not in host:
            return None, math.inf  # an IP of the other family: this socket cannot reach it
        flags = stdlib_socket.AI_V4MAPPED if family == stdlib_socket.AF_INET6 else 0
        with trio.move_on_after(_RESOLVE_TIMEOUT):  # a slow resolver must not stall gossip
            try:
                infos = await trio.socket.getaddrinfo(host, port, family, stdlib_socket.SOCK_DGRAM,
                                                      0, flags)
            except OSError:
                return None, _RESOLVE_RETRY
            if infos:
                return infos[0][4], _RESOLVE_TTL
        return None, _RESOLVE_RETRY

    async def _read_packets(self) -> None:
        limit = self.max_packet_size
        while True:
            try:
                # one byte of slack tells an oversized (truncated) datagram from a full-size one
                data, sockaddr = await self._udp.recvfrom(limit + 1)
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if self._closed or exc.errno == errno.EBADF:
                    return
                continue  # an ICMP error from an earlier send, reported here on some systems
            if len(data) > limit:
                self.packets_dropped += 1
                self.refused["packet_oversized"] += 1
                continue
            try:
                self._packets_in.send_nowait((sockaddr_to_address(sockaddr), data))
            except trio.WouldBlock:
                self.packets_dropped += 1
                self.refused["packet_queue_full"] += 1
            except trio.ClosedResourceError:
                return

    # -- streams -----------------------------------------------------------------------
    async def connect(self, address: str, *, timeout: float = 5.0) -> Stream:  # noqa: ASYNC109 (timeout is part of the interface)
        if self._closed:
            raise ConnectError("transport is closed")
        with trio.move_on_after(timeout):
            conn = await open_tcp_connection(address)
            if self._closed:
                conn.close()
                raise ConnectError("transport is closed")
            return UdpStream(self, conn, address)
        raise ConnectError(f"connect to {address} timed out after {timeout}s")

    async def accept(self) -> Stream:
        return await self._accepts.receive()

    def _on_accept(self, sock: trio.socket.SocketType, sockaddr: Any) -> None:
        stream = UdpStream(self, TcpConnection(sock), sockaddr_to_address(sockaddr))
        if self.inbound_frame_limit is not None:
            stream.limit_receive(self.inbound_frame_limit)
        try:
            self._accepts_in.send_nowait(stream)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.accepts_dropped += 1
            self.refused["accept_backlog"] += 1
            stream._close_now()

    # -- shutdown ----------------------------------------------------------------------
    def _shutdown(self) -> None:
        self._closed = True
        self._packets_in.close()
        self._accepts_in.close()
        self._listener.close()
        self._udp.close()
        for stream in list(self._streams):
            stream._close_now()


async def _bind_tcp_and_udp(family: int, sockaddr: Any, backlog: int
                            ) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A listening TCP socket and a UDP socket bound to the same port number."""
    want_any_port = sockaddr[1] == 0
    for _ in range(_BIND_ATTEMPTS if want_any_port else 1):
        listener = await bind_tcp_listener(family, sockaddr, backlog)
        port = listener.getsockname()[1]
        udp = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
        try:
            allow_dual_stack(udp, sockaddr)
            await udp.bind((sockaddr[0], port, *sockaddr[2:]))
        except OSError as exc:
            udp.close()
            listener.close()
            if want_any_port and exc.errno == errno.EADDRINUSE:
                continue  # the kernel's free TCP port is taken for UDP: try another one
            raise
        except BaseException:
            udp.close()
            listener.close()
            raise
        for option in (stdlib_socket.SO_RCVBUF, stdlib_socket.SO_SNDBUF):
            try:  # room for gossip bursts; the kernel silently caps this at its maximum
                udp.setsockopt(stdlib_socket.SOL_SOCKET, option, _UDP_SOCKET_BUFFER)
            except OSError:
                pass
        return listener, udp
    raise OSError(errno.EADDRINUSE, f"no port free for both TCP and UDP after {_BIND_ATTEMPTS} tries")


def _numeric_sockaddr(family: int, host: str, port: int) -> tuple[str, int] | None:
    """``(host, port)`` when ``host`` is an IP literal this socket family can send to."""
    try:
        stdlib_socket.inet_pton(family, host)
        return host, port
    except (OSError, ValueError):
        pass
    if family == stdlib_socket.AF_INET6:
        try:
            stdlib_socket.inet_pton(stdlib_socket.AF_INET, host)
            return f"::ffff:{host}", port  # a dual-stack socket reaches IPv4 via mapped addresses
        except (OSError, ValueError):
            pass
    return None

