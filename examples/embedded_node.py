"""Run a dakera_actors node inside your own Trio program.

    python examples/embedded_node.py

The node serves HTTP on a port the OS picks, next to whatever else the program does; leaving
the ``async with`` block stops it gracefully.
"""

from __future__ import annotations

import tempfile

import httpx
import trio

import dakera_actors


async def main() -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        config = dakera_actors.Config(host="127.0.0.1", port=0, data_dir=data_dir, node_id="embedded-1")
        async with dakera_actors.open_node(config) as node:
            print(f"node {node.node_id} serving at {node.api_address}")
            # the program's own work goes here; as an example, it checks on its node
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.http_port}") as client:
                health = (await client.get("/health")).json()
                ready = (await client.get("/health/ready")).status_code
            print(f"health={health['status']} ready={ready == 200} version={health['version']}")
        print("node stopped")


if __name__ == "__main__":
    trio.run(main)
