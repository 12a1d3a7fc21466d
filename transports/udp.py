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

The TCP helpers at the bottom (:class:`TcpConnection`, :func:`bind_tcp_listener`, ...) are shared
with the WebSocket transport.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket as stdlib_socket
import struct
import sys
from collections.abc import AsyncIterator, Callable, Sequence
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
    format_hostport,
    parse_hostport,
)

log = get_logger("dakera_actors.transports.udp")

_HEADER = struct.Struct(">I")
_PACKET_BUFFER = 1024  # inbound packets queued before new ones are dropped
_ACCEPT_BACKLOG = 64  # accepted streams queued before new ones are refused
_BIND_ATTEMPTS = 16  # port-0 retries when the TCP port is already taken for UDP
_RECV_CHUNK = 64 * 1024
_MAX_RECV_CHUNK = 1024 * 1024  # cap on one read while a large frame is arriving
_COALESCE_LIMIT = 64 * 1024  # frames up to this size go out with their header in one write
_UDP_SOCKET_BUFFER = 4 * 1024 * 1024  # requested SO_RCVBUF/SO_SNDBUF; the kernel may cap it
_RESOLVE_TIMEOUT = 1.0
_RESOLVE_TTL = 30.0  # seconds a resolved host name is reused
_RESOLVE_RETRY = 5.0  # seconds a failed lookup is remembered before it is tried again
_RESOLVE_CACHE = 4096  # cached destinations before the cache is flushed
_ACCEPT_ERROR_PAUSE = 0.1  # back-off after e.g. EMFILE so an accept loop cannot spin

# accept() errors that concern one aborted connection, not the listener (same list as trio's).
_IGNORABLE_ACCEPT_ERRNOS = {
    getattr(errno, name)
    for name in ("EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
                 "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH")
    if hasattr(errno, name)
}

# Destinations that select the default route when "connected" to; nothing is ever sent to them.
_ROUTE_PROBES: dict[int, str] = {
    stdlib_socket.AF_INET: "192.0.2.1",  # TEST-NET-1 (RFC 5737)
    stdlib_socket.AF_INET6: "2001:db8::1",  # documentation prefix (RFC 3849)
}


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
            return _RECV_CHUNK
        (size,) = _HEADER.unpack_from(self._buffer)
        missing = _HEADER.size + min(size, self._receive_max) - len(self._buffer)
        return min(max(missing, _RECV_CHUNK), _MAX_RECV_CHUNK)

    def _take_frame(self) -> bytes | None:
        """Pop one complete frame off the buffer; close the stream on an oversized prefix."""
        buf = self._buffer
        if len(buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(buf)
        if size > self._receive_max:
            # checked before reading any of it: a hostile prefix costs 4 bytes, not `size`
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
        if _is_ip_literal(host) and "%" not in host:
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
                continue
            try:
                self._packets_in.send_nowait((sockaddr_to_address(sockaddr), data))
            except trio.WouldBlock:
                self.packets_dropped += 1
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
            _allow_dual_stack(udp, sockaddr)
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


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- TCP/IP helpers, shared with the WebSocket transport -----------------------------------

class TcpConnection(trio.abc.Stream):
    """A TCP socket as a :class:`trio.abc.Stream` that a transport can close synchronously.

    Differences from :class:`trio.SocketStream`: :meth:`close` is synchronous (a transport shuts
    many connections down in a ``finally``); :attr:`ended` is set once the connection has
    reached end-of-file, failed or been closed; and a write interrupted after part of its data
    reached the socket closes the connection, since the peer's framing would be lost (this
    applies to the whole of one :meth:`send_chunks` call).
    """

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.socket = sock
        self.ended = trio.Event()
        try:  # frames are latency-sensitive and written whole: never wait for Nagle
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        except OSError:
            pass

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_chunks((data,))

    async def send_chunks(self, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write every chunk, in order, as one unit for the purpose of cancellation."""
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("connection is closed")
        written = 0
        try:
            for chunk in chunks:
                with memoryview(chunk) as view:
                    pos = 0
                    while pos < len(view):
                        with view[pos:] as rest:
                            sent = await self.socket.send(rest)
                        pos += sent
                        written += sent
            if not written:
                await trio.lowlevel.checkpoint()
        except OSError as exc:
            self.close()
            raise trio.BrokenResourceError(str(exc)) from exc
        except BaseException:
            if written:  # cancelled mid-write: the byte stream is no longer parseable
                self.close()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.socket.wait_writable()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("connection is closed")
        try:
            data = await self.socket.recv(max_bytes or _RECV_CHUNK)
        except OSError as exc:
            self.close()
            raise trio.BrokenResourceError(str(exc)) from exc
        except trio.ClosedResourceError:
            self.ended.set()
            raise
        if not data:
            self.ended.set()
        return data

    def close(self) -> None:
        self.ended.set()
        self.socket.close()  # wakes any task waiting on the socket with ClosedResourceError

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    @property
    def peer_address(self) -> str | None:
        try:
            return sockaddr_to_address(self.socket.getpeername())
        except OSError:
            return None


async def open_tcp_connection(address: str) -> TcpConnection:
    """Connect to ``host:port``; ConnectError on a bad address or a refusal (caller bounds time)."""
    try:
        host, port = parse_hostport(address)
    except ValueError as exc:
        raise ConnectError(str(exc)) from None
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ConnectError(f"cannot connect to {address}: {exc}") from None
    return TcpConnection(stream.socket)


async def accept_forever(listener: trio.socket.SocketType,
                         on_accept: Callable[[trio.socket.SocketType, Any], None]) -> None:
    """Accept connections until the listener is closed; ``on_accept`` must not block."""
    while True:
        try:
            sock, sockaddr = await listener.accept()
        except trio.ClosedResourceError:
            return
        except OSError as exc:
            if listener.fileno() == -1 or exc.errno == errno.EBADF:
                return
            if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                continue
            log.warning("accept_failed", error=str(exc))
            await trio.sleep(_ACCEPT_ERROR_PAUSE)  # e.g. out of file descriptors
            continue
        on_accept(sock, sockaddr)


async def resolve_bind_address(host: str, port: int) -> tuple[int, Any]:
    """``(family, sockaddr)`` to bind for ``host``: its first address, as getaddrinfo orders them."""
    infos = await trio.socket.getaddrinfo(host, port, type=stdlib_socket.SOCK_STREAM,
                                          flags=stdlib_socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve bind host {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


async def bind_tcp_listener(family: int, sockaddr: Any, backlog: int) -> trio.socket.SocketType:
    """A listening TCP socket bound to ``sockaddr``."""
    sock = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":  # rebind at once after a restart (TIME_WAIT); unsafe on Windows
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        _allow_dual_stack(sock, sockaddr)
        await sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _allow_dual_stack(sock: trio.socket.SocketType, sockaddr: Any) -> None:
    """A wildcard IPv6 bind also serves IPv4 (the Linux default, not everyone's)."""
    if sock.family == stdlib_socket.AF_INET6 and _is_unspecified(sockaddr[0]):
        try:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 0)
        except OSError:
            pass


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def normalize_host(host: str) -> str:
    """``::ffff:1.2.3.4`` (how a dual-stack socket sees IPv4 peers) becomes ``1.2.3.4``."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def sockaddr_to_address(sockaddr: Any) -> str:
    """A socket address tuple as ``host:port`` (IPv6 bracketed, IPv4-mapped unwrapped)."""
    return format_hostport(normalize_host(sockaddr[0]), sockaddr[1])


def guess_advertise_host(family: int) -> str:
    """Best-effort IP other hosts can reach us on: the source address of the default route.

    Connecting a UDP socket sends nothing; it only makes the kernel pick a route and a source
    address. Without a default route this falls back to loopback (and logs a warning).
    """
    families = [family] + ([stdlib_socket.AF_INET] if family == stdlib_socket.AF_INET6 else [])
    for fam in families:
        try:
            with stdlib_socket.socket(fam, stdlib_socket.SOCK_DGRAM) as probe:
                probe.connect((_ROUTE_PROBES[fam], 9))
                host = probe.getsockname()[0]
        except (OSError, KeyError):
            continue
        if not _is_unspecified(host):
            return normalize_host(host)
    fallback = "::1" if family == stdlib_socket.AF_INET6 else "127.0.0.1"
    log.warning("advertise_fallback_to_loopback", host=fallback,
                hint="no default route; pass advertise= so peers can reach this node")
    return fallback


def advertised_address(advertise: str | None, listener: trio.socket.SocketType) -> str:
    """The address peers should use: ``advertise`` when given (port optional), else derived."""
    bound_host, bound_port = listener.getsockname()[:2]
    if advertise is None:
        host = (guess_advertise_host(listener.family) if _is_unspecified(bound_host)
                else normalize_host(bound_host))
        return format_hostport(host, bound_port)
    host, port = parse_hostport(advertise, default_port=bound_port)
    return format_hostport(host, port or bound_port)


def check_limits(**limits: int) -> None:
    """Every size and queue length given must be a positive integer."""
    for name, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
