"""One peer's frame that makes a handler raise closes that stream or drops that packet, never the node."""

from __future__ import annotations

import attrs
import trio
import trio.testing

from dakera_actors.endpoint import Endpoint, MessageStream
from dakera_actors.log import get_logger
from dakera_actors.metrics import NodeMetrics
from dakera_actors.transport import StreamClosed
from dakera_actors.wire import Codec, Envelope, message
from transports.memory import MemoryNetwork, MemoryTransport


@message("test.boom")
@attrs.frozen
class Boom:
    n: int


async def test_a_raising_handler_closes_only_its_stream(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    metrics = NodeMetrics()
    async with MemoryTransport.open(bind="a:1", network=net) as ta, \
            MemoryTransport.open(bind="b:1", network=net) as tb, trio.open_nursery() as nursery:
        server = Endpoint(ta, Codec("a"), metrics, get_logger("test"), api_address="http://a")
        client = Endpoint(tb, Codec("b"), NodeMetrics(), get_logger("test"), api_address="http://b")
        sunk: list[int] = []
        got = trio.Event()

        async def handler(envelope: Envelope, stream: MessageStream) -> None:
            if envelope.message.n == 0:
                raise ValueError("not enough values to unpack")  # the replicator's crash on [[0]]
            await stream.send(Boom(envelope.message.n))

        def sink(envelope: Envelope, source: str) -> None:
            if envelope.message.n == 0:
                raise KeyError("bad packet")
            sunk.append(envelope.message.n)
            got.set()

        server.on_stream(Boom, handler)
        server.on_packet(Boom, sink)
        await nursery.start(server.run)
        await nursery.start(client.run)

        stream = await client.open_stream(server.address, Boom(0), timeout=1)
        try:
            await stream.receive()
            raise AssertionError("the stream should have been closed")
        except StreamClosed:
            pass
        assert (await client.request(server.address, Boom(5), timeout=1)).message == Boom(5)

        await client.send(server.address, Boom(0))
        await client.send(server.address, Boom(7))
        with trio.fail_after(5):
            await got.wait()
        assert sunk == [7]
        assert metrics.sample("dakera_wire_rejected_total", reason="handler_error") == 2
        assert await client.ping(server.address, timeout=1)
        nursery.cancel_scope.cancel()
