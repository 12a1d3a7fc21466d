"""Rebalancing benchmark: a 4th node joins a loaded 3-node cluster, then is drained; real processes on loopback.

Usage: ``.venv/bin/python bench/rebalance.py [--sizes 10000,100000] [--seed 1]`` (from the repo root).

For each size N, on a fresh cluster (temp data dirs, every process killed at the end, also on error):

1. starts 3 ``python -m dakera_actors`` nodes in cluster mode (RF=2 by default, 64 shards, UDP + TCP
   gossip; nodes are built by ``tests/real/procs.py``'s ``cluster_processes(tmp, 4, seeds=3)``, so the
   4th is seeded with the first three's gossip addresses, like a production join), waits until the
   three agree on a balanced map;
2. loads N memories with ``POST /v1/memories/store/batch`` (``--agents`` agents, N/agents each,
   at most ``--batch`` per call, each call sent to the agent's primary by 3 loader threads), then
   waits until no shard is under-replicated;
3. starts one client thread (its own keep-alive httpx.Client per node) that alternates
   ``GET /v1/memory/get/<id>`` (a random loaded memory) and ``POST /v1/memory/store`` (a random
   agent), sending to the 3 original nodes in turn, one request every ``--interval`` seconds (back to
   back when a request takes longer), with no retry: any answer but 200 is an error;
4. idle window: ``--idle`` seconds of that client on the settled cluster;
5. join: starts node-4 and polls every node's ``GET /admin/cluster/status`` every 0.1 s until all
   four report the same ``shard_map_version``, 4 members in ``shard_distribution``,
   ``shards_moving == 0`` and ``shard_balance < 0.1``. Time from the process start;
6. drain: ``POST /admin/maintenance/enable`` on node-4, then polls its
   ``GET /admin/maintenance/status`` until ``{"status": "drained", "shards_remaining": 0}``; also
   reports when every node again shows ``shards_moving == 0`` and one map version ("settled");
7. after window: ``--idle`` seconds more of the client, the drained node still a member.

Transfer figures per phase: the increase, summed over the 4 nodes, of
``dakera_replication_bytes_total`` (direction ``snapshot``: whole-shard copies, msgpack bytes of
the chunks; ``sent``: log records to replicas, which includes replicating the client's stores) and
of ``dakera_replication_snapshots_total{direction="sent"}``. Memories moved = for every shard, the
number of copies on nodes that did not hold it before the phase times the shard's memory count
(``GET /admin/cluster/shards`` before and after; counts from the nodes holding the shard).
Prints figures; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common import print_table  # noqa: E402
from recall import sentence  # noqa: E402  (bench/recall.py: the same seeded vocabulary)

from dakera_actors.store.shard import shard_of  # noqa: E402
from tests.real.procs import NodeProcess, cluster_processes  # noqa: E402

SHARDS = 64
POLL = 0.1
READY_DEADLINE = 60.0


def pct(lat: list[float], p: float) -> float:
    """Nearest-rank percentile (nan for an empty list)."""
    if not lat:
        return math.nan
    s = sorted(lat)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def ok(r: httpx.Response) -> httpx.Response:
    if r.status_code != 200:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")
    return r


def get_json(node: NodeProcess, path: str, timeout: float = 5.0) -> Any:
    return ok(httpx.get(node.url + path, timeout=timeout)).json()


def wait_until(what: str, cond: Any, deadline: float) -> float:
    """Poll ``cond()`` every POLL s; the seconds it took. HTTP/parse errors count as not yet."""
    t0 = time.monotonic()
    last: Any = None
    while True:
        try:
            last = cond()
            if last is True:
                return time.monotonic() - t0
        except (httpx.HTTPError, ValueError, KeyError, RuntimeError) as exc:
            last = repr(exc)
        if time.monotonic() - t0 > deadline:
            raise RuntimeError(f"{what}: not within {deadline:.0f}s (last: {last})")
        time.sleep(POLL)


def statuses(nodes: list[NodeProcess]) -> list[dict[str, Any]]:
    return [get_json(n, "/admin/cluster/status", 2) for n in nodes]


def balanced(nodes: list[NodeProcess], members: int) -> bool | str:
    st = statuses(nodes)
    versions = {s["shard_map_version"] for s in st}
    if (len(versions) == 1 and st[0]["shard_map_version"] and len(st[0]["shard_distribution"]) == members
            and all(s["shards_moving"] == 0 for s in st) and st[0]["shard_balance"] < 0.1):
        return True
    return f"versions {sorted(versions)}, moving {[s['shards_moving'] for s in st]}, balance {st[0]['shard_balance']}"


def settled(nodes: list[NodeProcess]) -> bool | str:
    st = statuses(nodes)
    versions = {s["shard_map_version"] for s in st}
    if len(versions) == 1 and all(s["shards_moving"] == 0 for s in st):
        return True
    return f"versions {sorted(versions)}, moving {[s['shards_moving'] for s in st]}"


def replicated(nodes: list[NodeProcess]) -> bool | str:
    repl = get_json(nodes[0], "/admin/cluster/replication", 10)
    if repl["under_replicated_shards"] == 0 and not repl["down"]:
        return True
    return f"under-replicated {repl['under_replicated_shards']}, down {repl['down']}"


def drained(node: NodeProcess) -> bool | str:
    st = get_json(node, "/admin/maintenance/status", 2)
    return True if st.get("status") == "drained" and st.get("shards_remaining") == 0 else str(st)


# -- metrics and placement -------------------------------------------------------------------

COUNTERS = {
    "snapshot_bytes": ('dakera_replication_bytes_total{direction="snapshot"}'),
    "log_bytes": ('dakera_replication_bytes_total{direction="sent"}'),
    "snapshots_sent": ('dakera_replication_snapshots_total{direction="sent"}'),
}


def counters(nodes: list[NodeProcess]) -> dict[str, dict[str, float]]:
    """node name -> counter -> value, from each node's /metrics (a node not answering is left out)."""
    out: dict[str, dict[str, float]] = {}
    for n in nodes:
        try:
            text = httpx.get(n.url + "/metrics", timeout=5).text
        except httpx.HTTPError:
            continue
        values = {}
        for key, sample in COUNTERS.items():
            values[key] = next((float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith(sample + " ")), 0.0)
        out[n.env["DAKERA_NODE_ID"]] = values
    return out


def delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], key: str) -> float:
    """Summed increase; a node absent before (not started yet) counts from 0."""
    return sum(v[key] - before.get(name, {}).get(key, 0.0) for name, v in after.items())


def placement(nodes: list[NodeProcess]) -> tuple[list[list[str]], list[int]]:
    """(copies per shard as the first node sees them, memories per shard: the largest count any
    node holding the shard reports)."""
    copies: list[list[str]] = []
    counts = [0] * SHARDS
    for i, n in enumerate(nodes):
        shards = get_json(n, "/admin/cluster/shards", 10)["shards"]
        if i == 0:
            copies = [[s["primary"], *s["replicas"]] if s["primary"] else [] for s in shards]
        for s in shards:
            counts[s["id"]] = max(counts[s["id"]], s["memories"])
    return copies, counts


def moved(before: list[list[str]], after: list[list[str]], counts: list[int]) -> tuple[int, int]:
    """(shard copies created, memories in them) between two placements."""
    copies = memories = 0
    for shard, (a, b) in enumerate(zip(before, after, strict=True)):
        new = len(set(b) - set(a))
        copies += new
        memories += new * counts[shard]
    return copies, memories


# -- the client ------------------------------------------------------------------------------

Rec = tuple[float, str, float, str, str]


def slow_by_shard(recs: list[Rec], a: list[list[str]], b: list[list[str]]) -> str:
    """Where the phase's slow (>100 ms) requests fell: on shards whose primary changed between
    placements ``a`` and ``b``, whose other copies changed, or that did not move."""
    kinds = ["primary" if x[:1] != y[:1] else "copies" if set(x) != set(y) else "none" for x, y in zip(a, b, strict=True)]
    slow = Counter(kinds[shard_of(agent, SHARDS)] for _, _, ms, _, agent in recs if ms > 100)
    every = Counter(kinds[shard_of(agent, SHARDS)] for *_, agent in recs)
    shards = Counter(kinds)
    return (f"{sum(slow.values())} slow (>100 ms): {slow['primary']} on shards whose primary changed "
            f"({shards['primary']} shards, {every['primary']} requests), {slow['copies']} on shards whose other "
            f"copies changed ({shards['copies']}, {every['copies']}), {slow['none']} on unmoved shards "
            f"({shards['none']}, {every['none']})")


class Client(threading.Thread):
    """Alternating get / store against the given nodes, paced, no retries; records every request
    as (start monotonic, op, ms, outcome, agent)."""

    def __init__(self, nodes: list[NodeProcess], ids: list[tuple[str, str]], agents: list[str],
                 interval: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.nodes, self.ids, self.agents, self.interval = nodes, ids, agents, interval
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.records: list[Rec] = []

    def run(self) -> None:
        clients = [httpx.Client(base_url=n.url, timeout=30) for n in self.nodes]
        try:
            i = 0
            next_at = time.monotonic()
            while not self.stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)  # no bursts
                client = clients[i % len(clients)]
                op = "get" if i % 2 == 0 else "store"
                t0 = time.monotonic()
                if op == "get":
                    agent, mid = self.rng.choice(self.ids)
                else:
                    agent = self.rng.choice(self.agents)
                try:
                    if op == "get":
                        r = client.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
                    else:
                        r = client.post("/v1/memory/store", json={"agent_id": agent, "content": sentence(self.rng)})
                    outcome = str(r.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.records.append((t0, op, (time.monotonic() - t0) * 1000, outcome, agent))
                i += 1
        finally:
            for c in clients:
                c.close()

    def window(self, start: float, end: float) -> list[Rec]:
        return [r for r in list(self.records) if start <= r[0] < end]


# -- one run -----------------------------------------------------------------------------------

def load(nodes: list[NodeProcess], size: int, agents: list[str], batch: int,
         seed: int) -> tuple[list[tuple[str, str]], list[float]]:
    """``size`` memories over ``agents`` by batch store, each call to the agent's primary:
    (agent, id) of each, and each call's ms."""
    shards = get_json(nodes[0], "/admin/cluster/shards")["shards"]
    primary = {s["id"]: s["primary"] for s in shards}
    by_name = {n.env["DAKERA_NODE_ID"]: n for n in nodes}
    per_agent, extra = divmod(size, len(agents))
    calls: list[tuple[NodeProcess, str, int]] = []
    for k, agent in enumerate(agents):
        left = per_agent + (1 if k < extra else 0)
        while left > 0:
            calls.append((by_name[primary[shard_of(agent, SHARDS)]], agent, min(batch, left)))
            left -= batch
    ids: list[tuple[str, str]] = []
    call_ms: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def loader(part: list[tuple[NodeProcess, str, int]], k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        clients: dict[str, httpx.Client] = {}
        try:
            for node, agent, count in part:
                c = clients.setdefault(node.url, httpx.Client(base_url=node.url, timeout=120))
                body = {"agent_id": agent, "memories": [{"content": sentence(rng)} for _ in range(count)]}
                t0 = time.perf_counter()
                r = c.post("/v1/memories/store/batch", json=body)
                call_ms.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                    return
                got = [(agent, m["id"]) for m in r.json()["stored"]]
                with lock:
                    ids.extend(got)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(repr(exc))
        finally:
            for c in clients.values():
                c.close()

    threads = [threading.Thread(target=loader, args=(calls[k::3], k)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"load failed: {failures[:3]}")
    return ids, call_ms


def run(tmp: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    where = tmp / f"n{size}"
    where.mkdir()
    env = {"DAKERA_REPLICATION_FACTOR": str(args.rf), "DAKERA_LOG_LEVEL": "warning"}
    if args.concurrency:
        env["DAKERA_REBALANCE_CONCURRENCY"] = str(args.concurrency)
    nodes = cluster_processes(where, 4, seeds=3, **env)
    first, fourth = nodes[:3], nodes[3]
    res: dict[str, Any] = {"size": size}
    client: Client | None = None
    t_run = time.monotonic()
    try:
        for n in first:
            n.start()
        for n in first:
            n.wait_healthy(READY_DEADLINE)
        wait_until("a balanced three-node cluster", lambda: balanced(first, 3), READY_DEADLINE)
        print(f"[N={size:,}] 3 nodes ready and balanced in {time.monotonic() - t_run:.1f}s", flush=True)

        rng = random.Random(args.seed)
        agents = [f"agent-{i:04d}" for i in range(min(args.agents, size))]
        t = time.monotonic()
        ids, call_ms = load(first, size, agents, args.batch, args.seed)
        res["load_s"] = time.monotonic() - t
        wait_until("replicas caught up after the load", lambda: replicated(first), args.deadline)
        res["load_replicated_s"] = time.monotonic() - t
        before, counts = placement(first)
        res["loaded"] = sum(counts)
        print(f"[N={size:,}] loaded {len(ids):,} memories ({len(agents)} agents, <= {args.batch} per call) in "
              f"{res['load_s']:.1f}s ({len(ids) / res['load_s']:,.0f}/s, {len(call_ms)} calls from 3 threads, "
              f"call p50 {pct(call_ms, 50):.0f} ms, max {max(call_ms):.0f} ms); replicated after "
              f"{res['load_replicated_s']:.1f}s; shards report {res['loaded']:,} memories", flush=True)

        client = Client(first, ids, agents, args.interval, rng.randrange(1 << 30))
        client.start()
        t_idle = time.monotonic()
        time.sleep(args.idle)

        # 1. join
        c0 = counters(first)
        t_join = time.monotonic()
        fourth.start()
        fourth.wait_healthy(READY_DEADLINE)
        res["join_healthy_s"] = time.monotonic() - t_join
        wait_until("shards rebalanced onto the fourth node", lambda: balanced(nodes, 4), args.deadline)
        t_joined = time.monotonic()
        res["join_s"] = t_joined - t_join
        c1 = counters(nodes)
        mid, mid_counts = placement(nodes)
        res["join_moved"] = moved(before, mid, mid_counts)
        res["join_counters"] = {k: delta(c0, c1, k) for k in COUNTERS}
        res["fourth_holds"] = sum(1 for c in mid if fourth.env["DAKERA_NODE_ID"] in c)
        res["map_version_joined"] = get_json(nodes[0], "/admin/cluster/status")["shard_map_version"]
        print(f"[N={size:,}] join: node-4 healthy after {res['join_healthy_s']:.1f}s, balanced after "
              f"{res['join_s']:.1f}s; holds {res['fourth_holds']} shard copies", flush=True)

        # 2. drain
        t_drain = time.monotonic()
        r = ok(httpx.post(fourth.url + "/admin/maintenance/enable", timeout=30))
        res["drain_answer"] = r.json().get("status")
        wait_until("node-4 drained", lambda: drained(fourth), args.deadline)
        t_drained = time.monotonic()
        res["drain_s"] = t_drained - t_drain
        wait_until("cluster settled after the drain", lambda: settled(nodes), args.deadline)
        t_settled = time.monotonic()
        res["settle_s"] = t_settled - t_drain
        c2 = counters(nodes)
        after, after_counts = placement(nodes)
        res["drain_moved"] = moved(mid, after, after_counts)
        res["drain_returned"] = sum(1 for shard, (a, b) in enumerate(zip(mid, after, strict=True))
                                    for m in set(b) - set(a) if m in before[shard])
        res["drain_counters"] = {k: delta(c1, c2, k) for k in COUNTERS}
        res["balance_after"] = get_json(nodes[0], "/admin/cluster/status")["shard_balance"]
        print(f"[N={size:,}] drain: drained after {res['drain_s']:.1f}s, settled after {res['settle_s']:.1f}s",
              flush=True)

        time.sleep(args.idle)
        t_end = time.monotonic()
        client.stop.set()
        client.join(60)
        res["windows"] = {
            "idle (before join)": client.window(t_idle, t_join),
            "join (start -> balanced)": client.window(t_join, t_joined),
            "drain (enable -> drained)": client.window(t_drain, t_drained),
            "join + drain": client.window(t_join, t_drained),
            "after (drained, settled)": client.window(t_settled, t_end),
        }
        res["slow_join"] = slow_by_shard(res["windows"]["join (start -> balanced)"], before, mid)
        res["slow_drain"] = slow_by_shard(res["windows"]["drain (enable -> drained)"], mid, after)
        res["wall_s"] = time.monotonic() - t_run
        return res
    finally:
        if client is not None:
            client.stop.set()
        for n in nodes:
            n.stop()
        res["log_events"] = log_events(nodes)


def log_events(nodes: list[NodeProcess]) -> Counter[str]:
    """``level event`` of every line the nodes logged (DAKERA_LOG_LEVEL=warning: warnings and errors)."""
    events: Counter[str] = Counter()
    for n in nodes:
        for line in n.log().splitlines():
            level = re.search(r"\blevel=(\w+)", line)
            event = re.search(r'\bevent=("(?:[^"\\]|\\.)*"|\S+)', line)
            events[f"{level.group(1) if level else '?'} {event.group(1) if event else line[:60]}"] += 1
    return events


# -- report --------------------------------------------------------------------------------------

def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(f"== rebalancing: 3-node RF={args.rf} cluster + node-4 joining from seeds, then drained "
          f"(rebalance concurrency {args.concurrency or 'default (4)'}, {SHARDS} shards) ==")
    rows = []
    for r in results:
        for phase, secs in (("join", r["join_s"]), ("drain", r["drain_s"])):
            c = r[f"{phase}_counters"]
            copies, mems = r[f"{phase}_moved"]
            total = c["snapshot_bytes"] + c["log_bytes"]
            rows.append([f"{r['size']:,}", phase, f"{secs:.1f}",
                         f"{r['settle_s']:.1f}" if phase == "drain" else f"{r['join_healthy_s']:.1f}",
                         str(copies), f"{int(c['snapshots_sent'])}", f"{mems:,}",
                         f"{c['snapshot_bytes'] / 1e6:.1f}", f"{c['log_bytes'] / 1e6:.2f}",
                         f"{total / secs / 1e6:.2f}", f"{mems / secs:,.0f}"])
    print_table(["N", "phase", "time s", "healthy/settled s", "copies made", "snapshots sent", "memories moved",
                 "snapshot MB", "log MB", "MB/s", "memories/s"], rows)
    print("  join time = node-4 process start -> all 4 nodes on one map version, shards_moving 0, balance < 0.1\n"
          "    (healthy = its /health/ready answered 200); drain time = POST /admin/maintenance/enable -> status\n"
          "    drained, shards_remaining 0 (settled = every node shows shards_moving 0 on one map version)\n"
          "  copies made / memories moved: from the shard placement before and after the phase (memories\n"
          "    moved = memories in the new copies; a copy going back to a node that still holds its old data\n"
          "    is caught up from there, not re-sent: the bytes say what was shipped);\n"
          "    snapshots sent: dakera_replication_snapshots_total{direction=sent}, summed over nodes\n"
          "  MB = 10^6 bytes of dakera_replication_bytes_total (snapshot = whole-shard copies, log = records\n"
          "    sent to replicas, incl. the client's stores), summed over the 4 nodes; MB/s = (snapshot + log) / time")

    print()
    print(f"== client latency, same run: 1 thread, get/store alternating over the 3 original nodes, "
          f"one request every {args.interval * 1000:g} ms, no retries ==")
    rows = []
    for r in results:
        for label, recs in r["windows"].items():
            lat = {op: [ms for _, o, ms, code, _ in recs if o == op and code == "200"] for op in ("get", "store")}
            errors = Counter(code for _, _, _, code, _ in recs if code != "200")
            span = (max(t for t, *_ in recs) - min(t for t, *_ in recs)) if len(recs) > 1 else 0.0
            slow = [ms for _, _, ms, _, _ in recs if ms > 100]
            rows.append([f"{r['size']:,}", label, f"{span:.1f}", str(len(recs)), f"{len(slow)} / {sum(slow) / 1000:.1f}",
                         f"{pct(lat['get'], 50):.2f}", f"{pct(lat['get'], 99):.2f}", f"{max(lat['get'], default=0):.1f}",
                         f"{pct(lat['store'], 50):.2f}", f"{pct(lat['store'], 99):.2f}",
                         f"{max(lat['store'], default=0):.1f}",
                         str(sum(errors.values())) + (f" {dict(errors)}" if errors else "")])
    print_table(["N", "window", "s", "requests", ">100 ms n / s", "get p50", "get p99", "get max", "store p50", "store p99",
                 "store max", "errors"], rows)
    print("  ms, 200s only; errors = any other status or a transport error, no retry; the join + drain\n"
          "    row is the two phases together (with the few seconds between them); >100 ms = requests\n"
          "    (any outcome) slower than 100 ms, and the seconds the client spent waiting in them (the\n"
          "    client is paced but single-threaded, so a stall also delays the requests behind it)")
    print()
    for r in results:
        print(f"  N={r['size']:,}: load {r['load_s']:.1f}s (replicated {r['load_replicated_s']:.1f}s), "
              f"enable answered {r['drain_answer']!r}, balance after drain {r['balance_after']}, "
              f"map v{r['map_version_joined']} when joined; run wall time {r['wall_s']:.0f}s")
        print(f"    join: {r['slow_join']}")
        print(f"    drain: {r['slow_drain']}")
        print(f"    drain: {r['drain_returned']} of the {r['drain_moved'][0]} new copies went back to a node that "
              f"held that shard before the join (its old copy is deleted only 10 s after the map drops it)")
        events = ", ".join(f"{k} x{v}" for k, v in r["log_events"].most_common(8))
        print(f"    node log lines (warning and above, 4 nodes): {sum(r['log_events'].values())}"
              + (f": {events}" if events else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="memories loaded, one fresh cluster per size")
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--batch", type=int, default=500, help="memories per batch-store call (max 1000)")
    ap.add_argument("--rf", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=0,
                    help="DAKERA_REBALANCE_CONCURRENCY (0: the node default)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle (and after) client window")
    ap.add_argument("--interval", type=float, default=0.01, help="client pacing, seconds between request starts")
    ap.add_argument("--deadline", type=float, default=600.0, help="give up on a phase after this many seconds")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="dakera-bench-rebalance-") as tmp:
        for size in sizes:
            results.append(run(Path(tmp), size, args))
    report(results, args)
    print(f"\ntotal wall time {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
