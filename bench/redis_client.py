"""What one Redis call costs the node: the cache's own client (RESP on Trio sockets,
``cache/client.py``) beside redis.asyncio through the trio-asyncio bridge (what the cache used
first; redis-py is a test dependency) and a bare socket round trip, against a redis-server
started here. Calls are interleaved (one of each per round, shuffled) so machine noise lands on
all three alike.

    .venv/bin/python bench/redis_client.py [--rounds 5000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import percentile, print_table  # noqa: E402

from dakera_actors.cache.client import open_redis  # noqa: E402
from dakera_actors.cache.primary import read  # noqa: E402
from dakera_actors.runtime.aio import open_asyncio_loop, run_aio  # noqa: E402
from tests.cache.conftest import RedisServer  # noqa: E402


async def measure(url: str, port: int, rounds: int, seed: int) -> dict[str, list[float]]:
    from redis.asyncio import Redis  # the bridge's client, for comparison only

    rng = random.Random(seed)
    raw = await trio.open_tcp_stream("127.0.0.1", port)
    get_k = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"

    async def bare() -> None:
        await raw.send_all(get_k)
        await raw.receive_some(65536)

    async with open_asyncio_loop(), open_redis(url, 1000) as ours:
        bridged = Redis.from_url(url)
        await ours.set("k", b"v" * 300, ttl=300)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "socket round trip (GET, no client)": bare,
            "cache client: GET": lambda: ours.get("k"),
            "cache client: the READ script (a cache lookup)": lambda: read(ours, cluster="bench", shard=1,
                                                                            name="n", timeout=1.0),
            "redis.asyncio through trio-asyncio: GET": lambda: run_aio(lambda: bridged.get("k")),
        }
        out: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for _ in range(rounds):
            rng.shuffle(names)
            for name in names:
                started = time.perf_counter()
                await calls[name]()
                out[name].append((time.perf_counter() - started) * 1e6)
        await run_aio(bridged.aclose)
    await raw.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dakera-redis-bench-"))
    server = RedisServer(tmp)
    server.start()
    try:
        out = trio.run(measure, server.url, server.port, args.rounds, args.seed)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(["one call (us)", "p50", "p99"],
                [[name, f"{percentile(v, 0.5):.0f}", f"{percentile(v, 0.99):.0f}"] for name, v in out.items()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
