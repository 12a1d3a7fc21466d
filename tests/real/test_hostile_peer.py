"""A hostile peer on the real UDP transport: every message type with every field mutated, sealed
with the cluster's own key (an authenticated but broken peer, the hardest case), as packets and
as stream first frames, plus unsealed garbage. The node stays up, answers /health and a gossip
ping, and its state is unchanged: lease token and fence floor, shard map version, memories."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dakera_actors.testing.cluster import free_port
from dakera_actors.wire import FrameRejected, Ping, Pong, decode_frame, encode_frame

from ..hostile import READ_ONLY, load_all_messages, mutated
from ..hostile import seal as hostile_seal
from .procs import NodeProcess, wait_for

pytestmark = pytest.mark.real

KEY = bytes(range(7, 39))
#: ``make fuzz-peers`` sets DAKERA_FUZZ_PEERS_SCALE for a longer run
SCALE = max(1, int(os.environ.get("DAKERA_FUZZ_PEERS_SCALE", "1")))
MESSAGES = load_all_messages()


def seal(tag: str, payload: Any, keys: tuple[bytes, ...] = (KEY,), sender: str = "evil") -> bytes:
    return hostile_seal(tag, payload, keys, sender)


class Peer:
    """The hostile peer's sockets: one UDP socket for packets, a TCP connection per stream."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(2.0)

    def packet(self, frame: bytes) -> None:
        if len(frame) <= 65_000:
            self.udp.sendto(frame, self.address)

    def stream(self, frame: bytes) -> None:
        with socket.create_connection(self.address, timeout=2.0) as tcp:
            with contextlib.suppress(OSError):
                tcp.sendall(struct.pack(">I", len(frame)) + frame)
                tcp.settimeout(0.05)  # take a reply if one comes at once; a long poll is cut short
                tcp.recv(65_536)

    def ping(self, seq: int) -> bool:
        self.packet(encode_frame(Ping(seq=seq), "probe", (KEY,)))
        with contextlib.suppress(TimeoutError):
            while True:
                data, _ = self.udp.recvfrom(65_536)
                with contextlib.suppress(FrameRejected):
                    msg = decode_frame(data, keys=(KEY,), max_size=65_536).message
                    if isinstance(msg, Pong) and msg.seq == seq:
                        return True
        return False


def state(node: NodeProcess, data: Path) -> dict[str, Any]:
    status = httpx.get(node.url + "/admin/cluster/status", timeout=2).json()
    lease = msgpack.unpackb((data / "lease.msgpack").read_bytes(), raw=False)
    got = httpx.get(node.url + "/v1/memory/get/m-1", params={"agent_id": "agent-1"}, timeout=2).json()
    return {"leader": status["leader"], "token": status["fencing_token"], "map": status["shard_map_version"],
            "floor": lease.get("highest"), "memory": (got["id"], got["content"])}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    port = free_port()
    proc = NodeProcess(tmp_path, "node-1", DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID="node-1",
                       DAKERA_TRANSPORT="udp", DAKERA_GOSSIP_BIND=f"127.0.0.1:{port}", DAKERA_BOOTSTRAP_EXPECT="1",
                       DAKERA_GOSSIP_KEY=base64.b64encode(KEY).decode(), DAKERA_SHARDS="8",
                       # a long lease: a scheduling stall on a loaded CI machine must not re-elect (and a
                       # slower failure detector, which a lease must not outlive)
                       DAKERA_LEASE_TTL_MS="4000", DAKERA_GOSSIP_PROBE_INTERVAL_MS="2000")
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_a_hostile_authenticated_peer_cannot_stop_or_change_a_node(node: NodeProcess, tmp_path: Path) -> None:
    node.wait_healthy()
    wait_for(lambda: httpx.get(node.url + "/admin/cluster/status").json()["shard_map_version"] > 0, 20,
             "a shard map")
    r = httpx.post(node.url + "/v1/memory/store", json={"agent_id": "agent-1", "id": "m-1", "content": "kept"})
    assert r.status_code == 200, r.text
    data = tmp_path / "node-1-data"
    before = state(node, data)
    peer = Peer(("127.0.0.1", int(node.env["DAKERA_GOSSIP_BIND"].rsplit(":", 1)[1])))
    assert peer.ping(1)
    sent = {"n": 0}

    @settings(max_examples=200 * SCALE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(tag=st.sampled_from(sorted(MESSAGES)), data=st.data(), as_stream=st.booleans())
    def fuzz(tag: str, data: st.DataObject, as_stream: bool) -> None:
        payload = data.draw(mutated(MESSAGES[tag]))
        frame = seal(tag, payload)
        try:
            decode_frame(frame, keys=(KEY,), max_size=2**31)
        except FrameRejected:
            pass  # rejected here: it must be rejected there too, whatever it is
        else:
            if tag not in READ_ONLY:
                return
        (peer.stream if as_stream else peer.packet)(frame)
        sent["n"] += 1

    # the probes of issue 13 first: each of these stopped or poisoned a node
    smap = {"token": 2**32, "version": 1, "rf": 1, "placement": [["evil"]] * 8}
    peer.stream(seal("repl.fetch", {"positions": [[0]], "wait_ms": 0}))
    peer.packet(seal("lease.announce", {"token": 2**32, "remaining": 5.0}))
    peer.stream(seal("shard.map", smap))
    peer.stream(seal("repl.position-query", {"shards": [0], "map": smap}))
    fuzz()
    # unsealed and unauthenticated frames, garbage, a huge stream frame header
    for tag in sorted(MESSAGES):
        peer.packet(msgpack.packb([1, tag, "evil", {}]))
        peer.packet(seal(tag, {}, keys=(os.urandom(32),)))
    peer.packet(os.urandom(512))
    peer.stream(os.urandom(64))
    with socket.create_connection(peer.address, timeout=2.0) as tcp:
        tcp.sendall(struct.pack(">I", 2**31) + b"x" * 100)
    assert sent["n"] > 100

    assert node.proc is not None and node.proc.poll() is None, node.log()
    assert httpx.get(node.url + "/health", timeout=2).status_code == 200
    assert peer.ping(2)
    assert state(node, data) == before
    metrics = httpx.get(node.url + "/metrics", timeout=2).text
    rejected = {line.split('reason="')[1].split('"')[0]: float(line.split()[-1])
                for line in metrics.splitlines() if line.startswith("dakera_wire_rejected_total{")}
    assert rejected["invalid"] > 50 and rejected["unsealed"] > 0 and rejected["auth"] > 0
