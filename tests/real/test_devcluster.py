"""`make cluster`: three real node processes on loopback, stopped together by Ctrl-C."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .procs import ROOT

pytestmark = pytest.mark.real


def consecutive_free_ports(count: int) -> int:
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20000, 60000)
        socks = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def test_three_processes_start_and_stop_on_ctrl_c(tmp_path: Path) -> None:
    http, gossip = consecutive_free_ports(3), consecutive_free_ports(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dakera_actors.devcluster", "--nodes", "3", "--base-port", str(http),
         "--base-gossip-port", str(gossip), "--data-root", str(tmp_path / "cluster")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        healthy: set[str] = set()
        while len(healthy) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "cluster did not come up"
            for i in range(3):
                try:
                    r = httpx.get(f"http://127.0.0.1:{http + i}/health", timeout=0.5)
                    healthy.add(r.json()["node_id"])
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        assert healthy == {"node-1", "node-2", "node-3"}
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        for i in (1, 2, 3):
            assert f"node-{i} exited with code 0" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
