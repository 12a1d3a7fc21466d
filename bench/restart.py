"""Restart benchmark (issue 16): a 3-node cluster with the S3 cold tier restarted (a) on its disks and
(b) from the bucket alone, against the seed's 10-30 s.

Usage: ``.venv/bin/python bench/restart.py [--memories 100000] [--quick] [--seed 1] [--lag-seconds 10]``
(from the repo root; ``--quick`` is 3,000 memories and a 3 s lag window, a smoke run).

1. Starts moto's standalone S3 server (``python -m moto.server``) on a free loopback port and
   creates a fresh bucket; starts 3 ``python -m dakera_actors`` cluster-mode nodes (RF 2,
   ``DAKERA_STORAGE=s3`` against it, a fresh prefix, ``DAKERA_LOG_LEVEL=info`` so the storage
   lines below are logged), each with its own data dir, via ``tests/real/procs.py``.
2. Loads ``--memories`` memories over ``--agents`` agents by ``POST /v1/memories/store/batch``
   (``--batch`` per call, 3 loader threads, one per node: a node forwards agents it does not own).
3. Waits until the archive has caught up: every node's ``dakera_cold_tier_lag_seconds`` and
   ``dakera_cold_tier_backlog_bytes`` are 0 (the tiers branch's metrics); when a node does not
   export them, waits ``--settle`` seconds instead and says so.
4. (a) SIGKILLs every node and starts the same three on the same data dirs; (b) SIGKILLs every
   node, deletes every data dir, and starts three new processes (same ids, ports, bucket,
   prefix). Each figure is seconds from the first process start to: every node answering
   ``/health/ready`` ("ready"), then every memory readable ("readable": ``GET
   /v1/memory/get/<id>?agent_id=`` of ``--sample`` loaded ids answers 200 through every node, and
   ``GET /v1/agents/<agent>/stats`` of every agent through every node counts all its memories).
5. Prints each node's ``storage_recovered`` line (seconds, snapshots, wal_records, memories),
   ``restored_from_archive`` and the number of ``shard_restored_from_archive`` lines.
6. Archive lag under load: 4 paced writers store ``--lag-rate`` memories/s (batch stores of
   ``--lag-batch``, 1 for single stores; spread over the nodes) for ``--lag-seconds`` while
   ``dakera_cold_tier_lag_seconds`` is sampled on every node every 0.2 s (skipped when the metric
   is absent); prints the rate achieved.

Every process (nodes and moto) is killed at the end, also on error. Prints figures; passes or fails
nothing.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import free_port, percentile, print_table  # noqa: E402
from recall import sentence  # noqa: E402  (bench/recall.py: the same seeded vocabulary)

from tests.real.procs import NodeProcess, cluster_processes  # noqa: E402

BUCKET = "dakera-restart-bench"
READY_DEADLINE = 180.0
READABLE_DEADLINE = 300.0
SEED_DOC = "10-30"  # the seed document's full-cluster restart time
AIM = {"a": 5.0, "b": 15.0}  # issue 16: under 5 s with disks, under 15 s from the bucket
POLL = 0.05
_LAG = re.compile(r"^dakera_cold_tier_lag_seconds (\S+)$", re.M)
_BACKLOG = re.compile(r"^dakera_cold_tier_backlog_bytes (\S+)$", re.M)


# -- moto ----------------------------------------------------------------------------------------

class Moto:
    """moto's standalone S3 server on a free loopback port, with one fresh bucket."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(POLL)
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def node_env(endpoint: str, prefix: str, shards: int) -> dict[str, str]:
    return {"DAKERA_STORAGE": "s3", "DAKERA_S3_ENDPOINT": endpoint, "DAKERA_S3_BUCKET": BUCKET,
            "DAKERA_S3_ACCESS_KEY": "test", "DAKERA_S3_SECRET_KEY": "test", "DAKERA_S3_PREFIX": prefix,
            "DAKERA_REPLICATION_FACTOR": "2", "DAKERA_SHARDS": str(shards), "DAKERA_LOG_LEVEL": "info"}


# -- waiting -------------------------------------------------------------------------------------

def wait_until(what: str, cond: Any, deadline: float, nodes: list[NodeProcess]) -> None:
    """Poll ``cond()`` until True; HTTP and parse errors count as not yet. Fails on a dead node."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{what}: {node.url} exited with {node.proc.returncode}:\n{node.log()[-3000:]}")
        try:
            last = cond()
            if last is True:
                return
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = repr(exc)
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not within {deadline:.0f}s (last: {last})")
        time.sleep(POLL)


def ready(node: NodeProcess) -> bool:
    return httpx.get(node.url + "/health/ready", timeout=1).status_code == 200


def metric(node: NodeProcess, pattern: re.Pattern[str]) -> float | None:
    found = pattern.search(httpx.get(node.url + "/metrics", timeout=5).text)
    return float(found[1]) if found else None


def archive_caught_up(nodes: list[NodeProcess]) -> bool:
    return all(metric(n, _LAG) == 0.0 and metric(n, _BACKLOG) == 0.0 for n in nodes)


# -- load ----------------------------------------------------------------------------------------

def load(nodes: list[NodeProcess], memories: int, agents: list[str], batch: int, seed: int) -> dict[str, list[str]]:
    """``memories`` memories over ``agents`` by batch store, 3 threads (one per node); agent -> ids."""
    calls: list[tuple[str, int]] = []
    per_agent, extra = divmod(memories, len(agents))
    for k, agent in enumerate(agents):
        left = per_agent + (1 if k < extra else 0)
        while left > 0:
            calls.append((agent, min(batch, left)))
            left -= batch
    ids: dict[str, list[str]] = {a: [] for a in agents}
    lock = threading.Lock()
    failures: list[str] = []

    def loader(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with httpx.Client(base_url=nodes[k % len(nodes)].url, timeout=300) as c:
            for agent, count in calls[k :: len(nodes)]:
                body = {"agent_id": agent, "memories": [{"content": sentence(rng)} for _ in range(count)]}
                for attempt in range(5):  # a forwarded batch can meet a shard moving at start: retry
                    r = c.post("/v1/memories/store/batch", json=body)
                    if r.status_code == 200:
                        break
                    time.sleep(0.5 * (attempt + 1))
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                    return
                with lock:
                    ids[agent].extend(m["id"] for m in r.json()["stored"])

    threads = [threading.Thread(target=loader, args=(k,)) for k in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"load failed: {failures[0]}")
    return ids


# -- one restart ---------------------------------------------------------------------------------

def readable(nodes: list[NodeProcess], ids: dict[str, list[str]], sample: list[tuple[str, str]]) -> bool:
    """Every sampled id through every node, and every agent's count through every node."""
    for node in nodes:
        with httpx.Client(base_url=node.url, timeout=10) as c:
            for agent, mid in sample:
                if c.get(f"/v1/memory/get/{mid}", params={"agent_id": agent}).status_code != 200:
                    return False
            for agent, got in ids.items():
                r = c.get(f"/v1/agents/{agent}/stats")
                if r.status_code != 200 or r.json()["total_memories"] != len(got):
                    return False
    return True


def restart(nodes: list[NodeProcess], ids: dict[str, list[str]], sample: list[tuple[str, str]], *,
            wipe: bool) -> dict[str, Any]:
    """SIGKILL every node (and delete its data dir when ``wipe``), start them again; the times."""
    for node in nodes:
        node.stop()
    if wipe:
        for node in nodes:
            shutil.rmtree(node.env["DAKERA_DATA_DIR"], ignore_errors=True)
    offsets = [node.log_path.stat().st_size if node.log_path.exists() else 0 for node in nodes]
    started = time.monotonic()
    for node in nodes:
        node.start()
    per_node = []
    for node in nodes:
        wait_until(f"{node.url} ready", lambda n=node: ready(n), READY_DEADLINE, nodes)
        per_node.append(time.monotonic() - started)
    ready_s = time.monotonic() - started
    wait_until("every memory readable", lambda: readable(nodes, ids, sample), READABLE_DEADLINE, nodes)
    readable_s = time.monotonic() - started
    logs = [node.log_path.read_text(errors="replace")[off:] for node, off in zip(nodes, offsets, strict=True)]
    return {"ready": ready_s, "readable": readable_s, "node_ready": per_node, "logs": logs}


_KV = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")


def event(log: str, name: str) -> list[dict[str, str]]:
    """The key=value fields of every ``name`` line of a structured log."""
    return [dict(_KV.findall(line)) for line in log.splitlines() if re.search(rf"\b{name}\b", line)]


def breakdown(label: str, result: dict[str, Any]) -> None:
    rows = []
    for i, log in enumerate(result["logs"]):
        rec = event(log, "storage_recovered")
        fields = rec[-1] if rec else {}
        whole = event(log, "restored_from_archive")
        rows.append([f"node-{i + 1}", f"{result['node_ready'][i]:.2f}", fields.get("seconds", "-"),
                     fields.get("snapshots", "-"), fields.get("wal_records", "-"), fields.get("memories", "-"),
                     str(len(event(log, "shard_restored_from_archive"))),
                     whole[-1].get("shards", "-") if whole else "-"])
    print(f"\n{label}: per node")
    print_table(["node", "ready s", "storage s", "snapshots", "wal_records", "memories",
                 "shards from archive", "restored_from_archive"], rows)


# -- archive lag under load ----------------------------------------------------------------------

def lag_under_load(nodes: list[NodeProcess], agents: list[str], rate: int, seconds: float, batch: int,
                   seed: int) -> tuple[list[float], float] | None:
    """Samples of every node's archive lag while ``rate`` memories/s go in (batch stores of
    ``batch``, 1 for single stores, from 4 paced writers), and the rate achieved; None without the metric."""
    if any(metric(n, _LAG) is None for n in nodes):
        return None
    samples: list[float] = []
    stop = threading.Event()
    writers = 4
    errors: list[str] = []
    done = [0] * writers

    def writer(k: int) -> None:
        rng = random.Random(seed + k)
        interval = writers * batch / rate
        with httpx.Client(base_url=nodes[k % len(nodes)].url, timeout=30) as c:
            due = time.monotonic()
            while not stop.is_set():
                agent = rng.choice(agents)
                if batch == 1:
                    r = c.post("/v1/memory/store", json={"agent_id": agent, "content": sentence(rng)})
                else:
                    r = c.post("/v1/memories/store/batch", json={"agent_id": agent, "memories": [
                        {"content": sentence(rng)} for _ in range(batch)]})
                if r.status_code != 200:
                    errors.append(str(r.status_code))
                else:
                    done[k] += batch
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    end = started + seconds
    try:
        while time.monotonic() < end:
            for n in nodes:
                value = metric(n, _LAG)
                if value is not None:
                    samples.append(value)
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        print(f"  ({len(errors)} stores failed during the lag window, e.g. {errors[0]})")
    return samples, sum(done) / (time.monotonic() - started)


# -- main ----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memories", type=int, default=100_000)
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--sample", type=int, default=200, help="ids read back through every node")
    ap.add_argument("--settle", type=float, default=30.0, help="wait when the lag metric is absent")
    ap.add_argument("--lag-rate", type=int, default=500)
    ap.add_argument("--lag-seconds", type=float, default=None, help="10 (3 with --quick)")
    ap.add_argument("--lag-batch", type=int, default=10, help="memories per store during the lag window (1: single stores)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="3,000 memories, 3 s lag window: a smoke run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) and print it")
    args = ap.parse_args(argv)
    if args.quick:
        args.memories, args.sample = 3000, 50
    if args.lag_seconds is None:
        args.lag_seconds = 3.0 if args.quick else 10.0

    tmp = Path(tempfile.mkdtemp(prefix="restart-bench-"))
    agents = [f"agent-{i}" for i in range(args.agents)]
    moto: Moto | None = None
    nodes: list[NodeProcess] = []
    try:
        moto = Moto()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        nodes = cluster_processes(tmp, 3, **node_env(moto.endpoint, prefix, args.shards))
        for node in nodes:
            node.start()
        wait_until("the first start", lambda: all(ready(n) for n in nodes), READY_DEADLINE, nodes)
        t0 = time.monotonic()
        ids = load(nodes, args.memories, agents, args.batch, args.seed)
        loaded = sum(len(v) for v in ids.values())
        print(f"loaded {loaded} memories ({args.agents} agents) in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        if any(metric(n, _LAG) is None for n in nodes):
            print(f"no dakera_cold_tier_lag_seconds on these nodes: waiting a fixed {args.settle:.0f} s for the archive")
            time.sleep(args.settle)
        else:
            wait_until("the archive catching up", lambda: archive_caught_up(nodes), 600, nodes)
            print(f"archive caught up (lag and backlog 0 on every node) {time.monotonic() - t0:.1f} s after the load")
        rng = random.Random(args.seed)
        every = [(a, m) for a, ms in ids.items() for m in ms]
        sample = rng.sample(every, min(args.sample, len(every)))

        a = restart(nodes, ids, sample, wipe=False)
        breakdown("(a) disks intact", a)
        b = restart(nodes, ids, sample, wipe=True)
        breakdown("(b) disks wiped, from the bucket", b)

        print(f"\nrestart of 3 nodes, RF 2, {loaded} memories (seconds from the first process start)")
        print_table(["case", "all ready", "all readable", "seed doc", "aim"],
                    [[label, f"{r['ready']:.2f}", f"{r['readable']:.2f}", SEED_DOC, f"< {AIM[k]:.0f}"]
                     for k, label, r in (("a", "(a) disks intact", a), ("b", "(b) disks wiped", b))])

        if args.lag_seconds > 0:
            found = lag_under_load(nodes, agents, args.lag_rate, args.lag_seconds, args.lag_batch, args.seed)
            if found is None:
                print("\narchive lag under load: dakera_cold_tier_lag_seconds not exported (skipped)")
            else:
                samples, achieved = found
                print(f"\narchive lag, writes aimed at {args.lag_rate}/s (batches of {args.lag_batch}; "
                      f"{achieved:.0f}/s achieved) for {args.lag_seconds:.0f} s, {len(samples)} samples over 3 nodes: "
                      f"p50 {percentile(samples, 0.5):.3f} s, p99 {percentile(samples, 0.99):.3f} s, "
                      f"max {max(samples, default=float('nan')):.3f} s")
        return 0
    finally:
        for node in nodes:
            node.stop()
        if moto is not None:
            moto.stop()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
