"""Backup benchmark: backup and restore throughput, a wiped cluster restored from a bundle, and the
write latency clients see while a backup runs.

Usage: ``.venv/bin/python bench/backup.py [--memories 100000] [--quick]`` (from the repo root;
``--quick``: 5,000 memories, a smoke run).

1. Starts moto's S3 server and 3 cluster-mode nodes (RF 2, the cold tier and the backup store on
   moto, a fresh prefix each), loads ``--memories`` memories by batch stores.
2. Idle latency: one client storing single memories for ``--probe`` seconds, p50/p99.
3. Backup: ``POST /v1/admin/backups`` and the same client storing meanwhile until the backup is
   ``completed``: the backup's seconds, MB/s of bundle and memories/s, and the write p50/p99 during it.
4. Restore: SIGKILL all, delete every data dir, start a new cluster (its own cold-tier prefix),
   upload the downloaded bundle to ``/v1/admin/backups/restore`` and wait for ``completed``:
   seconds from the first process start to every node ready, then to the restore completed, and
   the restore's memories/s. The seed expects 5-15 minutes for a restore.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import percentile, print_table  # noqa: E402
from restart import BUCKET, Moto, load, node_env, ready, wait_until  # noqa: E402

from tests.real.procs import cluster_processes  # noqa: E402


def env(endpoint: str, prefix: str, shards: int) -> dict[str, str]:
    return {**node_env(endpoint, f"{prefix}/cold", shards), "DAKERA_BACKUP_STORAGE": "s3",
            "DAKERA_BACKUP_S3_ENDPOINT": endpoint, "DAKERA_BACKUP_S3_BUCKET": BUCKET,
            "DAKERA_BACKUP_S3_PREFIX": f"{prefix}/backups", "DAKERA_LOG_LEVEL": "warning"}


def store_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            r = c.post("/v1/memory/store", json={"agent_id": f"probe-{n % 7}", "content": f"probe write {n}"})
            if r.status_code == 200:
                out.append((time.perf_counter() - started) * 1000)
            n += 1


def archive_lag(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("dakera_cold_tier_lag_seconds"):
            return float(line.split()[-1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--probe", type=float, default=5.0, help="seconds of idle write probing")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.memories, args.agents, args.probe = 5_000, 20, 2.0
    moto = Moto()
    tmp = Path(tempfile.mkdtemp(prefix="dakera-backup-bench-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    nodes = cluster_processes(tmp / "one", 3, **env(moto.endpoint, prefix, args.shards))
    fresh = []
    try:
        (tmp / "one").mkdir()
        for node in nodes:
            node.start()
        wait_until("cluster ready", lambda: all(ready(n) for n in nodes), 120, nodes)
        agents = [f"agent-{i}" for i in range(args.agents)]
        started = time.perf_counter()
        load(nodes, args.memories, agents, 1000, seed=1)
        print(f"loaded {args.memories} memories in {time.perf_counter() - started:.1f} s")

        idle: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=store_latencies, args=(nodes[1].url, stop, idle))
        probe.start()
        time.sleep(args.probe)  # a benchmark's measuring window, not a test's wait
        stop.set()
        probe.join()

        during: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=store_latencies, args=(nodes[1].url, stop, during))
        probe.start()
        started = time.perf_counter()
        created = httpx.post(nodes[0].url + "/v1/admin/backups", json={"name": "bench"}, timeout=30).json()
        backup_id = created["id"]

        def done() -> bool:
            return httpx.get(f"{nodes[0].url}/v1/admin/backups/{backup_id}", timeout=10).json()["status"] != "inprogress"

        wait_until("backup", done, 1800, nodes)
        backup_s = time.perf_counter() - started
        stop.set()
        probe.join()
        info = httpx.get(f"{nodes[0].url}/v1/admin/backups/{backup_id}", timeout=10).json()
        if info["status"] != "completed":
            raise RuntimeError(f"backup failed: {info}")
        bundle = httpx.get(f"{nodes[0].url}/v1/admin/backups/{backup_id}/download", timeout=300).content
        # a point to go back to later: a second after everything so far, then more writes on top
        point = math.ceil(time.time())
        time.sleep(max(point + 0.05 - time.time(), 0))
        for n in range(50):
            httpx.post(nodes[2].url + "/v1/memory/store", json={"agent_id": agents[n % len(agents)],
                                                                "content": f"after the point {n}"}, timeout=30)
        wait_until("archive caught up", lambda: all(archive_lag(n.url) == 0 for n in nodes), 120, nodes)
        for node in nodes:
            node.stop()
            shutil.rmtree(Path(node.env["DAKERA_DATA_DIR"]), ignore_errors=True)

        (tmp / "two").mkdir()
        fresh = cluster_processes(tmp / "two", 3, **env(moto.endpoint, prefix + "-new", args.shards))
        t0 = time.perf_counter()
        for node in fresh:
            node.start()
        wait_until("new cluster ready", lambda: all(ready(n) for n in fresh), 180, fresh)
        ready_s = time.perf_counter() - t0
        r = httpx.post(fresh[0].url + "/v1/admin/backups/restore", content=bundle,
                       headers={"Content-Type": "application/gzip"}, timeout=300)
        if r.status_code != 201:
            raise RuntimeError(f"restore refused: {r.status_code} {r.text[:300]}")
        restore_id = r.json()["restore_id"]
        r0 = time.perf_counter()

        def restored() -> bool:
            job = httpx.get(f"{fresh[0].url}/v1/admin/backups/restore/{restore_id}", timeout=10).json()
            if job["status"] == "failed":
                raise RuntimeError(f"restore failed: {job}")
            return job["status"] == "completed"

        wait_until("restore", restored, 3600, fresh)
        restore_s = time.perf_counter() - r0
        total_s = time.perf_counter() - t0
        for node in fresh:
            node.stop()
        # the first cluster's machines wiped, new ones on its bucket: the cold tier brings back the
        # newest state, then a point-in-time restore takes every agent back to ``point``
        (tmp / "three").mkdir()
        third = cluster_processes(tmp / "three", 3, **env(moto.endpoint, prefix, args.shards))
        fresh += third
        t0 = time.perf_counter()
        for node in third:
            node.start()
        wait_until("cluster on its archive ready", lambda: all(ready(n) for n in third), 600, third)
        archive_ready_s = time.perf_counter() - t0
        r = httpx.post(third[0].url + "/v1/admin/backups/restore", json={"backup_id": "", "point_in_time": point},
                       timeout=60)
        if r.status_code != 201:
            raise RuntimeError(f"point-in-time restore refused: {r.status_code} {r.text[:300]}")
        pitr_id = r.json()["restore_id"]
        p0 = time.perf_counter()

        def pitr_done() -> bool:
            job = httpx.get(f"{third[0].url}/v1/admin/backups/restore/{pitr_id}", timeout=10).json()
            if job["status"] == "failed":
                raise RuntimeError(f"point-in-time restore failed: {job}")
            return job["status"] == "completed"

        wait_until("point-in-time restore", pitr_done, 3600, third)
        pitr_s = time.perf_counter() - p0
        pitr_job = httpx.get(f"{third[0].url}/v1/admin/backups/restore/{pitr_id}", timeout=10).json()
        mb = len(bundle) / 1e6
        print()
        print(f"backup {backup_id}: {info['vector_count']} memories, bundle {mb:.1f} MB")
        print_table(["figure", "value"], [
            ["backup seconds", f"{backup_s:.2f}"],
            ["backup MB/s (bundle)", f"{mb / backup_s:.2f}"],
            ["backup memories/s", f"{info['vector_count'] / backup_s:,.0f}"],
            ["restore seconds (bundle uploaded to completed)", f"{restore_s:.2f}"],
            ["restore MB/s (bundle)", f"{mb / restore_s:.2f}"],
            ["restore memories/s", f"{info['vector_count'] / restore_s:,.0f}"],
            ["wiped cluster: start to ready", f"{ready_s:.2f}"],
            ["wiped cluster: start to restored", f"{total_s:.2f} (seed: 5-15 min)"],
            ["wiped cluster on its archive: start to ready (newest state)", f"{archive_ready_s:.2f}"],
            ["point-in-time restore seconds (request to completed)", f"{pitr_s:.2f}"],
            ["point-in-time restore: memories in place (written, or found unchanged)", f"{pitr_job.get('vectors_restored', 0):,}"],
        ])
        print()
        print_table(["write latency (ms)", "n", "p50", "p99"], [
            ["idle", str(len(idle)), f"{percentile(idle, 0.5):.1f}", f"{percentile(idle, 0.99):.1f}"],
            ["during the backup", str(len(during)), f"{percentile(during, 0.5):.1f}", f"{percentile(during, 0.99):.1f}"],
        ])
    finally:
        for node in nodes + fresh:
            node.stop()
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
