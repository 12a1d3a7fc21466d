"""The chaos lab on the real kernel: each link fault does what it says to real packets between
namespaces, healing restores the network, and the namespaces go away even when the runner is
SIGKILLed. Needs root, nft and iptables (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .lab import PREFIX, Lab, Link, sh

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("nft") and shutil.which("iptables-restore")),
                       reason="needs root, nft and iptables"),
]
ROOT = Path(__file__).resolve().parents[2]

ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9000))
print("up", flush=True)
while True:
    data, peer = s.recvfrom(2000)
    s.sendto(data, peer)
"""
PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.15)
rtts, lost, extra = [], 0, 0
for i in range(int(sys.argv[2])):
    t = time.monotonic()
    s.sendto(str(i).encode(), (sys.argv[1], 9000))
    while True:
        try:
            data, _ = s.recvfrom(100)
        except socket.timeout:
            lost += 1
            break
        if int(data) == i:
            rtts.append(time.monotonic() - t)
            break
        extra += 1  # a duplicate or a late answer to an earlier probe
rtts.sort()
print(len(rtts), lost, extra, rtts[len(rtts) // 2] if rtts else -1)
"""


def probe(lab: Lab, src: int, dst: int, count: int = 60) -> tuple[int, int, int, float]:
    out = sh("ip", "netns", "exec", lab.node(src), sys.executable, "-c", PROBE, lab.address(dst), str(count))
    got, lost, extra, median = out.split()
    return int(got), int(lost), int(extra), float(median)


def test_each_link_fault_acts_on_real_packets_and_heal_restores_them() -> None:
    with Lab(3, seed=1) as lab:
        echo = subprocess.Popen(["ip", "netns", "exec", lab.node(2), sys.executable, "-c", ECHO],
                                stdout=subprocess.PIPE)
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == b"up"
            got, lost, _, clean = probe(lab, 1, 2)
            assert (got, lost) == (60, 0) and clean < 0.05

            lab.set_link(1, 2, Link(delay=0.04))
            lab.apply()
            got, lost, _, delayed = probe(lab, 1, 2, 20)
            assert got == 20 and delayed >= 0.04  # only the way there is delayed

            lab.heal()
            lab.set_link(2, 1, Link(cut=True))  # one way: node 1's probes arrive, the echoes do not
            lab.apply()
            assert probe(lab, 1, 2, 10)[:2] == (0, 10)
            assert probe(lab, 3, 2, 10)[:2] == (10, 0)  # other links untouched

            lab.heal()
            lab.set_link(1, 2, Link(loss=0.5))
            lab.set_link(2, 1, Link(duplicate=1.0))
            lab.apply()
            got, lost, extra, _ = probe(lab, 1, 2, 40)
            assert 6 <= lost <= 34 and got + lost == 40 and extra >= got // 2

            lab.heal()
            got, lost, extra, _ = probe(lab, 1, 2, 60)
            assert (got, lost) == (60, 0) and extra <= 1
            # the runner reaches every node from the root namespace
            out = sh(sys.executable, "-c", PROBE, lab.address(2), "5").split()
            assert out[:2] == ["5", "0"]
        finally:
            echo.kill()


def test_the_namespaces_go_when_the_runner_is_killed() -> None:
    script = ("import sys, time\n"
              f"sys.path.insert(0, {str(ROOT)!r})\n"
              "from tests.chaos.lab import Lab\n"
              "lab = Lab(2).open()\n"
              "print(lab.prefix, flush=True)\n"
              "time.sleep(600)\n")
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT)
    assert runner.stdout is not None
    prefix = runner.stdout.readline().decode().strip()
    assert prefix.startswith(PREFIX)
    assert sum(n.startswith(prefix) for n in sh("ip", "netns", "list").split()) == 3
    runner.send_signal(signal.SIGKILL)
    runner.wait(10)
    deadline = time.monotonic() + 20
    while any(n.startswith(prefix) for n in sh("ip", "netns", "list").split()):
        assert time.monotonic() < deadline, "the watchdog did not remove the namespaces"
        time.sleep(0.1)
    links = sh("ip", "-o", "link", "show")
    assert f"{prefix}-r" not in links  # the root namespace's end went with the hub
