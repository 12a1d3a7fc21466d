"""Single-node HTTP benchmark: a real node process against a bare Quart-Trio app, on loopback.

Usage: ``.venv/bin/python bench/single_node.py [--quick] [--seed 1]``

Starts two processes on 127.0.0.1:

- a real node (``python -m dakera_actors``, temp data dir, WAL fsync on as by default);
- a "bare" Quart-Trio app on Hypercorn (same stack and Hypercorn settings, no node logic) with
  ``GET /get``, ``POST /store`` and ``POST /recall`` answering the same JSON shapes as the
  node's get, store and recall. It is measured in the same run, so the node's own cost reads as
  a ratio against it.

Loads agent ``a1k`` with 1,000 memories and ``a10k`` with 10,000 (batch store, seeded sentence
generator from bench/recall.py), then measures with one httpx AsyncClient (HTTP/1.1 keep-alive):
sequential requests for latency, and 8 concurrent tasks for a fixed window for throughput. The
node's /metrics gives its handler time per route and the WAL's records per fsync for each phase.
Every phase is bounded by a request count and a deadline; both processes are stopped at the end
(SIGTERM, then SIGKILL), also on error. Prints figures; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from recall import query, sentence  # bench/recall.py: the same seeded vocabulary

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 8
STARTUP_DEADLINE = 30.0
STOP_GRACE = 10.0
PHASE_CAP_SECONDS = 20.0  # no sequential phase runs longer than this, whatever its count
TOP_K = 10
BATCH = 1000

Call = Callable[[httpx.AsyncClient, random.Random], Awaitable[None]]


@attrs.frozen
class Settings:
    warmup: int  # sequential requests before each operation's first measured phase
    seq_get: int
    seq_store: int
    seq_recall_1k: int
    seq_recall_10k: int
    seq_bare: int
    window: float  # seconds of each concurrent phase
    window_cap: int  # request cap of each concurrent phase


FULL = Settings(warmup=50, seq_get=1000, seq_store=500, seq_recall_1k=1000, seq_recall_10k=500,
                seq_bare=1000, window=3.0, window_cap=50_000)
QUICK = Settings(warmup=20, seq_get=200, seq_store=100, seq_recall_1k=200, seq_recall_10k=100,
                 seq_bare=200, window=1.0, window_cap=10_000)


# -- the bare app (runs in its own process: ``single_node.py --bare-app PORT``) ------------------
def _fake_memory(i: int) -> dict[str, Any]:
    """A memory-shaped object about the size of the node's answers."""
    return {"id": f"00000000-0000-4000-8000-{i:012d}", "agent_id": "bare",
            "content": "The user prefers a quiet hotel room in Lisbon every Monday ref C1234",
            "memory_type": "episodic", "importance": 0.5, "tags": [], "metadata": {}, "session_id": None,
            "created_at": 1764000000, "updated_at": 1764000000, "expires_at": None, "access_count": 0}


def run_bare_app(port: int) -> None:
    from hypercorn.config import Config as HyperConfig
    from hypercorn.trio import serve
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    one = _fake_memory(1)
    hits = [dict(_fake_memory(i), score=0.5, vector_score=0.5, text_score=0.5) for i in range(TOP_K)]

    def reply(body: Any) -> Response:  # the node's json_response, minus nothing
        return Response(json.dumps(body, separators=(",", ":")), status=200, content_type="application/json")

    @app.get("/get")
    async def get() -> Response:
        return reply(one)

    @app.post("/store")
    async def store() -> Response:
        body = json.loads(await request.get_data(cache=True))
        return reply({"memory": body, "embedding_time_ms": 0})

    @app.post("/recall")
    async def recall() -> Response:
        json.loads(await request.get_data(cache=True))
        return reply({"memories": hits, "query_embedding_time_ms": 0, "search_time_ms": 0})

    @app.get("/health")
    async def health() -> Response:
        return reply({"status": "healthy", "healthy": True})

    hyper = HyperConfig()  # the node's Hypercorn settings (dakera_actors/node.py)
    hyper.bind = [f"127.0.0.1:{port}"]
    hyper.accesslog = None
    hyper.keep_alive_timeout = 75
    hyper.h11_max_incomplete_size = 64 * 1024
    trio.run(serve, app, hyper)


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.name, self.port, self.url = name, port, f"http://127.0.0.1:{port}"
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, path: str) -> None:
        end = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {STARTUP_DEADLINE}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_GRACE)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


# -- measurement ---------------------------------------------------------------------------------
@attrs.define
class Row:
    op: str
    mode: str  # "seq" or "x8"
    shape: str  # get / store / recall: the bare row it is compared with
    lat_ms: list[float]
    seconds: float
    server_ms: float | None = None  # node handler mean (before_request .. after_request)
    records_per_fsync: float | None = None
    fsync_ms: float | None = None
    fsyncs: int | None = None

    @property
    def rate(self) -> float:
        return len(self.lat_ms) / self.seconds

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        s = sorted(self.lat_ms)
        return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


async def sequential(client: httpx.AsyncClient, call: Call, rng: random.Random, count: int) -> tuple[list[float], float]:
    lat: list[float] = []
    started = time.perf_counter()
    deadline = started + PHASE_CAP_SECONDS
    for _ in range(count):
        t = time.perf_counter()
        await call(client, rng)
        lat.append((time.perf_counter() - t) * 1000)
        if t > deadline:
            break
    return lat, time.perf_counter() - started


async def concurrent(client: httpx.AsyncClient, call: Call, seed: int, window: float, cap: int) -> tuple[list[float], float]:
    lat: list[float] = []
    started = time.perf_counter()
    deadline = started + window

    async def worker(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        while time.perf_counter() < deadline and len(lat) < cap:
            t = time.perf_counter()
            await call(client, rng)
            lat.append((time.perf_counter() - t) * 1000)

    async with trio.open_nursery() as nursery:
        for n in range(CONCURRENCY):
            nursery.start_soon(worker, n)
    return lat, time.perf_counter() - started


_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The node's /metrics as {'name{labels}': value}."""
    r = await client.get(url + "/metrics")
    r.raise_for_status()
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        m = _SERIES.match(line)
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def delta(before: dict[str, float], after: dict[str, float], name: str, label: str = "") -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items()
               if (k == name or k.startswith(name + "{")) and label in k)


def ok(r: httpx.Response) -> None:
    if r.status_code != 200:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")


async def load(client: httpx.AsyncClient, url: str, agent: str, n: int, rng: random.Random) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, BATCH):
        memories = [{"content": sentence(rng)} for _ in range(min(BATCH, n - start))]
        r = await client.post(url + "/v1/memories/store/batch", json={"agent_id": agent, "memories": memories},
                              timeout=60)
        ok(r)
        ids += [m["id"] for m in r.json()["stored"]]
    return ids


async def bench(node_url: str, bare_url: str, s: Settings, seed: int) -> list[Row]:
    limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        rng = random.Random(seed)
        t = time.perf_counter()
        ids_1k = await load(client, node_url, "a1k", 1_000, rng)
        await load(client, node_url, "a10k", 10_000, rng)
        print(f"loaded a1k (1,000) and a10k (10,000) memories in {time.perf_counter() - t:.1f}s", flush=True)
        await trio.sleep(1.0)  # let the node settle after the load

        async def node_get(c: httpx.AsyncClient, r: random.Random) -> None:
            ok(await c.get(f"{node_url}/v1/memory/get/{r.choice(ids_1k)}", params={"agent_id": "a1k"}))

        async def node_store(c: httpx.AsyncClient, r: random.Random) -> None:
            ok(await c.post(node_url + "/v1/memory/store", json={"agent_id": "writer", "content": sentence(r)}))

        def node_recall(agent: str) -> Call:
            async def call(c: httpx.AsyncClient, r: random.Random) -> None:
                resp = await c.post(node_url + "/v1/memory/recall",
                                    json={"agent_id": agent, "query": query(r), "top_k": TOP_K, "routing": "hybrid"})
                ok(resp)
            return call

        async def bare_get(c: httpx.AsyncClient, r: random.Random) -> None:
            ok(await c.get(bare_url + "/get", params={"agent_id": "a1k"}))

        async def bare_store(c: httpx.AsyncClient, r: random.Random) -> None:
            ok(await c.post(bare_url + "/store", json={"agent_id": "writer", "content": sentence(r)}))

        async def bare_recall(c: httpx.AsyncClient, r: random.Random) -> None:
            ok(await c.post(bare_url + "/recall",
                            json={"agent_id": "a1k", "query": query(r), "top_k": TOP_K, "routing": "hybrid"}))

        # (label, shape, call, sequential count, node route label or None for the bare app)
        # each bare shape runs right before the node's, so slow drift on the shared VM hits both
        plan: list[tuple[str, str, Call, int, str | None]] = [
            ("bare get", "get", bare_get, s.seq_bare, None),
            ("get a1k", "get", node_get, s.seq_get, 'route="/v1/memory/get/<memory_id>"'),
            ("bare store", "store", bare_store, s.seq_bare, None),
            ("store (fsync)", "store", node_store, s.seq_store, 'route="/v1/memory/store"'),
            ("bare recall", "recall", bare_recall, s.seq_bare, None),
            ("recall a1k", "recall", node_recall("a1k"), s.seq_recall_1k, 'route="/v1/memory/recall"'),
            ("recall a10k", "recall", node_recall("a10k"), s.seq_recall_10k, 'route="/v1/memory/recall"'),
        ]
        rows: list[Row] = []
        for label, shape, call, count, route in plan:
            wrng = random.Random(seed + 7)
            for _ in range(s.warmup):
                await call(client, wrng)
            for mode in ("seq", f"x{CONCURRENCY}"):
                before = await scrape(client, node_url) if route else {}
                if mode == "seq":
                    lat, secs = await sequential(client, call, random.Random(seed + 11), count)
                else:
                    lat, secs = await concurrent(client, call, seed + 13, s.window, s.window_cap)
                row = Row(label, mode, shape, lat, secs)
                if route:
                    after = await scrape(client, node_url)
                    n = delta(before, after, "dakera_http_request_duration_seconds_count", route)
                    if n:
                        row.server_ms = delta(before, after, "dakera_http_request_duration_seconds_sum", route) / n * 1000
                    fsyncs = delta(before, after, "dakera_wal_batch_records_count")
                    if shape == "store" and fsyncs:
                        row.fsyncs = int(fsyncs)
                        row.records_per_fsync = delta(before, after, "dakera_wal_batch_records_sum") / fsyncs
                        row.fsync_ms = delta(before, after, "dakera_wal_fsync_seconds_sum") / fsyncs * 1000
                rows.append(row)
                print(f"  {label:<14} {mode:<4} {len(lat):>6} requests in {secs:5.2f}s", flush=True)
        return rows


def report(rows: list[Row]) -> None:
    bare = {(r.shape, r.mode): r for r in rows if r.op.startswith("bare")}
    print()
    print(f"HTTP/1.1 keep-alive, httpx AsyncClient; seq = one request at a time, x{CONCURRENCY} = "
          f"{CONCURRENCY} concurrent tasks; recall = hybrid top_k={TOP_K}")
    head = (f"{'operation':<15} {'mode':<4} {'n':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} "
            f"{'p50/bare':>8} {'node ms':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = r.pct(50) / bare[(r.shape, r.mode)].pct(50)
        server = f"{r.server_ms:7.2f}" if r.server_ms is not None else f"{'-':>7}"
        print(f"{r.op:<15} {r.mode:<4} {len(r.lat_ms):>6} {r.pct(50):>7.2f} {r.pct(99):>7.2f} {r.rate:>7.0f} "
              f"{ratio:>7.2f}x {server}")
    print("node ms = the node's mean handler time for the phase (its /metrics latency histogram:")
    print("          before_request .. after_request, so without Hypercorn/h11 and the client)")
    print()
    print("WAL group commit during the store phases (node /metrics, dakera_wal_*):")
    for r in rows:
        if r.records_per_fsync is not None:
            print(f"  store {r.mode:<4}: {r.fsyncs:>6} fsyncs, {r.records_per_fsync:5.2f} records/fsync, "
                  f"mean fsync {r.fsync_ms:.2f} ms")
    print()
    print("seed document single-node targets: local read < 5 ms, write < 10 ms, hybrid recall ~30 ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller counts and 1 s windows")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bare-app", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_app:
        run_bare_app(args.bare_app)
        return
    settings = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory(prefix="dakera-bench-") as tmp_name:
        tmp = Path(tmp_name)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("DAKERA_")}
        node_port, bare_port = free_port(), free_port()
        node_env = dict(base_env, DAKERA_HOST="127.0.0.1", DAKERA_PORT=str(node_port),
                        DAKERA_DATA_DIR=str(tmp / "node-data"), DAKERA_LOG_LEVEL="warning")
        procs: list[Proc] = []
        try:
            procs.append(Proc("node", [sys.executable, "-m", "dakera_actors"], node_env, node_port,
                              tmp / "node.log"))
            procs.append(Proc("bare", [sys.executable, str(Path(__file__).resolve()), "--bare-app", str(bare_port)],
                              base_env, bare_port, tmp / "bare.log"))
            procs[0].wait_ready("/health")
            procs[0].wait_ready("/health/ready")  # storage recovered: the memory API answers
            procs[1].wait_ready("/health")
            rows = trio.run(bench, procs[0].url, procs[1].url, settings, args.seed)
            report(rows)
        finally:
            for p in procs:
                p.stop()


if __name__ == "__main__":
    main()
