"""Helpers for tests that run real node processes on loopback."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from dakera_actors.testing.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
#: the gossip key real test clusters are sealed with (cluster mode refuses to start without one)
TEST_GOSSIP_KEY = base64.b64encode(bytes(range(7, 39))).decode()


class NodeProcess:
    """``python -m dakera_actors`` with the given environment, stdout/stderr captured to files."""

    def __init__(self, tmp: Path, name: str = "node", **env: str) -> None:
        self.port = int(env.pop("DAKERA_PORT", 0) or free_port())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DAKERA_")}
        self.env.update({"DAKERA_HOST": "127.0.0.1", "DAKERA_PORT": str(self.port),
                         "DAKERA_DATA_DIR": str(tmp / f"{name}-data"), **env})
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> NodeProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "dakera_actors"], env=self.env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, deadline: float = 20.0, *, path: str = "/health/ready") -> None:
        """Poll ``path`` (readiness by default: storage recovered, cluster joined) until it answers
        200, the process dies, or the deadline passes."""
        assert self.proc is not None
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"node not healthy after {deadline}s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds (HTTP errors and half-formed answers count as not yet);
    returns the seconds it took, or fails naming ``what``."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def start_all(nodes: list[NodeProcess], deadline: float = 30.0) -> None:
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_healthy(deadline)


def cluster_processes(tmp: Path, n: int, *, seeds: int | None = None, **env: str) -> list[NodeProcess]:
    """``n`` cluster-mode nodes on loopback (not started), each seeded with the gossip addresses
    of the first ``seeds`` nodes (all others when None), like a production deployment; sealed
    with TEST_GOSSIP_KEY unless ``env`` names another DAKERA_GOSSIP_KEY (or "" and
    DAKERA_GOSSIP_INSECURE=true)."""
    env = {"DAKERA_GOSSIP_KEY": TEST_GOSSIP_KEY, **env}
    gossip = [free_port() for _ in range(n)]
    seed_ports = gossip if seeds is None else gossip[:seeds]
    return [NodeProcess(tmp, f"node-{i + 1}", DAKERA_CLUSTER_MODE="true", DAKERA_NODE_ID=f"node-{i + 1}",
                        DAKERA_GOSSIP_PORT=str(port), DAKERA_GOSSIP_BIND=f"127.0.0.1:{port}",
                        DAKERA_CLUSTER_SEEDS=",".join(f"127.0.0.1:{p}" for p in seed_ports if p != port),
                        **env)
            for i, port in enumerate(gossip)]


@contextlib.contextmanager
def running(nodes: list[NodeProcess]) -> Iterator[list[NodeProcess]]:
    """Start every node, wait until each is ready, and kill whatever is left at the end."""
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_healthy()
        yield nodes
    finally:
        for node in nodes:
            node.stop()
