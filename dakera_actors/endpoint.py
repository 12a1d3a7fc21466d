"""The node's door to the network: frames in and out of the transport.

Inbound packets are decoded (bad ones dropped and counted by the codec) and handed to whichever
actor registered for their message type, without ever blocking the reader: a full mailbox drops
the packet as a full socket buffer would. Inbound streams are read for their first frame, which
names the handler; each runs in its own task, bounded in number. Outbound, ``send`` is a packet,
``request`` a stream carrying one request and one reply.

What an unauthenticated peer can pin is bounded: an inbound stream takes frames of at most
``UNAUTHENTICATED_FRAME_LIMIT`` bytes (checked by the transport on the length, before buffering)
until one frame on it has decoded, i.e. authenticated with a gossip key; then the transport's
full frame limit applies. So at most MAX_INBOUND_STREAMS x 64 KiB (16 MiB) is buffered for
peers that hold no key. A sender whose first frame is larger opens the stream with a small
:class:`StreamHello` first.

What a silent or slow peer can hold is bounded too (:class:`StreamLimits`): an inbound stream
must deliver an authenticated frame within ``first_frame_timeout`` (one byte at a time does not
extend it); at most ``max_pending`` streams wait for theirs at once, and a new one beyond that
closes the oldest waiting one, so a flood of idle connections cannot lock honest peers out
(an honest peer's first frame follows its connect at once); at most ``max_streams`` inbound
streams are served at all. Every refusal is counted by reason in :attr:`Endpoint.refused`
(exported as ``dakera_transport_refused_total``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .log import EventLogger
from .metrics import NodeMetrics
from .transport import ConnectError, FrameTooLarge, Stream, StreamClosed, Transport, TransportError
from .version import __version__
from .wire import Codec, Envelope, ErrorReply, Ping, Pong, message, tag_of

PacketSink = Callable[[Envelope, str], Any]  # (envelope, source address), must not block
StreamHandler = Callable[[Envelope, "MessageStream"], Awaitable[None]]

FIRST_FRAME_TIMEOUT = 5.0  # an inbound stream that names no request by then is closed
IDLE_STREAM_TIMEOUT = 30.0  # a kept-alive stream with no next request by then is closed
MAX_INBOUND_STREAMS = 256
MAX_PENDING_STREAMS = 64  # inbound streams waiting for their first authenticated frame
POOL_PER_PEER = 8  # idle request streams kept open per peer for the next request
#: the largest frame an inbound stream takes before a frame on it has authenticated
UNAUTHENTICATED_FRAME_LIMIT = 64 * 1024


@message("stream.hello")
@attrs.frozen
class StreamHello:
    """Sent first on a stream whose first request is larger than UNAUTHENTICATED_FRAME_LIMIT:
    it authenticates the stream, so the receiver lifts its limit; it gets no reply."""


#: every reason the endpoint turns an inbound stream away (labels of dakera_transport_refused_total)
REFUSE_REASONS = (
    "stream_limit",  # max_streams inbound streams are served already
    "pending_evicted",  # closed before its first frame to make room for a newer stream
    "first_frame_timeout",  # no authenticated frame within first_frame_timeout
)


@attrs.frozen
class StreamLimits:
    """How much of the node inbound streams can hold (DAKERA_GOSSIP_* in the config)."""

    first_frame_timeout: float = FIRST_FRAME_TIMEOUT
    idle_timeout: float = IDLE_STREAM_TIMEOUT
    max_streams: int = MAX_INBOUND_STREAMS
    max_pending: int = MAX_PENDING_STREAMS


class RemoteError(Exception):
    """The peer answered a request with an ErrorReply."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class RequestTimeout(TransportError):
    """A request got no reply within its timeout."""


class MessageStream:
    """A transport stream that carries wire messages instead of bytes."""

    def __init__(self, stream: Stream, codec: Codec, max_frame: int) -> None:
        self.raw = stream
        self._codec = codec
        self._max = max_frame

    @property
    def peer(self) -> str:
        return self.raw.peer

    async def send(self, msg: object) -> None:
        await self.raw.send(self._codec.encode(msg))

    async def receive(self) -> Envelope:
        """The next message; a frame that does not decode ends the stream (it cannot be trusted)."""
        envelope = self._codec.decode(await self.raw.receive(), max_size=self._max)
        if envelope is None:
            await self.raw.aclose()
            raise StreamClosed("peer sent a frame that was rejected")
        return envelope

    async def aclose(self) -> None:
        await self.raw.aclose()

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Endpoint:
    def __init__(self, transport: Transport, codec: Codec, metrics: NodeMetrics, log: EventLogger,
                 *, api_address: str, request_timeout: float = 5.0,
                 limits: StreamLimits = StreamLimits()) -> None:
        self.transport = transport
        self.codec = codec
        self.metrics = metrics
        self.log = log
        self.api_address = api_address
        self.request_timeout = request_timeout
        self._packet_sinks: dict[type, PacketSink] = {}
        self._stream_handlers: dict[type, StreamHandler] = {Ping: self._answer_ping_stream}
        self._packet_sinks[Ping] = self._answer_ping_packet
        self.limits = limits
        self._inbound = trio.CapacityLimiter(limits.max_streams)
        #: inbound streams still waiting for their first authenticated frame, oldest first, each
        #: with the cancel scope of that wait (cancelled to evict it)
        self._pending: dict[Stream, trio.CancelScope] = {}
        #: inbound streams turned away, by reason (see REFUSE_REASONS)
        self.refused: Counter[str] = Counter({reason: 0 for reason in REFUSE_REASONS})
        self._nursery: trio.Nursery | None = None
        # labelled children looked up once: labels() is costly on the packet path
        self._packets_out, self._packets_in = metrics.packets.labels("out"), metrics.packets.labels("in")
        self._bytes_out, self._bytes_in = metrics.packet_bytes.labels("out"), metrics.packet_bytes.labels("in")
        self._pending_pings: dict[int, trio.Event] = {}
        self._idle: dict[str, list[MessageStream]] = {}
        self._ping_seq = 0
        self._packet_sinks[Pong] = self._on_pong

    @property
    def address(self) -> str:
        return self.transport.address

    @property
    def packet_budget(self) -> int:
        """Bytes of encoded frame that still fit in one packet once sealed."""
        return self.transport.max_packet_size - self.codec.overhead

    # -- registration ------------------------------------------------------------------
    def on_packet(self, message_type: type, sink: PacketSink) -> None:
        """Route packets of ``message_type`` to ``sink(envelope, source)``; it must not block."""
        self._packet_sinks[message_type] = sink

    def on_stream(self, message_type: type, handler: StreamHandler) -> None:
        """Serve streams whose first message is ``message_type`` with ``handler``."""
        self._stream_handlers[message_type] = handler

    # -- outbound ----------------------------------------------------------------------
    async def send(self, address: str, msg: object) -> bool:
        """Send one packet; False when it could not even be handed to the network."""
        frame = self.codec.encode(msg)
        try:
            await self.transport.send_packet(address, frame)
        except FrameTooLarge:
            self.log.error("packet_too_large", tag=tag_of(msg), bytes=len(frame))
            raise
        self._packets_out.inc()
        self._bytes_out.inc(len(frame))
        return True

    async def open_stream(self, address: str, first: object, *, timeout: float) -> MessageStream:
        """Connect to ``address`` and send ``first``, the message that names the handler."""
        raw = await self.transport.connect(address, timeout=timeout)
        self.metrics.streams.labels("out").inc()
        stream = MessageStream(raw, self.codec, self.transport.max_frame_size)
        try:
            frame = self.codec.encode(first)
            if len(frame) > UNAUTHENTICATED_FRAME_LIMIT:
                await raw.send(self.codec.encode(StreamHello()))
            await raw.send(frame)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def request(self, address: str, msg: object, *, timeout: float | None = None) -> Envelope:
        """One request, one reply, all within ``timeout``, over a pooled stream to the peer.

        Streams are kept open between requests (one request at a time on each), so a forward
        costs a round trip, not a connection setup. A kept stream the peer has meanwhile closed
        is detected on use and the request goes out once more on a fresh one; nothing is sent
        twice on a stream that worked. Raises a TransportError (ConnectError, StreamClosed,
        RequestTimeout) when the peer cannot be reached or does not answer, RemoteError when it
        answers with an ErrorReply. ``timeout`` defaults to DAKERA_REQUEST_TIMEOUT_SECONDS."""
        timeout = self.request_timeout if timeout is None else timeout
        try:
            with trio.fail_after(timeout):
                reply = await self._exchange(address, msg, timeout)
        except trio.TooSlowError:
            raise RequestTimeout(f"no reply from {address} within {timeout}s") from None
        if isinstance(reply.message, ErrorReply):
            raise RemoteError(reply.message.code, reply.message.detail)
        return reply

    async def _exchange(self, address: str, msg: object, timeout: float) -> Envelope:
        idle = self._idle.setdefault(address, [])
        while idle:
            stream = idle.pop()
            try:
                await stream.send(msg)
                reply = await stream.receive()
            except StreamClosed:
                await stream.aclose()  # the peer let it go while idle: try the next one
                continue
            except BaseException:
                await stream.aclose()
                raise
            self._park(address, stream)
            return reply
        stream = await self.open_stream(address, msg, timeout=timeout)
        try:
            reply = await stream.receive()
        except BaseException:
            await stream.aclose()
            raise
        self._park(address, stream)
        return reply

    def _park(self, address: str, stream: MessageStream) -> None:
        """Keep ``stream`` for the next request to ``address``, or close it if enough are kept."""
        idle = self._idle.setdefault(address, [])
        if len(idle) < POOL_PER_PEER:
            idle.append(stream)
        elif self._nursery is not None:
            self._nursery.start_soon(stream.aclose)

    async def ping(self, address: str, *, timeout: float) -> bool:
        """Packet ping: True when a Pong for it came back within ``timeout``."""
        self._ping_seq += 1
        seq = self._ping_seq
        done = self._pending_pings[seq] = trio.Event()
        try:
            await self.send(address, Ping(seq=seq))
            with trio.move_on_after(timeout):
                await done.wait()
                return True
            return False
        finally:
            del self._pending_pings[seq]

    # -- inbound -----------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read_packets)
            nursery.start_soon(self._accept_streams)
            task_status.started()

    async def _read_packets(self) -> None:
        max_size = self.transport.max_packet_size
        while True:
            source, data = await self.transport.receive_packet()
            self._packets_in.inc()
            self._bytes_in.inc(len(data))
            envelope = self.codec.decode(data, max_size=max_size)
            if envelope is None:
                continue
            sink = self._packet_sinks.get(type(envelope.message))
            if sink is None:
                self.log.debug("packet_unhandled", tag=envelope.tag, sender=envelope.sender)
                continue
            try:
                result = sink(envelope, source)
            except Exception as exc:  # one peer's packet must never stop the reader: drop it
                self._handler_failed(exc, envelope.tag, envelope.sender, source)
                continue
            if isinstance(result, Awaitable):
                raise TypeError(f"packet sink for {envelope.tag} must not be async")

    async def _accept_streams(self) -> None:
        assert self._nursery is not None
        while True:
            raw = await self.transport.accept()
            self.metrics.streams.labels("in").inc()
            try:
                self._inbound.acquire_on_behalf_of_nowait(raw)
            except trio.WouldBlock:
                self._refuse("stream_limit", raw.peer)
                await raw.aclose()
                continue
            if len(self._pending) >= self.limits.max_pending:
                oldest = next(iter(self._pending))
                self._refuse("pending_evicted", oldest.peer)
                self._pending.pop(oldest).cancel()  # its task closes it and frees its slot
            wait = trio.CancelScope(deadline=trio.current_time() + self.limits.first_frame_timeout)
            self._pending[raw] = wait
            self._nursery.start_soon(self._serve_stream, raw, wait)

    @property
    def pending_streams(self) -> int:
        """Inbound streams waiting for their first authenticated frame now."""
        return len(self._pending)

    @property
    def inbound_streams(self) -> int:
        """Inbound streams held now (waiting or served)."""
        return int(self._inbound.borrowed_tokens)

    def _refuse(self, reason: str, peer: str) -> None:
        self.refused[reason] += 1
        if self.refused[reason] == 1 or self.refused[reason] % 1000 == 0:  # a flood must not flood the log
            self.log.warning("inbound_stream_refused", reason=reason, peer=peer, count=self.refused[reason])

    async def _serve_stream(self, raw: Stream, first_wait: trio.CancelScope) -> None:
        stream = MessageStream(raw, self.codec, self.transport.max_frame_size)
        try:
            first: Envelope | None = None
            with first_wait:  # the first authenticated frame: by the deadline, unless evicted
                first = await stream.receive()
            if first is None:
                if self._pending.pop(raw, None) is not None:  # not evicted: its time ran out
                    self._refuse("first_frame_timeout", raw.peer)
                return
            self._pending.pop(raw, None)  # (evicted in the very moment it spoke: it stays)
            raw.limit_receive(None)  # it authenticated: full-size frames from now on
            wait = self.limits.first_frame_timeout  # the request after a hello comes at once
            while True:  # one request after another: the client may keep the stream for the next
                if first is None:
                    with trio.move_on_after(wait):
                        first = await stream.receive()
                    if first is None:
                        return
                if isinstance(first.message, StreamHello):
                    first = None
                    continue
                wait = self.limits.idle_timeout
                handler = self._stream_handlers.get(type(first.message))
                request, first = first, None
                if handler is None:
                    await stream.send(ErrorReply(code="unhandled", detail=request.tag))
                    continue
                try:
                    await handler(request, stream)
                except (StreamClosed, ConnectError):
                    raise
                except Exception as exc:  # only this stream ends; Cancelled/KeyboardInterrupt go on
                    self._handler_failed(exc, request.tag, request.sender, raw.peer)
                    return
        except (StreamClosed, ConnectError):
            pass  # the peer went away: nothing to answer
        finally:
            self._pending.pop(raw, None)
            await stream.aclose()
            self._inbound.release_on_behalf_of(raw)

    def _handler_failed(self, exc: Exception, tag: str, sender: str, peer: str) -> None:
        """A decoded frame whose handling raised: logged with the peer and counted; the caller
        drops the packet or closes the stream, and the node carries on."""
        self.metrics.wire_rejected.labels("handler_error").inc()
        self.log.warning("peer_frame_failed", tag=tag, sender=sender, peer=peer,
                         error=f"{type(exc).__name__}: {exc}"[:300])

    # -- built-in handlers -------------------------------------------------------------
    def _pong(self, seq: int) -> Pong:
        return Pong(seq=seq, node_id=self.codec.node_id, version=__version__, api_address=self.api_address)

    def _answer_ping_packet(self, envelope: Envelope, source: str) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self.send, source, self._pong(envelope.message.seq))

    async def _answer_ping_stream(self, envelope: Envelope, stream: MessageStream) -> None:
        await stream.send(self._pong(envelope.message.seq))

    def _on_pong(self, envelope: Envelope, source: str) -> None:
        done = self._pending_pings.get(envelope.message.seq)
        if done is not None:
            done.set()
