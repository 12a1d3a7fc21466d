"""Silent and looping peers against a node's inbound streams, in process on the memory transport
under MockClock (the timeouts pass in simulated time): streams opened and never spoken on, opened
and closed in a tight loop, more of them than the node serves. The node keeps at most
``gossip_max_pending_streams`` waiting for a first frame (a new one closes the oldest), closes
each after ``gossip_handshake_timeout``, serves at most ``gossip_max_streams``, answers an honest
peer's requests throughout, and counts every refusal by reason. The same on real sockets (byte
by byte, huge length prefixes): tests/real/test_slow_peers.py."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from dakera_actors.testing import open_cluster
from dakera_actors.testing.cluster import Cluster
from dakera_actors.transport import Stream, StreamClosed
from dakera_actors.wire import Ping

REFUSED = "dakera_transport_refused_total"


def refused(cluster: Cluster, reason: str) -> float:
    return cluster.node("node-1").metrics.sample(REFUSED, reason=reason)


async def honest_request(cluster: Cluster, seq: int) -> None:
    endpoint = cluster.node("node-2").endpoint
    assert endpoint is not None
    reply = await endpoint.request(cluster.address("node-1"), Ping(seq=seq), timeout=2)
    assert reply.sender == "node-1" and reply.message.seq == seq
    for pooled in endpoint._idle.pop(cluster.address("node-1"), []):  # no place kept for the next:
        await pooled.aclose()  # a fresh stream each time must get through the flood
    await trio.testing.wait_all_tasks_blocked()


async def test_silent_streams_are_capped_evicted_timed_out_and_counted(
        autojump_clock: trio.testing.MockClock) -> None:
    from transports.memory import MemoryTransport

    # a long first-frame timeout: the flood outlasts none of it (simulated time passes while it runs)
    config = {"gossip_max_pending_streams": 16, "gossip_handshake_timeout": 120.0}
    async with open_cluster(2, seed=21, config=config) as cluster, \
            MemoryTransport.open(bind="evil:7946", network=cluster.network) as hostile:
        endpoint = cluster.node("node-1").endpoint
        assert endpoint is not None
        await honest_request(cluster, 1)
        silent: list[Stream] = []
        most = 0
        for i in range(300):  # never a byte on any of them
            silent.append(await hostile.connect(cluster.address("node-1"), timeout=1))
            await trio.testing.wait_all_tasks_blocked()
            most = max(most, endpoint.pending_streams)
            if i % 100 == 99:  # the last after all 300, more than the 256 places
                await honest_request(cluster, i)  # between the silent ones, straight through
        assert most == 16, most
        # without the eviction, the 300 would hold all 256 places and the last honest request fail
        assert refused(cluster, "pending_evicted") >= 300 - 16
        assert refused(cluster, "first_frame_timeout") == 0
        await trio.sleep(121)  # the survivors' time runs out
        assert endpoint.pending_streams == 0
        # every silent stream was closed by one of the two, the honest ones by neither (the
        # cluster's own streams between node-2 and node-1 may have taken places meanwhile)
        assert 1 <= refused(cluster, "first_frame_timeout") <= 16
        assert refused(cluster, "first_frame_timeout") + refused(cluster, "pending_evicted") == 300
        for stream in silent:  # the node closed every one of them
            with pytest.raises(StreamClosed):
                await stream.receive()

        for i in range(2000):  # a tight reconnect loop: open, close, open...
            stream = await hostile.connect(cluster.address("node-1"), timeout=1)
            await stream.aclose()
            if i % 500 == 0:
                await honest_request(cluster, 1000 + i)
        await trio.testing.wait_all_tasks_blocked()
        # none of the 2000 is kept; what is open is the honest peers' (pooled by node-2)
        assert endpoint.pending_streams == 0 and endpoint.inbound_streams <= 4, endpoint.inbound_streams
        await honest_request(cluster, 9999)


async def test_streams_beyond_the_cap_are_refused_at_once(autojump_clock: trio.testing.MockClock) -> None:
    from transports.memory import MemoryTransport

    config = {"gossip_max_streams": 8, "gossip_max_pending_streams": 64}
    async with open_cluster(2, seed=22, config=config) as cluster, \
            MemoryTransport.open(bind="evil:7946", network=cluster.network) as hostile:
        endpoint = cluster.node("node-1").endpoint
        assert endpoint is not None
        streams = [await hostile.connect(cluster.address("node-1"), timeout=1) for _ in range(20)]
        await trio.testing.wait_all_tasks_blocked()
        assert endpoint.inbound_streams == 8
        assert refused(cluster, "stream_limit") >= 12  # (node-2 holds a slot or two of its own)
        await trio.sleep(6)  # the default first-frame timeout: the slots come back
        assert endpoint.inbound_streams <= 4, endpoint.inbound_streams
        await honest_request(cluster, 1)
        del streams
