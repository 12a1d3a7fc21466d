"""In-process clusters for tests: public API, so users can write their own cluster tests.

    async with open_cluster(3, seed=7) as cluster:
        async with cluster.client("node-1") as http:
            assert (await http.get("/health")).status_code == 200
        cluster.partition(["node-1"], ["node-2", "node-3"])
        cluster.kill("node-2")
        await cluster.restart("node-2")

Every node of the cluster runs in the calling Trio run. With the default ``memory`` transport
there are no sockets at all, so the whole cluster runs under ``trio.testing.MockClock``.
"""

from .cluster import Cluster, ClusterNode, open_cluster

__all__ = ["Cluster", "ClusterNode", "open_cluster"]
