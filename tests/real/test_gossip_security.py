"""The gossip port of a keyed node, probed as an attacker would, over real sockets (udp transport).

Every forged, re-attributed, stale or replayed frame is refused and counted in
dakera_wire_rejected_total{reason}, and nothing it carries is stored (checked via the node's API).
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client.parser import text_string_to_metric_families

from dakera_actors.endpoint import StreamHello
from dakera_actors.replication.messages import SnapshotRequest
from dakera_actors.routing.messages import Forward, Reply
from dakera_actors.wire import Ping, decode_frame, encode_frame

from .procs import TEST_GOSSIP_KEY, NodeProcess, free_port, wait_for

pytestmark = pytest.mark.real

KEY = base64.b64decode(TEST_GOSSIP_KEY)
ROOT_KEY = "root-key-for-the-probe"
AUTH = {"Authorization": f"Bearer {ROOT_KEY}"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    gossip = free_port()
    proc = NodeProcess(tmp_path, DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID="node-1", DAKERA_GOSSIP_KEY=TEST_GOSSIP_KEY,
                       DAKERA_TRANSPORT="udp", DAKERA_GOSSIP_PORT=str(gossip), DAKERA_GOSSIP_BIND=f"127.0.0.1:{gossip}",
                       DAKERA_ROOT_API_KEY=ROOT_KEY, DAKERA_SHARDS="4").start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def gossip_addr(node: NodeProcess) -> tuple[str, int]:
    return "127.0.0.1", int(node.env["DAKERA_GOSSIP_PORT"])


def exchange(node: NodeProcess, frame: bytes, *before: bytes) -> bytes | None:
    """Send length-prefixed frames (``before``, then ``frame``) on a fresh TCP stream; the reply
    frame, or None if the node closed the stream without one."""
    with socket.create_connection(gossip_addr(node), timeout=10) as tcp:
        tcp.sendall(b"".join(struct.pack(">I", len(f)) + f for f in (*before, frame)))
        data = b""
        try:
            while chunk := tcp.recv(65536):
                data += chunk
                if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
                    return data[4:4 + struct.unpack(">I", data[:4])[0]]
        except ConnectionResetError:  # closed with our bytes unread
            pass
    return None


def rejected(node: NodeProcess) -> dict[str, float]:
    text = httpx.get(node.url + "/metrics", headers=AUTH).text
    return {s.labels["reason"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "dakera_wire_rejected" for s in f.samples if s.value}


def stored(node: NodeProcess, agent: str) -> int:
    r = httpx.get(f"{node.url}/v1/agents/{agent}/stats", headers=AUTH)
    assert r.status_code == 200, r.text
    return int(r.json()["total_memories"])


def store(agent: str) -> Forward:
    return Forward("store", json.dumps({"agent_id": agent, "content": "planted"}).encode(), {})


def reseal(frame: bytes, header_sender: str) -> bytes:
    """What a key holder could build: a valid seal whose header names another sender than the frame."""
    name_len = frame[9]
    plain = AESGCM(KEY).decrypt(frame[10 + name_len:22 + name_len], frame[22 + name_len:],
                                b"dakera-wire/2" + frame[:10 + name_len])
    name = header_sender.encode()
    header = frame[:9] + bytes([len(name)]) + name
    nonce = bytes(range(12))
    return header + nonce + AESGCM(KEY).encrypt(nonce, plain, b"dakera-wire/2" + header)


def test_forged_frames_are_refused_counted_and_store_nothing(node: NodeProcess) -> None:
    assert httpx.get(node.url + "/v1/agents/victim/stats").status_code == 401  # the API wants its key
    attacks = {
        "unsealed Forward": (encode_frame(store("victim"), "node-2"), "unsealed"),
        "unsealed SnapshotRequest": (encode_frame(SnapshotRequest(shard=0), "node-2"), "unsealed"),
        "wrong key": (encode_frame(store("victim"), "node-2", (bytes(32),)), "auth"),
    }
    good = encode_frame(store("victim"), "node-2", (KEY,))
    attacks["re-attributed header"] = (good[:10] + b"node-3" + good[16:], "auth")  # same length name
    attacks["header and frame disagree"] = (reseal(good, "node-3"), "sender")
    attacks["stale"] = (encode_frame(store("victim"), "node-2", (KEY,), now=time.time() - 120), "stale")
    attacks["from the future"] = (encode_frame(store("victim"), "node-2", (KEY,), now=time.time() + 120), "stale")
    expected: dict[str, float] = {}
    for name, (frame, reason) in attacks.items():
        assert exchange(node, frame) is None, name  # no answer: the stream is closed
        expected[reason] = expected.get(reason, 0) + 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # and over a packet
        udp.sendto(encode_frame(Ping(seq=1), "node-2"), gossip_addr(node))
    expected["unsealed"] += 1
    wait_for(lambda: rejected(node) == expected, 30, f"rejections {expected}")
    assert stored(node, "victim") == 0
    assert node.log().count("event=wire_frames_stale") == 1  # said once (clock skew shows up in the log)


def test_a_replayed_write_is_refused_even_after_the_node_restarts(node: NodeProcess) -> None:
    frame = encode_frame(store("replayed"), "node-2", (KEY,))  # as a peer holding the key sent it
    reply = exchange(node, frame)
    assert reply is not None
    answer = decode_frame(reply, keys=(KEY,), max_size=1 << 20).message
    assert isinstance(answer, Reply) and answer.status == 200
    assert exchange(node, frame) is None
    wait_for(lambda: rejected(node) == {"replay": 1}, 30, "the replay counted")
    assert stored(node, "replayed") == 1
    node.stop()  # a restart inside the window: the new process has an empty replay cache
    node.start()
    node.wait_healthy()
    assert exchange(node, frame) is None
    wait_for(lambda: rejected(node) == {"stale": 1}, 30, "the replay after a restart counted")
    assert stored(node, "replayed") == 1


def test_an_unauthenticated_peer_cannot_make_the_node_buffer_big_frames(node: NodeProcess) -> None:
    streams = []
    try:
        for _ in range(64):  # each announces a 32 MiB frame and starts sending it
            tcp = socket.create_connection(gossip_addr(node), timeout=10)
            tcp.sendall(struct.pack(">I", 32 * 1024 * 1024 - 1) + b"x" * 65536)
            streams.append(tcp)
        for tcp in streams:  # each was closed on its length prefix, before its body was kept
            try:
                while tcp.recv(65536):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for tcp in streams:
            tcp.close()
    # a key holder's big request still goes through: a small sealed hello lifts the limit
    big = Forward("store", json.dumps({"agent_id": "big", "content": "y" * 99_000}).encode(), {})
    frame = encode_frame(big, "node-2", (KEY,))
    assert len(frame) > 64 * 1024
    assert exchange(node, frame) is None  # without the hello: refused like any stranger's
    reply = exchange(node, frame, encode_frame(StreamHello(), "node-2", (KEY,)))
    assert reply is not None and decode_frame(reply, keys=(KEY,), max_size=1 << 20).message.status == 200
    assert stored(node, "big") == 1
    assert httpx.get(node.url + "/health").status_code == 200
