"""Five real node processes on loopback find each other over UDP/TCP, see a kill -9, and a restart."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .procs import NodeProcess, cluster_processes, running

pytestmark = pytest.mark.real


def wait_for(condition: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def states(node: NodeProcess) -> dict[str, str]:
    try:
        return {m["id"]: m["state"] for m in httpx.get(node.url + "/admin/cluster/nodes", timeout=1).json()}
    except httpx.HTTPError:
        return {}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    with running(cluster_processes(tmp_path, 5, seeds=3)) as nodes:
        yield nodes


def test_five_processes_agree_detect_a_kill_and_a_restart(cluster: list[NodeProcess]) -> None:
    ids = {f"node-{i}" for i in range(1, 6)}
    wait_for(lambda: all(states(n) == dict.fromkeys(ids, "Alive") for n in cluster), 60, "five Alive members")
    for node in cluster:
        ready = httpx.get(node.url + "/health/ready")
        assert ready.status_code == 200
        status = httpx.get(node.url + "/admin/cluster/status").json()
        assert (status["nodes"], status["alive"]) == (5, 5)
    victim, survivors = cluster[3], cluster[:3] + cluster[4:]
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    wait_for(lambda: all(states(n).get("node-4") == "Dead" for n in survivors), 60, "node-4 Dead everywhere")
    assert httpx.get(survivors[0].url + "/admin/cluster/status").json()["alive"] == 4
    victim.start()
    victim.wait_healthy()
    wait_for(lambda: all(states(n).get("node-4") == "Alive" for n in survivors), 60, "node-4 Alive again")
    wait_for(lambda: states(victim) == dict.fromkeys(ids, "Alive"), 60, "the restarted node's full view")


def test_garbage_on_the_gossip_port_is_dropped_and_counted(cluster: list[NodeProcess]) -> None:
    ids = {f"node-{i}" for i in range(1, 6)}
    wait_for(lambda: all(states(n) == dict.fromkeys(ids, "Alive") for n in cluster), 60, "five Alive members")
    target = cluster[0]
    port = int(target.env["DAKERA_GOSSIP_PORT"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for payload in (b"\x00" * 10, b"\x94\x01\xaaswim.gossip\xa4evil\x91\x80", b"\x94\x01\xa4nope\xa1x\x80"):
            udp.sendto(payload, ("127.0.0.1", port))
    with socket.create_connection(("127.0.0.1", port)) as tcp:  # a stream with a lying length prefix
        tcp.sendall(b"\xff\xff\xff\xff garbage")

    def metric(prefix: str) -> float:
        text = httpx.get(target.url + "/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    wait_for(lambda: metric("dakera_wire_rejected_total") >= 3, 30, "rejections counted")
    probes = metric("dakera_swim_probes_total")
    # a few more protocol periods after the garbage: the node kept probing and its view held
    wait_for(lambda: metric("dakera_swim_probes_total") >= probes + 3, 30, "probing to go on")
    assert states(target) == dict.fromkeys(ids, "Alive")
