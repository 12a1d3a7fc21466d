"""HTTP abuse against a real node process: many connections, big bodies, nested JSON, and more
requests than the limit, over real sockets through Hypercorn."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .procs import NodeProcess, wait_for

pytestmark = pytest.mark.real

LIMIT = 8


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path, DAKERA_MAX_CONNECTIONS=str(LIMIT), DAKERA_MAX_BODY_BYTES=str(1024 * 1024)).start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP/1.1 answer: headers, then content-length bytes (or up to EOF)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
        if sep and length and len(body) >= length[0]:
            break
    return data


def test_the_connection_limit_holds_and_the_node_answers_afterwards(node: NodeProcess) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(LIMIT):  # kept-alive connections, as a slow or hostile client keeps them
            sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
            held.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")  # served: it counts now
            assert read_answer(sock).startswith(b"HTTP/1.1 200")
        for _ in range(3 * LIMIT):  # every one beyond the limit is turned away at once
            with socket.create_connection(("127.0.0.1", node.port), timeout=5) as extra:
                answer = read_answer(extra)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"retry-after: 1" in answer.lower() and b"SERVICE_UNAVAILABLE" in answer
        # the held connections still work: they were served, not dropped
        held[0].sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert read_answer(held[0]).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: httpx.get(node.url + "/health", timeout=2).status_code == 200, 30, "health after the flood")
    shed = [line for line in httpx.get(node.url + "/metrics", timeout=10).text.splitlines()
            if line.startswith('dakera_http_shed_total{reason="connections"}')]
    assert shed and float(shed[0].split()[-1]) == 3 * LIMIT, shed
    assert "Traceback" not in node.log()


def test_big_and_nested_bodies_over_real_http(node: NodeProcess) -> None:
    with httpx.Client(base_url=node.url, timeout=10) as http:
        big = http.post("/v1/memory/store", content=b'{"agent_id":"a","content":"' + b"x" * (2 * 1024 * 1024) + b'"}',
                        headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["code"] == "PAYLOAD_TOO_LARGE"
        deep = http.post("/v1/memory/store", content=b"[" * 100_000 + b"]" * 100_000,
                         headers={"content-type": "application/json"})
        assert deep.status_code == 400 and deep.json()["code"] == "INVALID_REQUEST"
        assert http.get("/v1/agents").json() == []
        assert http.get("/health").status_code == 200
    assert "RecursionError" not in node.log() and "Traceback" not in node.log()
