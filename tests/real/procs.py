"""Helpers for tests that run real node processes on loopback."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from dakera_actors.testing.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
#: the gossip key real test clusters are sealed with (cluster mode refuses to start without one)
TEST_GOSSIP_KEY = base64.b64encode(bytes(range(7, 39))).decode()
#: how long a node process may take to become ready: a bound, not a wait (a quiet 2-core machine
#: takes 2-5 s; three S3-backed nodes starting together beside another test load took 15-28 s)
READY_DEADLINE = 90.0


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

    def wait_healthy(self, deadline: float = READY_DEADLINE, *, path: str = "/health/ready") -> None:
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


def start_all(nodes: list[NodeProcess], deadline: float = READY_DEADLINE) -> None:
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


class WorkerFailed(AssertionError):
    """A load thread ended with an exception; the original is its ``__cause__``. An AssertionError
    so that ``wait_for`` (which treats HTTP and parse errors as "not yet") stops at once."""


class Workers:
    """Load threads whose every exception, of any type, is kept and re-raised in the test.

    A thread that dies of an unexpected exception must fail the test, not leave an empty error list
    behind; ``check()`` raises the first failure (as ``WorkerFailed`` from it) and ``finish()`` also
    fails when a thread does not stop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failures: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()

    def start(self, target: Callable[..., None], *args: Any) -> None:
        """Run ``target(*args)`` in a thread; it should loop until ``self.stop`` is set."""
        name = f"{getattr(target, '__name__', 'worker')}{args}"

        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # noqa: BLE001 - every kind is kept and re-raised by check()
                with self._lock:
                    self._failures.append((name, exc))

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def check(self) -> None:
        """Re-raise the first exception any thread ended with (naming how many there were)."""
        with self._lock:
            failures = list(self._failures)
        if failures:
            name, exc = failures[0]
            raise WorkerFailed(f"{len(failures)} load thread(s) failed; first {name}: "
                               f"{type(exc).__name__}: {exc}") from exc

    def finish(self, timeout: float = 60.0) -> None:
        """Stop the threads, wait for them, and fail on any exception or a thread still running."""
        self.stop.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        self.check()
        stuck = [t.name for t in self._threads if t.is_alive()]
        assert not stuck, f"load threads still running {timeout}s after stop: {stuck}"


class Acks:
    """Acknowledged writes with the monotonic time each acknowledgement arrived, thread safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[float, str, str]] = []  # (acknowledged at, memory id, agent)

    def add(self, mid: str, agent: str) -> None:
        with self._lock:
            self.entries.append((time.monotonic(), mid, agent))

    def snapshot(self) -> list[tuple[float, str, str]]:
        with self._lock:
            return list(self.entries)

    def between(self, start: float, end: float = float("inf")) -> list[tuple[float, str, str]]:
        """The acknowledgements that arrived strictly after ``start`` and before ``end``."""
        return [e for e in self.snapshot() if start < e[0] < end]

    def __len__(self) -> int:
        with self._lock:
            return len(self.entries)
