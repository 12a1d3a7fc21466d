"""In-process transport: a simulated network shared by the nodes of one test.

Everything is driven by trio time, so a whole cluster runs under ``trio.testing.MockClock``.
The network injects the faults a real one has: loss, latency, duplication, reordering (by
jittered latency), partitions between groups of nodes, one-way link cuts and killed endpoints.
All randomness comes from one ``random.Random(seed)`` so a failing schedule replays exactly.

Semantics, chosen to match what a node would see over UDP/TCP:
- a packet to a killed or unknown address vanishes; one across a partition or cut link too;
- ``connect`` to a killed address is refused at once (a live host, a dead process); across a
  partition it hangs until its timeout (a SYN into the void), then fails;
- a partition, a cut or a kill breaks the streams that cross it: both ends see StreamClosed.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from dakera_actors.transport import (
    DEFAULT_MAX_FRAME_SIZE,
    ConnectError,
    FrameTooLarge,
    Stream,
    StreamClosed,
    Transport,
)

_PACKET_QUEUE = 1024  # packets buffered per endpoint before new ones are dropped (like a socket buffer)
_ACCEPT_QUEUE = 64
_STREAM_WINDOW = 64  # frames in flight per stream direction before send() waits


@attrs.define
class NetworkStats:
    """Counters a test can assert on."""

    packets_sent: int = 0
    packets_delivered: int = 0
    packets_dropped: int = 0
    packets_duplicated: int = 0
    streams_opened: int = 0
    streams_broken: int = 0


@attrs.define
class Faults:
    """Probabilistic faults applied to every packet (and latency to every stream frame)."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)

    def __attrs_post_init__(self) -> None:
        for name in ("drop", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        lo, hi = self.delay
        if not 0.0 <= lo <= hi:
            raise ValueError(f"delay must be (lo, hi) with 0 <= lo <= hi, got {self.delay}")


class MemoryNetwork:
    """The shared medium. Create one per test (or per simulated cluster)."""

    def __init__(self, *, seed: int = 0, faults: Faults | None = None) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.stats = NetworkStats()
        self._endpoints: dict[str, MemoryTransport] = {}
        self._killed: set[str] = set()
        self._groups: list[frozenset[str]] = []
        self._cut: set[tuple[str, str]] = set()
        self._link_faults: dict[tuple[str, str], Faults] = {}
        self._streams: set[_StreamPair] = set()

    # -- fault control -----------------------------------------------------------------
    def set_faults(self, *, drop: float = 0.0, duplicate: float = 0.0,
                   delay: tuple[float, float] = (0.0, 0.0)) -> None:
        """Replace the network-wide packet faults."""
        self.faults = Faults(drop=drop, duplicate=duplicate, delay=delay)

    def set_link_faults(self, src: str, dst: str, *, drop: float = 0.0, duplicate: float = 0.0,
                        delay: tuple[float, float] = (0.0, 0.0)) -> None:
        """Faults for packets from ``src`` to ``dst`` only (overrides the network-wide ones)."""
        self._link_faults[(src, dst)] = Faults(drop=drop, duplicate=duplicate, delay=delay)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the network: addresses in different groups cannot talk.

        Addresses named in no group together form one more group of their own.
        """
        sets = [frozenset(g) for g in groups]
        seen: set[str] = set()
        for g in sets:
            if seen & g:
                raise ValueError(f"address in two partition groups: {sorted(seen & g)}")
            seen |= g
        self._groups = sets
        self._break_streams(lambda a, b: not self.can_talk(a, b))

    def cut(self, src: str, dst: str, *, both: bool = False) -> None:
        """Cut the link from ``src`` to ``dst`` (and back when ``both``)."""
        self._cut.add((src, dst))
        if both:
            self._cut.add((dst, src))
        self._break_streams(lambda a, b: not self.can_talk(a, b))

    def heal(self) -> None:
        """Remove every partition, cut link and per-link fault (killed endpoints stay dead)."""
        self._groups = []
        self._cut.clear()
        self._link_faults.clear()

    def kill(self, address: str) -> None:
        """The process at ``address`` died: its packets vanish, its streams break."""
        self._killed.add(address)
        self._break_streams(lambda a, b: address in (a, b))

    def revive(self, address: str) -> None:
        self._killed.discard(address)

    # -- queries -----------------------------------------------------------------------
    def _group_of(self, address: str) -> int:
        for i, g in enumerate(self._groups):
            if address in g:
                return i
        return -1

    def can_talk(self, src: str, dst: str) -> bool:
        """True when a packet from ``src`` may reach ``dst`` (ignoring random loss)."""
        if src in self._killed or dst in self._killed:
            return False
        if (src, dst) in self._cut:
            return False
        return not self._groups or self._group_of(src) == self._group_of(dst)

    def is_live(self, address: str) -> bool:
        return address in self._endpoints and address not in self._killed

    # -- internals ---------------------------------------------------------------------
    def _register(self, transport: MemoryTransport) -> None:
        if transport.address in self._endpoints:
            raise OSError(f"address already in use on this memory network: {transport.address}")
        self._endpoints[transport.address] = transport
        self._killed.discard(transport.address)

    def _unregister(self, transport: MemoryTransport) -> None:
        if self._endpoints.get(transport.address) is transport:
            del self._endpoints[transport.address]
        self._break_streams(lambda a, b: transport.address in (a, b))

    def _break_streams(self, predicate: Any) -> None:
        for pair in list(self._streams):
            if predicate(pair.a, pair.b) or predicate(pair.b, pair.a):
                pair.break_()

    def _faults_for(self, src: str, dst: str) -> Faults:
        return self._link_faults.get((src, dst), self.faults)

    def _latency(self, faults: Faults) -> float:
        lo, hi = faults.delay
        return lo if lo == hi else self.rng.uniform(lo, hi)

    def _send_packet(self, src: str, dst: str, data: bytes) -> None:
        self.stats.packets_sent += 1
        target = self._endpoints.get(dst)
        faults = self._faults_for(src, dst)
        if target is None or not self.can_talk(src, dst) or (
            faults.drop and self.rng.random() < faults.drop
        ):
            self.stats.packets_dropped += 1
            return
        copies = 1
        if faults.duplicate and self.rng.random() < faults.duplicate:
            copies = 2
            self.stats.packets_duplicated += 1
        for _ in range(copies):
            target._deliver_packet(src, data, self._latency(faults))


class _StreamPair:
    """Both directions of one simulated connection; breaking it ends both sides."""

    def __init__(self, net: MemoryNetwork, a: str, b: str) -> None:
        self.net, self.a, self.b = net, a, b
        self.a_to_b = trio.open_memory_channel[bytes](_STREAM_WINDOW)
        self.b_to_a = trio.open_memory_channel[bytes](_STREAM_WINDOW)
        self.broken = False
        self.closed_ends = 0
        net._streams.add(self)
        net.stats.streams_opened += 1

    def break_(self) -> None:
        if not self.broken:
            self.broken = True
            self.net.stats.streams_broken += 1
            for send, _ in (self.a_to_b, self.b_to_a):
                send.close()
        self.net._streams.discard(self)

    def release(self) -> None:
        self.net._streams.discard(self)


class MemoryStream(Stream):
    def __init__(self, pair: _StreamPair, local: str, peer: str,
                 out: trio.MemorySendChannel[bytes], inbound: trio.MemoryReceiveChannel[bytes],
                 max_frame_size: int, refused: Counter[str] | None = None) -> None:
        self.peer = peer
        self._refused = refused  # the receiving transport's counts (None: not counted)
        self._pair, self._local = pair, local
        self._out, self._in = out, inbound
        self._max = max_frame_size
        self._receive_max = max_frame_size  # see limit_receive
        self._closed = False

    def limit_receive(self, size: int | None) -> None:
        self._receive_max = self._max if size is None else min(size, self._max)

    async def send(self, frame: bytes) -> None:
        if len(frame) > self._max:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds {self._max}")
        net = self._pair.net
        if self._closed or self._pair.broken:
            raise StreamClosed("stream is closed")
        if not net.can_talk(self._local, self.peer):
            self._pair.break_()
            raise StreamClosed("link to peer is down")
        latency = net._latency(net._faults_for(self._local, self.peer))
        if latency:
            await trio.sleep(latency)  # sleeping in send keeps frames in order
        try:
            await self._out.send(bytes(frame))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StreamClosed("stream is closed") from None

    async def receive(self) -> bytes:
        try:
            frame = await self._in.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise StreamClosed("stream ended") from None
        if len(frame) > self._receive_max:  # as a real transport would, before buffering it
            if self._refused is not None:
                self._refused["frame_too_large"] += 1
            await self.aclose()
            raise StreamClosed(f"peer sent a frame of {len(frame)} bytes, above the {self._receive_max}-byte limit")
        return frame

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out.close()
        self._in.close()
        self._pair.closed_ends += 1
        if self._pair.closed_ends == 2:
            self._pair.release()
        await trio.lowlevel.checkpoint()


class MemoryTransport(Transport):
    """An endpoint on a :class:`MemoryNetwork`. Open it with ``network=`` in the options."""

    name = "memory"

    def __init__(self, network: MemoryNetwork, address: str, max_frame_size: int,
                 nursery: trio.Nursery) -> None:
        self.network = network
        self._address = address
        self.max_frame_size = max_frame_size
        self._nursery = nursery
        self._packets_send, self._packets = trio.open_memory_channel[tuple[str, bytes]](_PACKET_QUEUE)
        self._accept_send, self._accepts = trio.open_memory_channel[Stream](_ACCEPT_QUEUE)
        self._closed = False
        #: inbound work turned away, by reason (see Transport.refusals)
        self.refused: Counter[str] = Counter(dict.fromkeys(("accept_backlog", "frame_too_large", "packet_queue_full"), 0))

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
        network: MemoryNetwork | None = None,
        inbound_frame_limit: int | None = None,
        handshake_timeout: float = 5.0,
        max_pending_connections: int = 64,
        **options: Any,
    ) -> AsyncIterator[MemoryTransport]:
        if options:
            raise TypeError(f"unknown memory transport options: {sorted(options)}")
        net = network if network is not None else default_network()
        address = advertise or bind
        if address in net._endpoints:  # checked before the nursery so the error is not wrapped
            raise OSError(f"address already in use on this memory network: {address}")
        async with trio.open_nursery() as nursery:
            transport = cls(net, address, max_frame_size, nursery)
            transport.inbound_frame_limit = inbound_frame_limit
            transport.handshake_timeout = handshake_timeout
            transport.max_pending_connections = max_pending_connections
            net._register(transport)
            try:
                yield transport
            finally:
                transport._closed = True
                net._unregister(transport)
                transport._packets_send.close()
                transport._accept_send.close()
                nursery.cancel_scope.cancel()

    @property
    def address(self) -> str:
        return self._address

    async def send_packet(self, address: str, data: bytes) -> None:
        self.check_packet_size(data)
        if not self._closed:
            self.network._send_packet(self._address, address, bytes(data))
        await trio.lowlevel.checkpoint()

    def _deliver_packet(self, src: str, data: bytes, latency: float) -> None:
        if self._closed:
            return
        if latency:
            self._nursery.start_soon(self._deliver_later, src, data, latency)
        else:
            self._enqueue(src, data)

    async def _deliver_later(self, src: str, data: bytes, latency: float) -> None:
        await trio.sleep(latency)
        if self.network.is_live(self._address):
            self._enqueue(src, data)

    def _enqueue(self, src: str, data: bytes) -> None:
        try:
            self._packets_send.send_nowait((src, data))
            self.network.stats.packets_delivered += 1
        except trio.WouldBlock:
            self.network.stats.packets_dropped += 1
            self.refused["packet_queue_full"] += 1
        except trio.ClosedResourceError:
            self.network.stats.packets_dropped += 1

    async def receive_packet(self) -> tuple[str, bytes]:
        return await self._packets.receive()

    async def connect(self, address: str, *, timeout: float = 5.0) -> Stream:
        net = self.network
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise ConnectError("transport is closed")
        target = net._endpoints.get(address)
        if target is None or address in net._killed:
            raise ConnectError(f"connection refused: {address}")
        if not (net.can_talk(self._address, address) and net.can_talk(address, self._address)):
            await trio.sleep(timeout)
            raise ConnectError(f"connect to {address} timed out after {timeout}s")
        pair = _StreamPair(net, self._address, address)
        local = MemoryStream(pair, self._address, address, pair.a_to_b[0], pair.b_to_a[1],
                             self.max_frame_size)
        remote = MemoryStream(pair, address, self._address, pair.b_to_a[0], pair.a_to_b[1],
                              target.max_frame_size, target.refused)
        if target.inbound_frame_limit is not None:
            remote.limit_receive(target.inbound_frame_limit)
        try:
            target._accept_send.send_nowait(remote)
        except (trio.WouldBlock, trio.ClosedResourceError) as exc:
            pair.break_()
            if isinstance(exc, trio.WouldBlock):
                target.refused["accept_backlog"] += 1
            raise ConnectError(f"connection refused (backlog full or closing): {address}") from None
        return local

    async def accept(self) -> Stream:
        return await self._accepts.receive()


_default: MemoryNetwork | None = None


def default_network() -> MemoryNetwork:
    """The process-wide network used when no ``network=`` is given."""
    global _default
    if _default is None:
        _default = MemoryNetwork()
    return _default
