"""An in-process three-node cluster with a fault injected, under Trio's MockClock.

    python examples/local_cluster.py

Everything runs in one process on the simulated ``memory`` network, so minutes of cluster time
pass in milliseconds. This is the harness to use for your own cluster tests.
"""

from __future__ import annotations

import trio
import trio.testing

from dakera_actors.testing import open_cluster


async def main() -> None:
    async with open_cluster(3, seed=42) as cluster:
        one = cluster.node("node-1").endpoint
        assert one is not None

        async def reachable() -> dict[str, bool]:
            return {peer: await one.ping(cluster.address(peer), timeout=1.0) for peer in ("node-2", "node-3")}

        print("all up:        ", await reachable())
        cluster.partition(["node-1", "node-2"], ["node-3"])
        print("partitioned:   ", await reachable())
        cluster.heal()
        cluster.kill("node-2")
        print("node-2 killed: ", await reachable())
        await cluster.restart("node-2")
        print("node-2 back:   ", await reachable())
        async with cluster.client("node-3") as http:
            print("node-3 health: ", (await http.get("/health")).json())
    print(f"simulated time: {trio.current_time():.1f}s")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
