"""``python -m dakera_actors.devcluster``: a local cluster of real node processes on loopback.

Node i (1-based) serves HTTP on ``base-port + i - 1`` and gossips on ``base-gossip-port + i - 1``,
keeps its data under ``<data-root>/node-i`` and its cold tier in ``<data-root>/objects`` (shared,
like a bucket; unless DAKERA_STORAGE/DAKERA_STORAGE_PATH say otherwise), and is seeded with
every other node. The nodes
share a gossip key made at random for this run (or DAKERA_GOSSIP_KEY when set). Ctrl-C (or
SIGTERM) stops every node gracefully; a node that dies on its own is reported and, unless
``--keep-going``, stops the rest.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def node_env(i: int, n: int, args: argparse.Namespace, key: str) -> dict[str, str]:
    seeds = ",".join(f"127.0.0.1:{args.base_gossip_port + j - 1}" for j in range(1, n + 1) if j != i)
    gossip_port = args.base_gossip_port + i - 1
    env = dict(os.environ)
    env.update({
        "DAKERA_CLUSTER_MODE": "true",
        "DAKERA_GOSSIP_KEY": key,
        "DAKERA_NODE_ID": f"node-{i}",
        "DAKERA_HOST": "127.0.0.1",
        "DAKERA_PORT": str(args.base_port + i - 1),
        "DAKERA_GOSSIP_PORT": str(gossip_port),
        "DAKERA_GOSSIP_BIND": f"127.0.0.1:{gossip_port}",
        "DAKERA_CLUSTER_SEEDS": seeds,
        "DAKERA_DATA_DIR": str(Path(args.data_root) / f"node-{i}"),
    })
    if env.get("DAKERA_STORAGE", "filesystem") == "filesystem":
        # one shared "bucket" for the local cluster, as a real one shares its S3 bucket: a node
        # can seed from it, and the whole cluster can be restarted from it with its data dirs gone
        env.setdefault("DAKERA_STORAGE_PATH", str(Path(args.data_root) / "objects"))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=3300)
    parser.add_argument("--base-gossip-port", type=int, default=7946)
    parser.add_argument("--data-root", default="./dakera-cluster")
    parser.add_argument("--keep-going", action="store_true", help="keep the others running when one node exits")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 64:
        parser.error("--nodes must be between 1 and 64")

    key = os.environ.get("DAKERA_GOSSIP_KEY") or base64.b64encode(os.urandom(32)).decode()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for i in range(1, args.nodes + 1):
        env = node_env(i, args.nodes, args, key)
        procs[f"node-{i}"] = subprocess.Popen([sys.executable, "-m", "dakera_actors"], env=env)
        print(f"devcluster: started node-{i} pid={procs[f'node-{i}'].pid} "
              f"http=http://127.0.0.1:{env['DAKERA_PORT']} gossip={env['DAKERA_GOSSIP_BIND']}", flush=True)

    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        if stopping:  # second Ctrl-C: no more waiting
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
            return
        stopping = True
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    status = 0
    while any(p.poll() is None for p in procs.values()):
        for name, p in procs.items():
            code = p.poll()
            if code is not None and not stopping and not args.keep_going:
                print(f"devcluster: {name} exited with code {code}; stopping the others", flush=True)
                status = code or 1
                stop_all()
        time.sleep(0.2)
    for name, p in procs.items():
        print(f"devcluster: {name} exited with code {p.returncode}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
