"""Packet delay in user space through netfilter's NFQUEUE, spoken over a raw netlink socket.

This kernel has no ``sch_netem`` (``CONFIG_NET_SCH_NETEM`` is not set here nor in CI), so delay,
jitter and the reordering they cause cannot come from ``tc``. Instead the lab's hub sends the
packets of a delayed link to a netfilter queue (``iptables -j NFQUEUE --queue-num Q
--queue-bypass``); this process holds each packet's verdict until its release time and then
accepts it. The kernel keeps the packet meanwhile; only its id crosses into user space
(``NFQNL_COPY_META``). Queue ``Q`` stands for one directed link, so the packet need not be parsed.

Run inside the hub namespace: ``python -m tests.chaos.nfqueue Q1 Q2 ...``; each line on stdin,
``Q DELAY_MS JITTER_MS``, sets a queue's delay (uniform in delay ± jitter, so packets of one link
overtake each other: reordering). EOF on stdin ends it (its parent died: the queues fall back to
bypass, packets flow undelayed).
"""

from __future__ import annotations

import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
CFG_CMD, CFG_PARAMS, CFG_QUEUE_MAXLEN = 1, 2, 3
CMD_BIND = 1
COPY_META = 1
ATTR_PACKET_HDR, ATTR_VERDICT_HDR = 1, 2
NF_ACCEPT = 1


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


def parse(data: bytes) -> list[tuple[int, int, int]]:
    """(type, queue, packet id or error code) of each netlink message in one datagram."""
    out = []
    pos = 0
    while pos + 16 <= len(data):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, pos)
        if length < 16 or pos + length > len(data):
            break
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, pos + 16)
            out.append((NLMSG_ERROR, -1, code))
        elif kind == (SUBSYS_QUEUE << 8) | MSG_PACKET:
            queue = socket.ntohs(struct.unpack_from("=H", data, pos + 18)[0])
            apos = pos + 20
            while apos + 4 <= pos + length:
                alen, akind = struct.unpack_from("=HH", data, apos)
                if alen < 4:
                    break
                if akind & 0x3FFF == ATTR_PACKET_HDR:
                    (pid,) = struct.unpack_from("!I", data, apos + 4)
                    out.append((MSG_PACKET, queue, pid))
                apos += (alen + 3) & ~3
        pos += (length + 3) & ~3
    return out


class Delayer:
    """One netlink socket bound to the given queues; verdicts held until their release time."""

    def __init__(self, queues: list[int], seed: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.delay: dict[int, tuple[float, float]] = {q: (0.0, 0.0) for q in queues}
        self.held: list[tuple[float, int, int, int]] = []  # (release, order, queue, packet id)
        self.order = 0
        self.rng = random.Random(seed)
        for q in queues:
            self._config(q, _attr(CFG_CMD, struct.pack("!BBH", CMD_BIND, 0, 0)))
            self._config(q, _attr(CFG_PARAMS, struct.pack("!IB", 0, COPY_META)))
            self._config(q, _attr(CFG_QUEUE_MAXLEN, struct.pack("!I", 16384)))

    def _config(self, queue: int, attrs: bytes) -> None:
        self.seq += 1
        self.sock.send(_message(MSG_CONFIG, queue, attrs, self.seq, NLM_F_REQUEST | NLM_F_ACK))
        while True:
            for kind, _q, code in parse(self.sock.recv(65536)):
                if kind == NLMSG_ERROR:
                    if code != 0:
                        raise OSError(-code, f"nfqueue config of queue {queue}: {os.strerror(-code)}")
                    return

    def _verdict(self, queue: int, packet_id: int) -> None:
        self.seq += 1
        self.sock.send(_message(MSG_VERDICT, queue, _attr(ATTR_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)),
                                self.seq))

    def received(self, data: bytes, now: float) -> None:
        for kind, queue, packet_id in parse(data):
            if kind != MSG_PACKET:
                continue
            delay, jitter = self.delay.get(queue, (0.0, 0.0))
            wait = max(0.0, delay + self.rng.uniform(-jitter, jitter))
            if wait <= 0:
                self._verdict(queue, packet_id)
            else:
                self.order += 1
                heapq.heappush(self.held, (now + wait, self.order, queue, packet_id))

    def release(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            _, _, queue, packet_id = heapq.heappop(self.held)
            self._verdict(queue, packet_id)

    def run(self, control: int) -> None:
        buf = b""
        while True:
            now = time.monotonic()
            self.release(now)
            timeout = max(0.0, self.held[0][0] - now) if self.held else 1.0
            ready, _, _ = select.select([self.sock, control], [], [], timeout)
            now = time.monotonic()
            if self.sock in ready:
                try:
                    self.received(self.sock.recv(1 << 20), now)
                except OSError:  # ENOBUFS: the socket overran; the kernel drops what it could not queue
                    pass
            if control in ready:
                chunk = os.read(control, 65536)
                if not chunk:
                    self.release(float("inf"))
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    q, delay_ms, jitter_ms = (float(x) for x in line.split())
                    self.delay[int(q)] = (delay_ms / 1000, jitter_ms / 1000)


def main() -> None:
    queues = [int(q) for q in sys.argv[1:]]
    delayer = Delayer(queues, seed=int(os.environ.get("CHAOS_SEED", "0")))
    print("ready", flush=True)
    delayer.run(sys.stdin.fileno())


if __name__ == "__main__":
    main()
