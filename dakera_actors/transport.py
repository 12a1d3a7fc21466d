"""The network a node talks through: best-effort packets and reliable framed streams.

The split is memberlist's: SWIM probes and gossip ride on small packets that may be lost,
reordered or duplicated; joins, push-pull state exchange, forwarding and shard transfer ride on
streams that deliver whole frames in order or fail loudly. Every implementation lives in the
top-level ``transports`` package and is found by name through the entry-point group
``dakera_actors.transports``, so a third party can add one without touching this code.

A transport is opened as an async context manager; it runs its own background tasks (socket
readers, listeners) in a nursery it owns, and closes them all when the block exits.
"""

from __future__ import annotations

import abc
import importlib.metadata
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

#: Packets larger than this are refused by every transport: it keeps a packet inside one
#: Ethernet frame once IP/UDP headers and the AEAD seal are added.
MAX_PACKET_SIZE = 1400

#: Default ceiling on one stream frame. A shard snapshot is sent as many frames, not one.
DEFAULT_MAX_FRAME_SIZE = 32 * 1024 * 1024

ENTRY_POINT_GROUP = "dakera_actors.transports"


class TransportError(Exception):
    """Base of every error a transport raises."""


class ConnectError(TransportError):
    """The peer could not be reached (refused, unknown, partitioned, timed out)."""


class StreamClosed(TransportError):
    """The stream ended: the peer closed it, the connection broke, or it was closed locally."""


class FrameTooLarge(TransportError):
    """A packet or frame exceeds the transport's size limit; nothing was sent."""


def parse_hostport(address: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into its parts; ValueError names what is wrong."""
    text = address.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"unclosed '[' in address {address!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in address {address!r}")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"IPv6 address must be bracketed: {address!r}")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"missing host in address {address!r}")
    if not port_text:
        if default_port is None:
            raise ValueError(f"missing port in address {address!r}")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r} in address {address!r}")
    return host, int(port_text)


def format_hostport(host: str, port: int) -> str:
    """Inverse of :func:`parse_hostport`: brackets IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Stream(abc.ABC):
    """A reliable, ordered, bidirectional channel of whole frames (bytes) to one peer."""

    #: The address this stream reaches: the dialled address for outbound streams, the best
    #: known address of the remote end for inbound ones (frames carry the sender's id anyway).
    peer: str

    @abc.abstractmethod
    async def send(self, frame: bytes) -> None:
        """Send one frame. Raises StreamClosed if the stream is gone, FrameTooLarge if too big."""

    @abc.abstractmethod
    async def receive(self) -> bytes:
        """Receive the next frame. Raises StreamClosed at end of stream or on a broken link."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close both directions. Idempotent; never raises."""

    def limit_receive(self, size: int | None) -> None:  # noqa: B027 (optional: a no-op by default)
        """From now on, end the stream (StreamClosed on receive) when the peer sends a frame over
        ``size`` bytes, detected before more than about ``size`` bytes of it are buffered; None
        restores the transport's ``max_frame_size``. The endpoint keeps inbound streams small
        this way until a frame on them has authenticated. Every bundled transport implements
        it; the default (for older third-party transports) does nothing."""

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.receive()
            except StreamClosed:
                return


class Transport(abc.ABC):
    """One node's endpoint on the cluster network.

    Implementations must be safe to use from many tasks at once: several tasks may send
    packets and open streams concurrently while one task receives packets and one accepts.
    """

    #: The name the transport is registered under (``memory``, ``udp``, ``websocket``, ...).
    name: ClassVar[str]

    max_packet_size: int = MAX_PACKET_SIZE
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    #: inbound streams start with this receive limit (see Stream.limit_receive) when set, so a
    #: peer that has not authenticated cannot make the node buffer big frames; ``open``'s
    #: ``inbound_frame_limit`` option sets it
    inbound_frame_limit: int | None = None
    #: transports with a connection handshake of their own (the WebSocket upgrade) give an inbound
    #: connection this long to finish it, and keep at most ``max_pending_connections`` connections
    #: in it at once (the oldest is closed to make room); ``open``'s options of the same names set
    #: both before the first connection is accepted (the node passes them from its config)
    handshake_timeout: float = 5.0
    max_pending_connections: int = 64

    @classmethod
    @abc.abstractmethod
    def open(
        cls,
        *,
        bind: str,
        advertise: str | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        **options: Any,
    ) -> AbstractAsyncContextManager[Transport]:
        """Bind and start the transport; the context manager closes it.

        ``bind`` is ``host:port`` (port 0 picks a free one where the transport supports it);
        ``advertise`` is the address peers should use, derived from the bound one when None.
        Every transport takes ``inbound_frame_limit``, ``handshake_timeout`` and
        ``max_pending_connections`` (the node always passes them; see the attributes above);
        other ``options`` are transport-specific (the memory transport takes ``network=``).
        """

    def check_packet_size(self, data: bytes) -> None:
        """Every transport refuses an oversized packet the same way, before sending anything."""
        if len(data) > self.max_packet_size:
            raise FrameTooLarge(f"packet of {len(data)} bytes exceeds {self.max_packet_size}")

    def refusals(self) -> Mapping[str, int]:
        """What this transport turned away on its own, by reason, since it opened (a connection
        over a cap, a handshake that timed out, a frame over the size limit, a packet dropped on a
        full queue): the node exports it as ``dakera_transport_refused_total{reason}``. The bundled
        transports count; the default (for older third-party transports) reports nothing."""
        return {}

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """The advertised ``host:port`` other nodes use to reach this one."""

    @abc.abstractmethod
    async def send_packet(self, address: str, data: bytes) -> None:
        """Best effort: may be lost. Network failures are swallowed; only FrameTooLarge raises."""

    @abc.abstractmethod
    async def receive_packet(self) -> tuple[str, bytes]:
        """Wait for the next packet: ``(source address, data)``."""

    @abc.abstractmethod
    async def connect(self, address: str, *, timeout: float = 5.0) -> Stream:
        """Open a stream to ``address``. Raises ConnectError if it cannot within ``timeout``."""

    @abc.abstractmethod
    async def accept(self) -> Stream:
        """Wait for the next inbound stream."""


def available_transports() -> dict[str, importlib.metadata.EntryPoint]:
    """Every transport registered in the entry-point group, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_transport(name: str) -> type[Transport]:
    """The Transport class registered as ``name``; ValueError lists the known names."""
    found = available_transports()
    if name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise ValueError(f"unknown transport {name!r} (known: {known})")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise ValueError(f"entry point {name!r} does not name a Transport subclass")
    return cls
