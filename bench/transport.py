"""Transport micro-benchmark: latency and throughput of packets and streams on loopback.

Usage: ``.venv/bin/python bench/transport.py [--quick]``

For each transport (memory, udp, websocket) two endpoints are opened in this process on
127.0.0.1 and measured for:

- packet round trip: ping-pong of 64-byte packets (p50 / p99);
- packet throughput: 1 KiB packets sent one way as fast as the sender can for a fixed window,
  counted at the receiver (packets that overflow a buffer are lost, as they would be in use);
- stream round trip: ping-pong of 64-byte frames on one stream (p50 / p99);
- stream throughput: 64 KiB frames one way, bounded by a frame count and a time window.

Both ends share one Python thread, so every figure includes the receiver's and the sender's
CPU time; the in-process memory transport runs the same code paths above the transport and is
the baseline each figure is divided by. Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import trio

from dakera_actors.transport import Stream, Transport, load_transport
from transports.memory import MemoryNetwork

KINDS = ("memory", "udp", "websocket")
PING_TIMEOUT = 1.0  # a ping not answered within this counts as lost
DRAIN_IDLE = 0.2  # the receiver stops counting after this long without a packet


@attrs.frozen
class Settings:
    rtt_count: int  # ping-pongs per round-trip measurement (after the warm-up)
    warmup: int
    packet_window: float  # seconds the packet sender runs
    packet_max: int  # ... or until it has sent this many
    stream_window: float
    stream_max_frames: int


FULL = Settings(rtt_count=2000, warmup=100, packet_window=2.0, packet_max=500_000,
                stream_window=3.0, stream_max_frames=8192)
QUICK = Settings(rtt_count=300, warmup=30, packet_window=0.5, packet_max=100_000,
                 stream_window=0.75, stream_max_frames=1024)


@attrs.define
class Result:
    packet_rtt_p50: float = 0.0  # microseconds
    packet_rtt_p99: float = 0.0
    packets_lost_rtt: int = 0
    packet_rate: float = 0.0  # packets per second, received
    packet_loss: float = 0.0  # fraction of sent packets never received in the throughput run
    stream_rtt_p50: float = 0.0
    stream_rtt_p99: float = 0.0
    stream_mbps: float = 0.0  # megabytes (10^6) per second


@asynccontextmanager
async def open_pair(kind: str) -> AsyncIterator[tuple[Transport, Transport]]:
    cls = load_transport(kind)
    async with AsyncExitStack() as stack:
        if kind == "memory":
            net = MemoryNetwork(seed=1)
            a = await stack.enter_async_context(cls.open(bind="a:7946", network=net))
            b = await stack.enter_async_context(cls.open(bind="b:7946", network=net))
        else:
            a = await stack.enter_async_context(cls.open(bind="127.0.0.1:0"))
            b = await stack.enter_async_context(cls.open(bind="127.0.0.1:0"))
        yield a, b


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


async def ping_pong(count: int, ping: Callable[[int], object]) -> tuple[list[float], int]:
    """Run ``ping(i)`` ``count`` times; return the round-trip samples (µs) and how many were lost."""
    samples: list[float] = []
    lost = 0
    for i in range(count):
        start = time.perf_counter()
        with trio.move_on_after(PING_TIMEOUT):
            await ping(i)  # type: ignore[misc]
            samples.append((time.perf_counter() - start) * 1e6)
            continue
        lost += 1
    return samples, lost


async def packet_rtt(a: Transport, b: Transport, s: Settings, result: Result) -> None:
    async def echo() -> None:
        while True:
            source, data = await b.receive_packet()
            await b.send_packet(source, data)

    async def ping(i: int) -> None:
        tag = i.to_bytes(4, "big")
        await a.send_packet(b.address, tag + bytes(60))
        while (await a.receive_packet())[1][:4] != tag:
            pass  # a late reply to a ping that already timed out

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        await ping_pong(s.warmup, ping)
        samples, lost = await ping_pong(s.rtt_count, ping)
        nursery.cancel_scope.cancel()
    result.packet_rtt_p50 = percentile(samples, 50)
    result.packet_rtt_p99 = percentile(samples, 99)
    result.packets_lost_rtt = lost


async def packet_throughput(a: Transport, b: Transport, s: Settings, result: Result) -> None:
    payload = bytes(1024)
    received = 0
    last = 0.0

    async def count() -> None:
        nonlocal received, last
        while True:
            await b.receive_packet()
            received += 1
            last = time.perf_counter()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        sent = 0
        start = time.perf_counter()
        with trio.move_on_after(s.packet_window):
            while sent < s.packet_max:
                sent += 1  # counted first: a send cancelled at the deadline may still have gone out
                await a.send_packet(b.address, payload)
        while True:  # let packets in flight land, then stop
            seen = received
            await trio.sleep(DRAIN_IDLE)
            if received == seen:
                break
        nursery.cancel_scope.cancel()
    result.packet_rate = received / (last - start) if received else 0.0
    result.packet_loss = max(0.0, 1 - received / sent) if sent else 0.0


async def stream_rtt(client: Stream, server: Stream, s: Settings, result: Result) -> None:
    async def echo() -> None:
        async for frame in server:
            await server.send(frame)

    async def ping(_: int) -> None:
        await client.send(bytes(64))
        await client.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        await ping_pong(s.warmup, ping)
        samples, lost = await ping_pong(s.rtt_count, ping)
        nursery.cancel_scope.cancel()
    if lost:
        raise RuntimeError(f"{lost} stream round trips timed out: the stream is broken")
    result.stream_rtt_p50 = percentile(samples, 50)
    result.stream_rtt_p99 = percentile(samples, 99)


async def stream_throughput(client: Stream, server: Stream, s: Settings, result: Result) -> None:
    frame = bytes(64 * 1024)
    total = 0
    done = trio.Event()
    finish = 0.0

    async def sink() -> None:
        nonlocal total, finish
        async for data in server:
            if data == b"end":
                finish = time.perf_counter()
                done.set()
                return
            total += len(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink)
        start = time.perf_counter()
        with trio.move_on_after(s.stream_window):
            for _ in range(s.stream_max_frames):
                await client.send(frame)
        await client.send(b"end")
        with trio.fail_after(30):  # everything sent must arrive; a hang is a bug
            await done.wait()
    result.stream_mbps = total / (finish - start) / 1e6


async def measure(kind: str, s: Settings) -> Result:
    result = Result()
    async with open_pair(kind) as (a, b):
        await packet_rtt(a, b, s, result)
        await packet_throughput(a, b, s, result)
        async with await a.connect(b.address) as client, await b.accept() as server:
            await stream_rtt(client, server, s, result)
            await stream_throughput(client, server, s, result)
    return result


ROWS = [
    ("packet RTT p50 (us)", "packet_rtt_p50", "{:,.0f}"),
    ("packet RTT p99 (us)", "packet_rtt_p99", "{:,.0f}"),
    ("packet throughput (pkt/s)", "packet_rate", "{:,.0f}"),
    ("  lost in throughput run (%)", "packet_loss", "{:.1%}"),
    ("stream RTT p50 (us)", "stream_rtt_p50", "{:,.0f}"),
    ("stream RTT p99 (us)", "stream_rtt_p99", "{:,.0f}"),
    ("stream throughput (MB/s)", "stream_mbps", "{:,.1f}"),
]


def render(results: dict[str, Result]) -> str:
    base = results["memory"]
    header = ["metric"] + list(results)
    lines = [header]
    for label, field, fmt in ROWS:
        row = [label]
        for kind, res in results.items():
            value = getattr(res, field)
            cell = fmt.format(value).replace("%", "") + ("%" if "%" in fmt else "")
            reference = getattr(base, field)
            if kind != "memory" and field != "packet_loss" and reference:
                cell += f" ({value / reference:.2f}x)"
            row.append(cell)
        lines.append(row)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for n, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                             enumerate(zip(row, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    lost = {k: r.packets_lost_rtt for k, r in results.items() if r.packets_lost_rtt}
    if lost:
        out.append(f"packet pings lost (excluded from RTT): {lost}")
    out.append("(Nx) = value / memory value: above 1 is slower for RTT, faster for throughput")
    return "\n".join(out)


async def main(quick: bool) -> None:
    settings = QUICK if quick else FULL
    results = {}
    for kind in KINDS:
        print(f"measuring {kind} ...", flush=True)
        results[kind] = await measure(kind, settings)
    print()
    print(render(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter windows")
    trio.run(main, parser.parse_args().quick)
