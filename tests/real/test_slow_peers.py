"""Slow and silent peers against a real node's gossip port, on both stream transports (``udp``:
TCP streams with length prefixes; ``websocket``: HTTP upgrades, then binary messages): hundreds of
connections that never speak, some that speak one byte at a time, some that announce a huge frame
and stall, and a tight reconnect loop. Throughout, the node answers /health and a key holder's
gossip ping; the connections it holds never exceed its caps (its open file descriptors, read from
/proc); its memory stays put; every refusal is counted in dakera_transport_refused_total; and once
the attack stops, everything it held is let go."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from dakera_actors.wire import Ping, Pong, decode_frame, encode_frame

from .procs import TEST_GOSSIP_KEY, NodeProcess, free_port, wait_for

pytestmark = pytest.mark.real

KEY = base64.b64decode(TEST_GOSSIP_KEY)
PENDING = 32  # DAKERA_GOSSIP_MAX_PENDING_STREAMS here
TIMEOUT = 2.0  # DAKERA_GOSSIP_HANDSHAKE_TIMEOUT_SECONDS here
#: ``make fuzz-peers`` sets DAKERA_FUZZ_PEERS_SCALE for a longer attack (more connections of each kind)
SCALE = max(1, int(os.environ.get("DAKERA_FUZZ_PEERS_SCALE", "1")))
SILENT, LOOPS = 200 * SCALE, 200 * SCALE
SLACK = 12  # descriptors an honest moment may add (HTTP clients, a peer's stream, the WAL)


@pytest.fixture(params=["udp", "websocket"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NodeProcess]:
    port = free_port()
    proc = NodeProcess(tmp_path, "node-1", DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID="node-1",
                       DAKERA_TRANSPORT=request.param, DAKERA_GOSSIP_BIND=f"127.0.0.1:{port}",
                       DAKERA_GOSSIP_PORT=str(port), DAKERA_BOOTSTRAP_EXPECT="1", DAKERA_GOSSIP_KEY=TEST_GOSSIP_KEY,
                       DAKERA_SHARDS="8", DAKERA_LEASE_TTL_MS="4000", DAKERA_GOSSIP_PROBE_INTERVAL_MS="2000",
                       DAKERA_GOSSIP_MAX_PENDING_STREAMS=str(PENDING),
                       DAKERA_GOSSIP_HANDSHAKE_TIMEOUT_SECONDS=str(TIMEOUT))
    try:
        yield proc.start()
    finally:
        proc.stop()


def address(node: NodeProcess) -> tuple[str, int]:
    return "127.0.0.1", int(node.env["DAKERA_GOSSIP_PORT"])


def descriptors(node: NodeProcess) -> int:
    assert node.proc is not None
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))


def rss(node: NodeProcess) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """The node's open descriptors, sampled every few milliseconds in a thread: the most it held."""

    def __init__(self, node: NodeProcess) -> None:
        self.node, self.most, self._stop = node, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(OSError):
                self.most = max(self.most, descriptors(self.node))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def refused(node: NodeProcess) -> dict[str, float]:
    text = httpx.get(node.url + "/metrics", timeout=5).text
    return {s.labels["reason"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "dakera_transport_refused" for s in f.samples}


def upgrade_request(path: str = "/stream") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def honest_ping(node: NodeProcess, transport: str, seq: int) -> None:
    """A key holder's ping on a fresh stream gets its pong, and /health answers."""
    assert httpx.get(node.url + "/health", timeout=5).status_code == 200
    frame = encode_frame(Ping(seq=seq), "node-2", (KEY,))
    if transport == "udp":
        with socket.create_connection(address(node), timeout=5) as tcp:
            tcp.sendall(struct.pack(">I", len(frame)) + frame)
            data = b""
            while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
                chunk = tcp.recv(65536)
                assert chunk, "the node closed an honest stream"
                data += chunk
        reply = data[4:]
    else:
        async def exchange() -> bytes:
            host, port = address(node)
            with trio.fail_after(5):
                async with open_websocket_url(f"ws://{host}:{port}/stream") as ws:
                    await ws.send_message(frame)
                    answer = await ws.get_message()
                    assert isinstance(answer, bytes)
                    return answer

        reply = trio.run(exchange)
    message = decode_frame(reply, keys=(KEY,), max_size=1 << 20).message
    assert isinstance(message, Pong) and message.seq == seq


def test_slow_and_silent_peers_are_bounded_refused_and_counted(node: NodeProcess) -> None:
    transport = node.env["DAKERA_TRANSPORT"]
    node.wait_healthy(path="/health")
    honest_ping(node, transport, 1)
    base_fds, base_rss = descriptors(node), rss(node)
    held: list[socket.socket] = []
    with Sampler(node) as sampler, contextlib.ExitStack() as closing:
        closing.callback(lambda: [sock.close() for sock in held])
        # 1. silent: connect and never send a byte
        for _ in range(SILENT):
            held.append(socket.create_connection(address(node), timeout=5))
        time.sleep(0.3)  # (not a wait for an outcome: the node's accept loop catches up)
        honest_ping(node, transport, 2)
        # 2. slow: one byte at a time, a byte every 50 ms, for longer than the handshake timeout
        frame = encode_frame(Ping(seq=3), "slow", (KEY,))
        payload = struct.pack(">I", len(frame)) + frame if transport == "udp" else upgrade_request()
        slow = [socket.create_connection(address(node), timeout=5) for _ in range(16)]
        held += slow
        started, sent_bytes = time.monotonic(), 0
        while time.monotonic() - started < TIMEOUT * 1.2 and sent_bytes < len(payload) - 1:
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(payload[sent_bytes:sent_bytes + 1])
            sent_bytes += 1
            time.sleep(0.05)
        # 3. a huge frame announced, a little of it sent, then nothing
        for _ in range(16):
            sock = socket.create_connection(address(node), timeout=5)
            if transport == "udp":
                sock.sendall(struct.pack(">I", 60_000) + b"x" * 100)  # under the 64 KiB a stranger may send
            else:
                sock.sendall(upgrade_request())
                assert sock.recv(4096).startswith(b"HTTP/1.1 101")
                sock.sendall(bytes([0x82, 0xFF]) + struct.pack(">Q", 2**31) + os.urandom(4) + b"x" * 100)
            held.append(sock)
        if transport == "udp":  # and over the limit: closed on the prefix
            for _ in range(4):
                with socket.create_connection(address(node), timeout=5) as sock:
                    sock.sendall(struct.pack(">I", 2**31) + b"x" * 100)
                    with contextlib.suppress(OSError):
                        sock.recv(1)
        honest_ping(node, transport, 4)
        # 4. a tight reconnect loop
        for _ in range(LOOPS):
            with socket.create_connection(address(node), timeout=5):
                pass
        honest_ping(node, transport, 5)
    most = sampler.most - base_fds
    # the websocket transport holds connections in their upgrade and upgraded streams waiting
    # for their first frame, each capped; the udp transport only the latter
    cap = PENDING * (2 if transport == "websocket" else 1) + SLACK
    assert most <= cap, f"{most} descriptors above the {base_fds} before the attack (cap {cap})"
    counts = refused(node)
    if transport == "udp":  # every silent, slow and stalled stream closed by eviction or its deadline
        assert counts["pending_evicted"] + counts["first_frame_timeout"] >= SILENT + 16 + 16, counts
        assert counts["frame_too_large"] >= 4, counts
    else:  # the silent and slow ones in their upgrade, the stalled ones before their first frame
        assert counts["handshake_evicted"] + counts["handshake_timeout"] >= SILENT + 16, counts
        assert counts["pending_evicted"] + counts["first_frame_timeout"] >= 16, counts
        assert counts["handshake_failed"] >= LOOPS // 2, counts  # the reconnect loop's, which hung up
    # once they are gone, so is everything the node held for them
    wait_for(lambda: descriptors(node) <= base_fds + 4, TIMEOUT * 3, "the attack's descriptors released")
    growth = rss(node) - base_rss
    assert growth < 48 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB"
    honest_ping(node, transport, 6)
    assert node.proc is not None and node.proc.poll() is None, node.log()
