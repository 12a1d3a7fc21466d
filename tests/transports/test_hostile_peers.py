"""A hostile peer on the memory and WebSocket transports, in process: the frame fuzzer of
``tests/real/test_hostile_peer.py`` (every message type with its fields mutated, sealed with the
cluster's own key) plus garbage, truncated, oversized, unkeyed, wrongly keyed, re-attributed,
stale and replayed frames, as packets and as the first frames of streams, at one node of a
three-node cluster. The node stays healthy and answers an honest peer, its view of the cluster
(members, leader, fencing token, shard map) is unchanged, every frame is counted under the
reason the wire rules give it (computed here for each frame with the node's own decoder), and
a second flood leaves its memory where the first did (tracemalloc)."""

from __future__ import annotations

import gc
import os
import random
import struct
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dakera_actors.endpoint import UNAUTHENTICATED_FRAME_LIMIT
from dakera_actors.testing import open_cluster
from dakera_actors.testing.cluster import Cluster, cluster_key
from dakera_actors.transport import MAX_PACKET_SIZE, StreamClosed, Transport, TransportError
from dakera_actors.wire import (
    REJECT_REASONS,
    SEAL_MARKER,
    VERSION,
    FrameRejected,
    Ping,
    ReplayCache,
    decode_frame,
    encode_frame,
)

from ..hostile import READ_ONLY, load_all_messages, mutated, seal
from ..waiting import eventually_async

SEED = 20
KEY = cluster_key(SEED)
MESSAGES = load_all_messages()
WIRE = "dakera_wire_rejected_total"
REFUSED = "dakera_transport_refused_total"


def fuzz_payloads(examples: int) -> list[tuple[str, Any]]:
    """(tag, payload) pairs, every message type with fields mutated: drawn once by hypothesis, sent
    later (the cluster runs in trio; hypothesis only draws)."""
    drawn: list[tuple[str, Any]] = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(tag=st.sampled_from(sorted(MESSAGES)), data=st.data())
    def draw(tag: str, data: st.DataObject) -> None:
        drawn.append((tag, data.draw(mutated(MESSAGES[tag]))))

    draw()
    return drawn


#: ``make fuzz-peers`` sets DAKERA_FUZZ_PEERS_SCALE for a longer flood (more examples, more rounds)
SCALE = max(1, int(os.environ.get("DAKERA_FUZZ_PEERS_SCALE", "1")))
FUZZ = fuzz_payloads(160 * SCALE)


class Flood:
    """The frames a hostile peer sends, each with the reason the node must count it under: a
    ``dakera_wire_rejected_total`` reason (``wire:<reason>``), a transport refusal
    (``refused:<reason>``) or ``accepted``, worked out with the node's own decoder."""

    def __init__(self, wall: Callable[[], float], websocket: bool) -> None:
        self.wall = wall
        self.websocket = websocket
        self.replay = ReplayCache(0)
        self.expected: Counter[str] = Counter()
        self.items: list[tuple[bool, bytes]] = []  # (as a stream, frame)

    def verdict(self, frame: bytes, as_stream: bool) -> str:
        if as_stream and len(frame) > UNAUTHENTICATED_FRAME_LIMIT:
            return "refused:frame_too_large"  # the length, before any byte of it is kept
        if not as_stream and len(frame) > MAX_PACKET_SIZE and self.websocket:
            return "refused:packet_oversized"  # the WebSocket transport drops it before decoding
        try:
            decode_frame(frame, keys=(KEY,), max_size=(1 << 30) if as_stream else MAX_PACKET_SIZE,
                         now=self.wall(), replay=self.replay)
        except FrameRejected as exc:
            return f"wire:{exc.reason}"
        return "accepted"

    def add(self, frame: bytes, as_stream: bool, *, only_rejected: bool = False, tag: str = "") -> None:
        if not as_stream and self.websocket and len(frame) > UNAUTHENTICATED_FRAME_LIMIT:
            as_stream = True  # one packet this big would close the packet link with what follows it
        verdict = self.verdict(frame, as_stream)
        if verdict == "accepted" and only_rejected and tag not in READ_ONLY:
            return  # a valid lease or map from a key holder is the lease and map rules' business
        self.expected[verdict] += 1
        self.items.append((as_stream, frame))

    def build(self, rng: Any) -> None:
        now = self.wall()
        for i, (tag, payload) in enumerate(FUZZ):
            self.add(seal(tag, payload, (KEY,), now=now), as_stream=i % 2 == 1, only_rejected=True, tag=tag)
        ping = encode_frame(Ping(seq=7), "evil", (KEY,), now=now)
        for as_stream in (False, True):
            for tag in sorted(MESSAGES):
                self.add(seal(tag, {}, ()), as_stream)  # unsealed
                self.add(seal(tag, {}, (os.urandom(32),), now=now), as_stream)  # someone else's key
            for size in (0, 1, 9, 40, 300):
                self.add(rng.randbytes(size), as_stream)  # garbage
                self.add(bytes([0xD6]) + rng.randbytes(size), as_stream)  # garbage behind the seal marker
            for cut in (1, 9, 20, len(ping) - 17, len(ping) - 1):
                self.add(ping[:cut], as_stream)  # truncated
            self.add(ping[:10] + b"eviL" + ping[14:], as_stream)  # the header's sender changed
            self.add(resealed(now), as_stream)  # sealed by a key holder as someone else
            self.add(seal("no.such.type", {}, (KEY,), now=now), as_stream)
            self.add(seal("ping", {"seq": 1}, (KEY,), now=now) + b"\x00" * 70_000, as_stream)  # huge
            self.add(encode_frame(Ping(seq=1), "evil", (KEY,), now=now - 600), as_stream)  # stale
            self.add(encode_frame(Ping(seq=1), "evil", (KEY,), now=now + 600), as_stream)  # from the future
            self.add(bytes([0xD5]) + ping[1:], as_stream)  # the old seal layout
            self.add(seal("ping", {"seq": 1}, (KEY,), now=now) + os.urandom(4000), as_stream)  # oversized
        self.add(ping, False)
        self.add(ping, False)  # replayed
        self.add(ping, True)  # and again on a stream


def resealed(now: float) -> bytes:
    """What only a key holder can build: a valid seal whose header names another sender than
    the frame inside."""
    plain = msgpack.packb([VERSION, "ping", "evil", {"seq": 3}], use_bin_type=True)
    name = b"node-2"
    header = bytes([SEAL_MARKER]) + struct.pack(">Q", int(now * 1000)) + bytes([len(name)]) + name
    nonce = os.urandom(12)
    return header + nonce + AESGCM(KEY).encrypt(nonce, plain, b"dakera-wire/2" + header)


async def status(cluster: Cluster, node_id: str) -> dict[str, Any]:
    async with cluster.client(node_id) as http:
        r = await http.get("/admin/cluster/status")
        assert r.status_code == 200, r.text
        body = r.json()
    return {k: body[k] for k in ("status", "leader", "fencing_token", "nodes", "alive", "shard_map_version",
                                 "shard_distribution", "unassigned_shards")}


def counts(cluster: Cluster, node_id: str) -> Counter[str]:
    """The node's wire rejections and transport refusals, by reason, as its /metrics reports them."""
    node = cluster.node(node_id)
    found: Counter[str] = Counter()
    assert node.transport is not None and node.endpoint is not None
    refusals = set(node.transport.refusals()) | set(node.endpoint.refused)
    for name, kind, reasons in ((WIRE, "wire", REJECT_REASONS), (REFUSED, "refused", sorted(refusals))):
        for reason in reasons:
            value = node.metrics.sample(name, reason=reason)
            if value:
                found[f"{kind}:{reason}"] = int(value)
    return found


async def send_all(hostile: Transport, target: str, flood: Flood, websocket: bool) -> None:
    for as_stream, frame in flood.items:
        if as_stream:
            try:
                stream = await hostile.connect(target, timeout=5)
            except TransportError:
                raise AssertionError("the node refused a connection during the flood") from None
            try:
                await stream.send(frame)
                with trio.move_on_after(0.5 if websocket else 5):
                    await stream.receive()  # the node closes it (rejected) or answers (a valid read)
            except StreamClosed:
                pass
            finally:
                await stream.aclose()
        else:
            await hostile.send_packet(target, frame)
            if websocket:  # keep the hostile side's own packet queue from overflowing
                await trio.sleep(0.002)
            else:
                await trio.lowlevel.checkpoint()


async def attack(cluster: Cluster, hostile: Transport, *, websocket: bool, rounds: int,
                 measure_memory: bool = False) -> None:
    target = cluster.address("node-1")
    honest = cluster.node("node-2").endpoint
    assert honest is not None
    async def settled() -> bool:
        view = await status(cluster, "node-1")
        return view["alive"] == 3 and view["leader"] is not None and view["shard_map_version"] > 0

    await eventually_async(settled, timeout=60)
    before_view = await status(cluster, "node-1")
    assert before_view["alive"] == 3 and before_view["shard_map_version"] > 0, before_view
    rng = random.Random(SEED)
    sizes = []
    expected_total: Counter[str] = Counter()
    for round_ in range(rounds):
        flood = Flood(cluster.wall_clock, websocket)
        flood.build(rng)
        before = counts(cluster, "node-1")
        if measure_memory and round_ > 0:  # traced from the end of the first flood on
            if not tracemalloc.is_tracing():
                tracemalloc.start()
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
        await send_all(hostile, target, flood, websocket)
        want = {k: v for k, v in flood.expected.items() if k != "accepted"}
        expected_total += Counter(want)

        def delta(before: Counter[str] = before) -> Counter[str]:
            now = counts(cluster, "node-1")
            return Counter({k: now[k] - before[k] for k in now if now[k] != before[k]})

        # simulated seconds on the memory transport, where nothing is in flight for long
        with trio.move_on_after(30 if websocket else 0.5):
            while not all(delta()[k] >= v for k, v in want.items()):  # noqa: ASYNC110 - polling counters
                await trio.sleep(0.05)
        got = delta()
        missing = {k: (v, got[k]) for k, v in want.items() if got[k] != v}
        # every frame counted under its own reason, nothing else refused (a valid read-only frame
        # from a key holder may still fail in its handler: counted as handler_error)
        extra = {k: v for k, v in got.items() if k not in want and k != "wire:handler_error"}
        assert not missing and not extra, f"round {round_}: (expected, counted) {missing}, unexpected {extra}"
        # the flood holds every kind of refusal the wire rules know of (so a decoder that stopped
        # refusing one would show here, not only in a node that agrees with it)
        kinds = {"wire:invalid", "wire:unsealed", "wire:auth", "wire:malformed", "wire:sender", "wire:unknown_type",
                 "wire:stale", "wire:version", "wire:replay", "refused:frame_too_large",
                 "refused:packet_oversized" if websocket else "wire:oversized"}
        assert len(flood.items) > 120 * SCALE + 150 and kinds <= set(want), (len(flood.items), kinds - set(want))
        assert getattr(hostile, "packets_unsent", 0) == 0
    if measure_memory:
        gc.collect()
        sizes.append(tracemalloc.get_traced_memory()[0])
        # two floods may warm caches; the third must not leave its frames behind (a flood is
        # about 210 KB, 140 KB of it through the decoder)
        assert sizes[-1] - sizes[-2] < 48 * 1024, f"traced bytes at the 2nd flood, the 3rd, after it: {sizes}"
    # the node is well and its view unchanged
    assert await honest.ping(target, timeout=5)
    reply = await honest.request(target, Ping(seq=99), timeout=5)
    assert reply.sender == "node-1" and reply.message.seq == 99
    async with cluster.client("node-1") as http:
        assert (await http.get("/health")).status_code == 200
    assert await status(cluster, "node-1") == before_view
    endpoint = cluster.node("node-1").endpoint
    assert endpoint is not None and endpoint.pending_streams == 0


async def test_a_hostile_peer_on_the_memory_transport(autojump_clock: trio.testing.MockClock) -> None:
    from transports.memory import MemoryTransport

    try:
        async with open_cluster(3, seed=SEED) as cluster, \
                MemoryTransport.open(bind="evil:7946", network=cluster.network) as hostile:
            hostile.max_packet_size = 1 << 20  # it sends what the node must refuse
            await attack(cluster, hostile, websocket=False, rounds=2 + SCALE, measure_memory=True)
    finally:
        tracemalloc.stop()


@pytest.mark.real
async def test_a_hostile_peer_on_the_websocket_transport() -> None:
    from transports.websocket import WebSocketTransport

    async with open_cluster(3, seed=SEED, transport="websocket",
                            config={"gossip_probe_interval_ms": 2000, "lease_ttl_ms": 4000}) as cluster, \
            WebSocketTransport.open(bind="127.0.0.1:0") as hostile:
        hostile.max_packet_size = UNAUTHENTICATED_FRAME_LIMIT  # it sends what the node must refuse
        await attack(cluster, hostile, websocket=True, rounds=SCALE)
