"""The standalone node as a real process: `python -m dakera_actors` on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dakera_actors.wal.record import HEADER, HEADER_SIZE, scan

from .procs import ROOT, NodeProcess, free_port, wait_for

pytestmark = pytest.mark.real


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path).start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def test_answers_health_and_metrics(node: NodeProcess) -> None:
    r = httpx.get(node.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "healthy" and r.json()["healthy"] is True
    metrics = httpx.get(node.url + "/metrics")
    assert metrics.status_code == 200
    names = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"dakera_gossip_members", "dakera_replication_lag_ms", "dakera_shard_balance",
            "dakera_leader_lease_remaining_ms", "dakera_forwarded_requests"} <= names


@pytest.fixture
def patient_node(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node with the longest shutdown grace (60 s), longer than the waits below: exiting within
    them, it did not sit out the grace with nothing in flight (a condition, not a stopwatch)."""
    proc = NodeProcess(tmp_path, DAKERA_SHUTDOWN_GRACE_SECONDS="60").start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def test_sigterm_exits_zero_without_waiting_out_the_grace(patient_node: NodeProcess) -> None:
    patient_node.signal(signal.SIGTERM)
    assert patient_node.wait(timeout=45) == 0
    assert "node_stopped" in patient_node.log()


def test_sigint_exits_zero(patient_node: NodeProcess) -> None:
    patient_node.signal(signal.SIGINT)
    assert patient_node.wait(timeout=45) == 0


def test_in_flight_request_finishes_during_graceful_stop(node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
        body = b'{"dry_run": true}'
        head = (f"POST /admin/cluster/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head + body[:5])  # the request is now in flight, its body half sent
        node.signal(signal.SIGTERM)
        # the node has begun its graceful stop
        wait_for(lambda: "node_stopping" in node.log(), 30, "node_stopping in the log")
        sock.sendall(body[5:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 405"), response[:200]
    assert b'"code":"METHOD_NOT_ALLOWED"' in response
    assert node.wait(timeout=30) == 0


@pytest.mark.parametrize("variable,value", [
    ("DAKERA_PORT", "not-a-port"),
    ("DAKERA_CLUSTER_MODE", "perhaps"),
    ("DAKERA_REPLICATION_FACTOR", "0"),
    ("DAKERA_GOSSIP_KEY", "%%%"),
    ("DAKERA_REDIS_URL", "redis://:secret@cache:port"),
    ("DAKERA_REDIS_TIMEOUT_MS", "0"),
    ("DAKERA_CACHE_TTL_SECONDS", "forever"),
    ("DAKERA_EMBEDDER", "wordllama:512"),
    ("DAKERA_EMBEDDER", "word2vec"),
])
def test_bad_environment_exits_2_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    env = dict(NodeProcess(tmp_path).env, **{variable: value})
    done = subprocess.run([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], done.stderr


def test_cluster_mode_without_a_gossip_key_exits_2_naming_it(tmp_path: Path) -> None:
    env = dict(NodeProcess(tmp_path).env, DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID="node-1")
    done = subprocess.run([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dakera_actors: configuration error: DAKERA_GOSSIP_KEY:"), lines
    assert "DAKERA_GOSSIP_INSECURE=true" in lines[0]


def test_a_missing_model_file_exits_2_naming_the_embedder_and_writes_nothing(tmp_path: Path) -> None:
    # the node's own entry point, with the model folder pointed at an empty directory
    empty = tmp_path / "no-model"
    empty.mkdir()
    code = ("import sys, pathlib; import dakera_actors.search.embed as e; "
            f"e.wordllama_dir = lambda: pathlib.Path({str(empty)!r}); "
            "from dakera_actors.__main__ import main; sys.exit(main())")
    env = NodeProcess(tmp_path / "node").env
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dakera_actors: configuration error: DAKERA_EMBEDDER:"), lines
    assert "l2_supercat_256.safetensors" in lines[0]
    data = Path(env["DAKERA_DATA_DIR"])  # the model loads before storage opens: nothing written
    assert not data.exists() or [p.name for p in data.rglob("*") if p.is_file() and p.stat().st_size] == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])  # from a snapshot / from the WAL alone
def test_data_of_the_old_default_embedder_is_re_embedded_by_the_new_one(tmp_path: Path, stop: int) -> None:
    """An upgrade: data stored under `hashing` (the default before wordllama), the node started
    again on the new default. It serves at once (recall uses the old vectors until a shard's new
    ones are complete) and re-embeds every shard in the background; then recall is by meaning."""
    old = NodeProcess(tmp_path, DAKERA_EMBEDDER="hashing").start()
    try:
        old.wait_healthy()
        for content in ("My daughter has started taking violin lessons", "Learning what the tax rules are is tedious",
                        "The instrument panel of the car is broken", "What time is the meeting tomorrow"):
            r = httpx.post(old.url + "/v1/memory/store", json={"agent_id": "a", "content": content})
            assert r.status_code == 200
        old.signal(stop)
        old.wait(timeout=30)
    finally:
        old.stop()
    new = NodeProcess(tmp_path, DAKERA_PORT=str(free_port())).start()  # the same data dir, the new default
    try:
        new.wait_healthy()

        def done() -> bool:
            return httpx.get(new.url + "/ops/diagnostics", timeout=5).json()["embedding"]["shards_remaining"] == 0

        wait_for(done, 60, "the old data re-embedded")
        # distractors share the question's words; only the new vectors find the meaning
        found = httpx.post(new.url + "/v1/memory/recall",
                           json={"agent_id": "a", "query": "what music does the kid study", "routing": "vector"}).json()
        assert [m["content"] for m in found["memories"]][:1] == ["My daughter has started taking violin lessons"]
    finally:
        new.stop()


def test_second_process_on_the_same_data_dir_exits_2(node: NodeProcess, tmp_path: Path) -> None:
    env = dict(node.env, DAKERA_PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-m", "dakera_actors"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "in use" in done.stderr


def test_cluster_mode_counts_garbage_on_the_gossip_port(tmp_path: Path) -> None:
    gossip = free_port()
    # unkeyed on purpose: the plain-frame checks (a keyed node calls all of these "unsealed")
    proc = NodeProcess(tmp_path, DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID="node-1", DAKERA_GOSSIP_INSECURE="true",
                       DAKERA_GOSSIP_PORT=str(gossip), DAKERA_GOSSIP_BIND=f"127.0.0.1:{gossip}").start()
    try:
        proc.wait_healthy()
        warning = next(line for line in proc.log().splitlines() if "event=gossip_insecure" in line)
        assert "level=warning" in warning and "bypasses the API key" in warning
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for payload in (b"\x00garbage", b"\x94\x02\xa4ping\xa1x\x80", b"\xd6" + b"x" * 40):
                udp.sendto(payload, ("127.0.0.1", gossip))

        def rejected() -> dict[str, float]:
            text = httpx.get(proc.url + "/metrics").text
            return {s.labels["reason"]: s.value for f in text_string_to_metric_families(text)
                    if f.name == "dakera_wire_rejected" for s in f.samples}

        wait_for(lambda: sum(rejected().values()) >= 3, 30, "three rejections counted")
        counts = rejected()
        assert counts["malformed"] == 1 and counts["version"] == 1 and counts["sealed"] == 1
        assert httpx.get(proc.url + "/health").status_code == 200
    finally:
        proc.stop()


def test_a_damaged_wal_exits_3_with_one_line_naming_the_damage_and_the_option(tmp_path: Path) -> None:
    proc = NodeProcess(tmp_path).start()
    try:
        proc.wait_healthy()
        for i in range(10):
            r = httpx.post(proc.url + "/v1/memory/store", json={"agent_id": "a1", "content": f"memory {i}"}, timeout=10)
            assert r.status_code == 200, r.text
        # killed: a clean stop would leave snapshots holding every record, and this is about the log
        proc.signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.stop()
    (segment,) = (tmp_path / "node-data" / "wal").glob("*.wal")
    data = bytearray(segment.read_bytes())
    assert len(scan(bytes(data)).records) == 10
    offset = _record_start(bytes(data), 4)
    data[offset + 20] ^= 0x5A  # inside the fifth record: five valid records follow it
    segment.write_bytes(bytes(data))

    done = subprocess.run([sys.executable, "-m", "dakera_actors"], env=proc.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dakera_actors: cannot start: WAL segment ") and "\n" not in last
    assert f"{segment.name} is damaged at offset {offset}" in last and "DAKERA_WAL_RECOVERY=truncate" in last
    assert segment.read_bytes() == bytes(data)  # nothing was cut

    # the operator's explicit choice: start without what follows the damage, loudly
    again = NodeProcess(tmp_path, DAKERA_PORT=str(proc.port), DAKERA_WAL_RECOVERY="truncate").start()
    try:
        again.wait_healthy()
        listed = httpx.get(again.url + "/v1/agents/a1/memories", params={"limit": 100}, timeout=10).json()
        assert sorted(m["content"] for m in listed) == [f"memory {i}" for i in range(4)]
        assert "wal_damage_dropped" in again.log() and "records_dropped=5" in again.log()
    finally:
        again.stop()


def _record_start(data: bytes, index: int) -> int:
    """Where record ``index`` (from 0) of a segment starts."""
    pos = 0
    for _ in range(index):
        _magic, length, _crc = HEADER.unpack_from(data, pos)
        pos += HEADER_SIZE + length
    return pos
