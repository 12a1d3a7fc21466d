"""Health (``/health``, ``/health/ready``, ``/health/live``) and the ops routes (``/v1/ops/stats``,
``/ops/diagnostics``), in the shapes every official SDK reads: the Python SDK's dicts, the Rust
SDK's structs (``HealthResponse``, ``ReadinessResponse``, ``OpsStats``, ``SystemDiagnostics``) and
the JavaScript SDK's interfaces. Where they name a field differently, the answer has every name.
"""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path
from typing import Any

import trio
from quart import Response
from quart_trio import QuartTrio

from ..operations.stats import Totals
from ..version import __version__
from . import admin_views
from .deps import FacadeDeps
from .responses import json_response

#: the budget of the cluster-wide count inside ``/admin/cluster/status`` (polled often, by tools
#: with short timeouts): a member slower than this is named under ``unavailable``
STATUS_COUNT_TIMEOUT = 0.5


def uptime_seconds(deps: FacadeDeps) -> int:
    """Whole seconds since the node started (0 before): the Rust SDK reads it as an unsigned int."""
    return 0 if deps.started_at is None else max(0, int(trio.current_time() - deps.started_at))


def health_view(deps: FacadeDeps) -> dict[str, Any]:
    """``GET /health``: ``healthy`` once every readiness gate is open; ``starting`` before the node
    first was; ``degraded`` when a gate is closed after that (stopping, or in maintenance with
    ``reject_requests``). Always answered with 200: this is liveness with a verdict, not a probe."""
    readiness = deps.readiness
    status = "healthy" if readiness.ready else "degraded" if readiness.started else "starting"
    uptime = uptime_seconds(deps)
    return {"status": status, "healthy": status == "healthy", "service": "dakera", "version": __version__,
            "node_id": deps.node_id, "uptime_seconds": uptime, "uptime": uptime}


def ready_view(deps: FacadeDeps) -> tuple[dict[str, Any], int]:
    """``GET /health/ready``: 200 with ``ready: true`` once every gate is open, else 503 naming the
    closed ones (``waiting_for``) in the JSON error shape. ``checks`` (and ``components``, the Rust
    SDK's name) maps each gate to whether it is open."""
    readiness = deps.readiness
    missing = readiness.missing()
    checks = readiness.checks()
    body: dict[str, Any] = {"ready": not missing, "status": "not_ready" if missing else "ready",
                            "node_id": deps.node_id, "version": __version__, "checks": checks,
                            "components": checks}
    if missing:
        body.update({"waiting_for": missing, "error": "node is not ready: waiting for " + ", ".join(missing),
                     "code": "SERVICE_UNAVAILABLE"})
        return body, 503
    return body, 200


def live_view(deps: FacadeDeps) -> dict[str, Any]:
    """``GET /health/live``: the process answers."""
    return {"alive": True, "status": "alive", "node_id": deps.node_id, "version": __version__,
            "uptime_seconds": uptime_seconds(deps)}


async def cluster_totals(deps: FacadeDeps, timeout: float | None = None) -> Totals:
    """Memories and agents across the cluster (nothing counted before storage is recovered)."""
    if deps.counts is None:
        shards = deps.config.shards
        return Totals(0, 0, shards, 0, [{"node_id": deps.node_id, "reason": "storage is still recovering"}],
                      list(range(shards)))
    return await deps.counts.totals(timeout=timeout)


def ops_stats_view(deps: FacadeDeps, totals: Totals) -> dict[str, Any]:
    """``GET /v1/ops/stats``: ``total_vectors`` is every memory of the cluster and
    ``namespace_count`` every agent (an agent is a namespace in Dakera), each shard counted once at
    its primary. A shard that could not be counted makes ``partial`` true, lists it under
    ``missing_shards`` and its primary under ``unavailable``, and the state ``degraded``."""
    healthy = deps.readiness.ready and not totals.partial
    return {"version": __version__, "total_vectors": totals.memories, "namespace_count": totals.agents,
            "uptime_seconds": uptime_seconds(deps), "timestamp": int(deps.wall_clock()),
            "state": "healthy" if healthy else "degraded", "node_id": deps.node_id, **totals.json()}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the peak, in KiB on Linux


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _disk_used(root: Path) -> int:
    """Bytes of every file under the data directory (WAL segments, snapshots, state files)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # gone meanwhile (a deleted segment)
    return total


def _component(healthy: bool, message: str, now: int) -> dict[str, Any]:
    return {"healthy": healthy, "message": message, "last_check": now}


async def diagnostics_view(deps: FacadeDeps) -> dict[str, Any]:
    """``GET /ops/diagnostics``: this node's view of the cluster (members, shard map, replication,
    WAL, storage) beside the process figures the typed SDKs read (``system``, ``resources``,
    ``components``)."""
    config = deps.config
    now = int(deps.wall_clock())
    smap = deps.shard_map.value if deps.shard_map else None
    report = None
    if deps.replication is not None and deps.replication.map is not None:
        try:
            report = await deps.replication.cluster_status()
        except Exception as exc:  # a report is a nicety here: diagnostics must answer when things are wrong
            deps.log.debug("diagnostics_replication_failed", error=repr(exc))
    replication = admin_views.replication_report(report, config.write_ack)
    replication.pop("shards", None)  # per shard: /admin/cluster/replication
    disk = await trio.to_thread.run_sync(_disk_used, Path(config.data_dir))
    memory = deps.memory
    held = memory.shards.shards if memory is not None else {}
    metrics = deps.metrics
    storage_ready = deps.readiness.is_open("storage")
    tiers = admin_views.storage_tiers(deps)
    cache = deps.cache
    rss = _rss_bytes()
    fds = _open_fds()
    threads = threading.active_count()
    uptime = uptime_seconds(deps)
    return {
        "node_id": deps.node_id,
        "version": __version__,
        "timestamp": now,
        "uptime_seconds": uptime,
        "cluster_mode": config.cluster_mode,
        "ready": deps.readiness.ready,
        "readiness": deps.readiness.checks(),
        "members": admin_views.cluster_nodes(deps),
        "shard_map": {
            "version": smap.version if smap else 0,
            "token": smap.token if smap else 0,
            "shards": config.shards,
            "replication_factor": smap.rf if smap else 1,
            "distribution": admin_views.cluster_status(deps)["shard_distribution"],
            "balance": round(smap.balance(), 4) if smap else 0.0,
            "unassigned_shards": sum(1 for c in smap.placement if not c) if smap else 0,
            "learners": sum(max(0, len(c) - smap.counted) for c in smap.placement) if smap else 0,
            "down": list(smap.down) if smap else [],
        },
        "replication": replication,
        "wal": {
            "records_appended": int(metrics.sample("dakera_wal_records_total")),
            "records_replayed_at_start": int(metrics.sample("dakera_wal_replayed_records")),
            "segments_deleted": int(metrics.sample("dakera_wal_segments_deleted_total")),
            "snapshots_written": int(metrics.sample("dakera_snapshots_written_total")),
            "fsyncs": int(metrics.sample("dakera_wal_fsync_seconds_count")),
        },
        "storage": {
            "data_dir": str(config.data_dir),
            "disk_used_bytes": disk,
            "shards_held": len(held),
            "memories_held": sum(s.memory_count for s in held.values()),
            "agents_held": sum(len(s.agents) for s in held.values()),
            "cold_tier": tiers["activity"],
            "cold_backend": tiers["config"]["storage_backend"],
        },
        # the typed SDKs' SystemDiagnostics
        "system": {"version": __version__, "rust_version": "", "python_version": platform.python_version(),
                   "build_time": "", "uptime_seconds": uptime, "pid": os.getpid()},
        "resources": {"memory_bytes": rss, "memory_total_bytes": _total_memory(), "thread_count": threads,
                      "open_fds": fds, "cpu_percent": None},
        "components": {
            "storage": _component(storage_ready, "WAL recovered, shards served" if storage_ready
                                  else "recovering the WAL", now),
            "search_engine": _component(storage_ready, "in-memory vector and BM25 index per agent", now),
            "cache": _component(cache is None or bool(cache.healthy),
                                "no L1.5 cache (DAKERA_REDIS_URL unset)" if cache is None
                                else "Redis answers" if cache.healthy else "Redis does not answer", now),
            "grpc": _component(False, "not served: this node speaks HTTP only", now),
        },
        # which embedder this node's vectors come from, and what is left to re-embed (README)
        "embedding": deps.reembed.progress().to_json() if deps.reembed is not None else None,
        "active_jobs": deps.backups.running_jobs if deps.backups is not None else 0,  # backups, restores
        "active_connections": deps.in_flight.count,
        "max_connections": config.max_connections,
        "fragmentation_percent": 0.0,
        # the JavaScript SDK's example reads these
        "memory_used_bytes": rss,
        "disk_used_bytes": disk,
        "cpu_count": os.cpu_count() or 0,
        "open_file_descriptors": fds,
    }


def mount_ops_routes(app: QuartTrio, node: FacadeDeps) -> None:
    @app.get("/v1/ops/stats")
    async def ops_stats() -> Response:
        return json_response(ops_stats_view(node, await cluster_totals(node)))

    @app.get("/ops/diagnostics")
    async def ops_diagnostics() -> Response:
        return json_response(await diagnostics_view(node))
