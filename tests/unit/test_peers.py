"""The one peer layer: a member id in, a reply message or one PeerUnavailable out, whatever failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
import trio.testing

from dakera_actors.endpoint import Endpoint, MessageStream
from dakera_actors.log import get_logger
from dakera_actors.membership.member import Member, MemberState
from dakera_actors.metrics import NodeMetrics
from dakera_actors.peers import Peers, PeerUnavailable
from dakera_actors.wire import Codec, Envelope, message
from transports.memory import MemoryNetwork, MemoryTransport

from ..waiting import eventually


@message("test.peers.echo")
@attrs.frozen
class Echo:
    n: int


@message("test.peers.stall")
@attrs.frozen
class Stall:
    n: int = 0


@message("test.peers.nobody")
@attrs.frozen
class Nobody:
    n: int = 0


@attrs.define
class Cluster:
    peers: Peers
    members: dict[str, Member]
    received: list[tuple[str, int]]


@asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    """``me`` and two members that echo (``b``, ``c``; ``c`` never answers a Stall); ``d`` is
    known but Dead, ``x`` is known and Alive at an address nobody listens on."""
    net = MemoryNetwork()
    received: list[tuple[str, int]] = []
    async with MemoryTransport.open(bind="me:1", network=net) as tme, \
            MemoryTransport.open(bind="b:1", network=net) as tb, \
            MemoryTransport.open(bind="c:1", network=net) as tc, trio.open_nursery() as nursery:
        me = Endpoint(tme, Codec("me"), NodeMetrics(), get_logger("test"), api_address="http://me")
        members = {"me": Member("me", tme.address, "http://me", 1, MemberState.ALIVE)}
        for name, transport in (("b", tb), ("c", tc)):
            endpoint = Endpoint(transport, Codec(name), NodeMetrics(), get_logger("test"), api_address=f"http://{name}")

            async def echo(envelope: Envelope, stream: MessageStream, name: str = name) -> None:
                await stream.send(Echo(envelope.message.n * 10 + (1 if name == "b" else 2)))

            async def stall(envelope: Envelope, stream: MessageStream) -> None:
                await trio.sleep_forever()

            def sink(envelope: Envelope, source: str, name: str = name) -> None:
                received.append((name, envelope.message.n))

            endpoint.on_stream(Echo, echo)
            endpoint.on_packet(Echo, sink)
            if name == "c":
                endpoint.on_stream(Stall, stall)
            await nursery.start(endpoint.run)
            members[name] = Member(name, transport.address, f"http://{name}", 1, MemberState.ALIVE)
        members["d"] = Member("d", "d:1", "http://d", 1, MemberState.DEAD)
        members["x"] = Member("x", "x:1", "http://x", 1, MemberState.ALIVE)
        await nursery.start(me.run)
        yield Cluster(Peers(me, lambda: members, self_id="me", timeout=2.0), members, received)
        nursery.cancel_scope.cancel()


async def test_a_request_returns_the_reply_message(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        assert await c.peers.request("b", Echo(4)) == Echo(41)
        assert await c.peers.request("c", Echo(4)) == Echo(42)


async def test_an_unknown_or_down_member_is_refused_at_once_and_says_which(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        for member, unknown in (("nobody", True), ("d", False)):
            started = trio.current_time()
            try:
                await c.peers.request(member, Echo(1))
                raise AssertionError(f"{member} was asked")
            except PeerUnavailable as exc:
                assert exc.unknown == unknown and exc.member_id == member and not exc.asked
                assert unknown or "Dead" in exc.reason
            assert trio.current_time() == started  # nothing was sent, nothing waited for


async def test_a_member_that_does_not_answer_in_time_is_unavailable(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        started = trio.current_time()
        try:
            await c.peers.request("c", Stall(), timeout=0.5)
            raise AssertionError("a stalled request returned")
        except PeerUnavailable as exc:
            assert not exc.unknown and exc.member_id == "c" and exc.asked
        assert trio.current_time() - started < 1.0  # the timeout given, not the default 2 s
        # and the member is still asked normally afterwards
        assert await c.peers.request("c", Echo(1)) == Echo(12)


async def test_an_error_reply_and_an_unreachable_address_are_unavailable(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        for member, msg in (("b", Nobody()), ("x", Echo(1))):  # no handler (RemoteError); no listener
            try:
                await c.peers.request(member, msg)
                raise AssertionError(f"{member} answered {msg}")
            except PeerUnavailable as exc:
                assert not exc.unknown and exc.member_id == member and exc.asked


async def test_gather_maps_each_member_to_its_reply_or_why_there_is_none(
        autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        out = await c.peers.gather(["b", "c", "d", "nobody", "b"], lambda m: Echo(len(m)), timeout=1.0)
        assert set(out) == {"b", "c", "d", "nobody"}  # each asked once
        assert out["b"] == Echo(11) and out["c"] == Echo(12)
        assert isinstance(out["d"], PeerUnavailable) and not out["d"].unknown
        assert isinstance(out["nobody"], PeerUnavailable) and out["nobody"].unknown
        stalled = await c.peers.gather(["b", "c"], Stall(), timeout=0.5)  # one stalls, one has no handler
        assert isinstance(stalled["b"], PeerUnavailable) and isinstance(stalled["c"], PeerUnavailable)


async def test_send_and_reachable_use_the_membership_view(autojump_clock: trio.testing.MockClock) -> None:
    async with cluster() as c:
        assert c.peers.reachable() == ["b", "c", "x"]  # not itself, not the dead member
        assert await c.peers.send("b", Echo(3))
        assert not await c.peers.send("nobody", Echo(3))
        assert not await c.peers.send("me", Echo(3))
        c.members["b"] = attrs.evolve(c.members["b"], state=MemberState.SUSPECT)
        c.members["c"] = attrs.evolve(c.members["c"], state=MemberState.LEFT)
        assert c.peers.reachable() == ["b", "x"]  # read at each call: a suspect is still worth asking
        await eventually(lambda: ("b", 3) in c.received, timeout=5)
