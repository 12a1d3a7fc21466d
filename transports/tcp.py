"""TCP/IP helpers shared by the transports that carry streams over TCP (``udp`` and ``websocket``).

:class:`TcpConnection` is a TCP socket as a Trio stream that a transport can close synchronously;
the functions bind a listener (dual-stack on a wildcard IPv6 bind), accept until it closes, and
work out the address peers should use when none is advertised.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as stdlib_socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio

from dakera_actors.log import get_logger
from dakera_actors.transport import ConnectError, format_hostport, parse_hostport

log = get_logger("dakera_actors.transports.tcp")

RECV_CHUNK = 64 * 1024
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
            data = await self.socket.recv(max_bytes or RECV_CHUNK)
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
        allow_dual_stack(sock, sockaddr)
        await sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def allow_dual_stack(sock: trio.socket.SocketType, sockaddr: Any) -> None:
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


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def normalize_host(host: str) -> str:
    """An IP literal in its canonical form, with ``::ffff:1.2.3.4`` (how a dual-stack socket sees
    IPv4 peers) as ``1.2.3.4``; a name unchanged."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


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
