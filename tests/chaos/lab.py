"""The chaos lab's network: one network namespace per node, joined through veth pairs to a bridge
in a hub namespace, and every network fault the runner injects, done by the kernel where this
kernel can and by :mod:`tests.chaos.nfqueue` where it cannot.

- cuts (symmetric, one-way, any pattern of them), loss and duplication: one nftables table
  (``bridge`` family, forward hook) in the hub, rebuilt atomically from the wanted link state
  (``nft -f``) at each change;
- delay, jitter and the reordering they cause: no ``sch_netem`` in this kernel, so the hub sends a
  delayed link's packets to an NFQUEUE (iptables, the bridge passing them through
  ``br_netfilter``), and the delayer process holds their verdicts.

The runner reaches the nodes from the root namespace through one more veth pair to the bridge.
Everything is named ``dkc<pid>-*``. A watchdog process, holding the read end of a pipe only the
runner writes, deletes the namespaces (and kills what runs in them) when the runner exits in any
way, SIGKILL included; a new lab also removes what a dead runner's watchdog could not.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys

import attrs

#: each lab takes the first free 10.231.N.0/24 (N from 0), so labs can run side by side
SUBNET_BASE = "10.231"
PREFIX = "dkc"
_NAME = re.compile(rf"^{PREFIX}(\d+)-")


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=stdin)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@attrs.define
class Link:
    """What one direction between two nodes suffers. ``cut``: nothing passes; ``loss`` and
    ``duplicate``: per-packet probabilities; ``delay``/``jitter`` in seconds."""

    cut: bool = False
    loss: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.cut and not self.loss and not self.duplicate and not self.delay and not self.jitter


def _chance(p: float) -> str:
    """An nft match true for a fraction ``p`` of packets (empty: every packet)."""
    return "" if p >= 1 else f"numgen random mod 10000 < {max(1, round(p * 10000))}"


def stale_labs() -> list[str]:
    """Namespaces of labs whose runner is no longer alive."""
    out = []
    for name in sh("ip", "netns", "list").split():
        m = _NAME.match(name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            out.append(name)
    return out


def remove_namespaces(names: list[str]) -> None:
    """Kill every process inside each namespace, then delete it (missing ones are fine)."""
    for name in names:
        for pid in sh("ip", "netns", "pids", name, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for prefix in sorted({name.split("-", 1)[0] for name in names}):
        # the root namespace's end of the runner's veth: deleted here, not left to the kernel's
        # asynchronous clean-up of the hub namespace (which can lag under load)
        sh("ip", "link", "del", f"{prefix}-r", check=False)
    for name in names:
        sh("ip", "netns", "del", name, check=False)


class Lab:
    """``n`` node namespaces (``node(i)``, address ``address(i)``, i from 1) on a bridge."""

    def __init__(self, n: int, *, seed: int = 0) -> None:
        if not 1 <= n <= 60:
            raise ValueError("a lab holds 1..60 nodes")
        self.n = n
        self.seed = seed
        self.prefix = f"{PREFIX}{os.getpid()}"
        self.hub = f"{self.prefix}-hub"
        self.links: dict[tuple[int, int], Link] = {}
        self._delayer: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self._up = False
        self.subnet = f"{SUBNET_BASE}.0"  # chosen again by open()

    # -- names ------------------------------------------------------------------------
    def node(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def address(self, i: int) -> str:
        return f"{self.subnet}.{10 + i}"

    @property
    def namespaces(self) -> list[str]:
        return [self.hub, *(self.node(i) for i in range(1, self.n + 1))]

    def queue(self, src: int, dst: int) -> int:
        return src * 64 + dst

    # -- life -------------------------------------------------------------------------
    def open(self) -> Lab:
        remove_namespaces(stale_labs())
        used = set(re.findall(rf"inet {re.escape(SUBNET_BASE)}\.(\d+)\.", sh("ip", "-o", "-4", "addr", "show")))
        self.subnet = f"{SUBNET_BASE}.{next(n for n in range(256) if str(n) not in used)}"
        self._start_watchdog()
        self._up = True
        hub = self.hub
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "set", "lo", "up")
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        # bridged IPv4 passes through iptables (for NFQUEUE) in this namespace only
        sh("ip", "netns", "exec", hub, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")
        for i in range(1, self.n + 1):
            name = self.node(i)
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
            sh("ip", "-n", hub, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
            sh("ip", "-n", hub, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", name, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")
        # the runner's own way in, from the root namespace (deleted with the hub)
        outside = f"{self.prefix}-r"
        sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "p0", "netns", hub)
        sh("ip", "-n", hub, "link", "set", "p0", "master", "br0", "up")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", outside)
        sh("ip", "link", "set", outside, "up")
        queues = [self.queue(s, d) for s in range(1, self.n + 1) for d in range(1, self.n + 1) if s != d]
        self._delayer = subprocess.Popen(
            ["ip", "netns", "exec", hub, sys.executable, "-m", "tests.chaos.nfqueue", *map(str, queues)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "CHAOS_SEED": str(self.seed)},
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        assert self._delayer.stdout is not None
        if self._delayer.stdout.readline().strip() != b"ready":
            raise RuntimeError("the nfqueue delayer did not start")
        self.apply()
        return self

    def _start_watchdog(self) -> None:
        read, write = os.pipe()
        names = " ".join(self.namespaces)
        script = ("import os,sys,subprocess\n"
                  "os.read(0, 1)\n"  # returns b'' when every writer is gone: the runner died or closed
                  f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))!r})\n"
                  "from tests.chaos.lab import remove_namespaces\n"
                  f"remove_namespaces({names.split()!r})\n")
        self._watchdog = subprocess.Popen([sys.executable, "-c", script], stdin=read, start_new_session=True)
        os.close(read)
        os.set_inheritable(write, False)
        self._lifeline = write

    def close(self) -> None:
        if self._delayer is not None:
            with contextlib.suppress(OSError):
                assert self._delayer.stdin is not None
                self._delayer.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._delayer.wait(5)
            if self._delayer.poll() is None:
                self._delayer.kill()
            self._delayer = None
        if self._up:
            remove_namespaces(self.namespaces)
            self._up = False
        if self._lifeline is not None:
            os.close(self._lifeline)  # the watchdog wakes, finds nothing left, and exits
            self._lifeline = None
        if self._watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(10)
            self._watchdog = None

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults -----------------------------------------------------------------------
    def set_link(self, src: int, dst: int, link: Link) -> None:
        if link.clean:
            self.links.pop((src, dst), None)
        else:
            self.links[(src, dst)] = link

    def heal(self) -> None:
        self.links.clear()
        self.apply()

    def apply(self) -> None:
        """Make the kernel match ``self.links``: the nft table in one transaction, the iptables
        queue rules, the delayer's delays."""
        lines = ["table netdev chaos", "delete table netdev chaos", "table netdev chaos {"]
        for s in range(1, self.n + 1):
            # ingress of the hub's port to node s: every packet node s sends, before the bridge
            lines.append(f"  chain from{s} {{ type filter hook ingress device p{s} priority 0; policy accept;")
            for (src, d), link in sorted(self.links.items()):
                if src != s:
                    continue
                match = f"ip daddr {self.address(d)}"
                if link.cut:
                    lines.append(f"    {match} drop")
                    continue
                if link.duplicate:  # before the loss: a lost packet may have had its copy sent
                    lines.append(f"    {match} {_chance(link.duplicate)} dup to p{d}")
                if link.loss:
                    lines.append(f"    {match} {_chance(link.loss)} drop")
            lines.append("  }")
        lines.append("}")
        sh("ip", "netns", "exec", self.hub, "nft", "-f", "-", stdin="\n".join(lines) + "\n")
        rules = ["*filter", ":FORWARD ACCEPT [0:0]"]
        for (s, d), link in sorted(self.links.items()):
            if not link.cut and (link.delay or link.jitter):
                rules.append(f"-A FORWARD -s {self.address(s)} -d {self.address(d)} -j NFQUEUE "
                             f"--queue-num {self.queue(s, d)} --queue-bypass")
        rules.append("COMMIT")
        sh("ip", "netns", "exec", self.hub, "iptables-restore", stdin="\n".join(rules) + "\n")
        if self._delayer is not None and self._delayer.stdin is not None:
            wanted = []
            for s in range(1, self.n + 1):
                for d in range(1, self.n + 1):
                    if s != d:
                        link = self.links.get((s, d), Link())
                        wanted.append(f"{self.queue(s, d)} {link.delay * 1000:.1f} {link.jitter * 1000:.1f}\n")
            self._delayer.stdin.write("".join(wanted).encode())
            self._delayer.stdin.flush()
