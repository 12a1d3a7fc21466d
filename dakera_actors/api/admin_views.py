"""The admin JSON views (``/admin/cluster/status``, ``/nodes``, ``/shards``, ``/replication``,
maintenance, ``/storage/tiers``), built from what this node sees: the membership, lease and
shard-map views, the shards it holds, its cold tier's figures, and the maintenance status
operations report."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio

from ..cold.stats import ColdTierStats
from ..operations.maintenance import MaintenanceStatus
from ..operations.stats import Totals
from ..replication.status import ClusterReplication
from ..storage.opening import describe
from ..version import __version__
from .deps import FacadeDeps


def maintenance_view(statuses: list[MaintenanceStatus], in_maintenance: list[str]) -> dict[str, Any]:
    """``/admin/maintenance/*`` and ``/v1/admin/cluster/maintenance*``: one node's status, or
    ``{"nodes": [...]}`` for several. Beside the seed's fields, the typed SDKs' ``MaintenanceStatus``
    names: ``enabled``, ``reason`` (None when not in maintenance), ``enabled_at``/``since`` and
    ``scheduled_end`` (Unix seconds, None when unknown or open-ended), ``rejecting_requests``, and
    ``nodes_in_maintenance`` (``in_maintenance``: every member whose gossip says so)."""
    views: list[dict[str, Any]] = []
    for s in statuses:
        since = int(s.since) if s.maintenance and s.since is not None else None
        views.append({
            "status": s.phase, "node_id": s.node_id, "maintenance": s.maintenance,
            "shards_remaining": s.shards_remaining, "primary_shards": s.primary_shards,
            "replica_shards": s.replica_shards, "reason": s.reason if s.maintenance else None,
            "reject_requests": s.reject_requests, "ends_in_seconds": s.ends_in_seconds,
            "enabled": s.maintenance, "enabled_at": since, "since": since,
            "scheduled_end": int(s.until) if s.maintenance and s.until is not None else None,
            "rejecting_requests": s.reject_requests, "nodes_in_maintenance": list(in_maintenance)})
    if len(views) == 1:
        return views[0]
    ends = [v["scheduled_end"] for v in views]
    reasons = [v["reason"] for v in views if v["reason"]]
    starts: list[int] = [v["enabled_at"] for v in views if v["enabled_at"] is not None]
    return {"nodes": views, "enabled": any(v["enabled"] for v in views),
            "reason": reasons[0] if reasons else None,
            "enabled_at": min(starts, default=None), "since": min(starts, default=None),
            "scheduled_end": None if None in ends else max(ends, default=None),
            "rejecting_requests": any(v["rejecting_requests"] for v in views),
            "nodes_in_maintenance": list(in_maintenance)}


def single_node_maintenance(deps: FacadeDeps) -> MaintenanceStatus:
    """A node without a cluster is never in maintenance (there is nowhere to drain it to)."""
    return MaintenanceStatus(node_id=deps.node_id, maintenance=False, shards_remaining=deps.config.shards,
                             primary_shards=list(range(deps.config.shards)), replica_shards=[])


def members_alive(deps: FacadeDeps) -> dict[str, bool]:
    """Every member this node knows (Left ones aside) and whether it is alive; a single node: itself."""
    if deps.membership is None:
        return {deps.node_id: True}
    return {m.id: m.alive for m in deps.membership.value.members.values() if m.state.label != "Left"}


def in_maintenance(deps: FacadeDeps) -> list[str]:
    """Every member whose gossip says it is in maintenance (none on a single node)."""
    if deps.membership is None:
        return []
    return sorted(m.id for m in deps.membership.value.members.values() if m.maintenance and m.state.label != "Left")


def cluster_status(deps: FacadeDeps, totals: Totals | None = None) -> dict[str, Any]:
    """``GET /admin/cluster/status``: health, leader and shard placement at a glance; with
    ``totals``, also the typed SDKs' ``ClusterStatus`` names (``cluster_id``, ``state`` = status,
    ``node_count`` = nodes, ``healthy``, ``total_vectors`` and ``namespace_count``: memories and
    agents across the cluster, with ``partial``/``unavailable`` when some shard was not counted)."""
    config = deps.config
    shards = config.shards
    members = deps.membership.value.members if deps.membership else {}
    alive = sum(1 for m in members.values() if m.alive) if members else 1
    known = sum(1 for m in members.values() if m.state.label != "Left") if members else 1
    cluster = config.cluster_mode
    lease = deps.lease.value if deps.lease else None
    smap = deps.shard_map.value if deps.shard_map else None
    ready = deps.readiness.ready
    behind = archive_behind(deps)
    status = "healthy" if ready and alive == known and not behind else "degraded" if ready else "unavailable"
    sdk: dict[str, Any] = {} if totals is None else {
        "cluster_id": deps.cluster_id or deps.node_id, "state": status, "node_count": known, "healthy": status == "healthy",
        "total_vectors": totals.memories, "namespace_count": totals.agents, "version": __version__,
        "timestamp": int(deps.wall_clock()), **totals.json()}
    return {
        "status": status,
        "node_id": deps.node_id,
        "leader": lease.leader if lease else (None if cluster else deps.node_id),
        "fencing_token": lease.token if lease else 0,
        "lease_remaining_ms": (None if lease is None or (left := lease.remaining(trio.current_time())) is None
                               else int(left * 1000)),
        "nodes": known,
        "alive": alive,
        "replication_factor": min(config.replication_factor, max(alive, 1)),
        "shard_count": shards,
        "shard_map_version": smap.version if smap else 0,
        "shard_distribution": (smap.distribution() if smap else {} if cluster
                               else {deps.node_id: {"primary": shards, "replica": 0}}),
        "shard_balance": round(smap.balance(), 4) if smap else 0.0,
        "unassigned_shards": (sum(1 for c in smap.placement if not c) if smap else shards if cluster else 0),
        "shards_moving": len(smap.placement) - sum(1 for c in smap.placement if len(c) <= smap.counted) if smap else 0,
        # members whose cold-tier archive is more than a minute behind (the status says degraded)
        "archive_behind": behind,
        # the L1.5 cache's Redis as this node sees it (None: no DAKERA_REDIS_URL); a Redis that is
        # down costs latency (reads are forwarded), never correctness: the status stays as it is
        "redis_healthy": deps.cache.healthy if deps.cache is not None else None,
        **sdk,
    }


def archive_behind(deps: FacadeDeps) -> list[str]:
    """The nodes whose cold-tier archive is behind: live members that say so in their metadata
    (each node publishes its own flag, see ``Node._watch_cold``), or, on a single node, this one
    when its own archiver says so."""
    if deps.membership is not None:
        members = deps.membership.value.members
        return sorted(m.id for m in members.values() if m.alive and m.archive_behind)
    if deps.cold is not None and deps.cold.stats().behind:
        return [deps.node_id]
    return []


def shard_name(shard: int) -> str:
    """The typed SDKs' shard id: ``shard-N``."""
    return f"shard-{shard}"


def cluster_shards(deps: FacadeDeps, report: ClusterReplication | None, totals: Totals | None = None) -> dict[str, Any]:
    """``GET /admin/cluster/shards``: each shard's copies, its size where held here, and its lag
    (and whether it is under-replicated) as its primary reports them in ``report`` (lag 0 where
    there is no report or its primary did not answer).

    Beside them, the typed SDKs' ``ShardInfo`` names: ``shard_id`` (``shard-N``), ``primary_node``
    ("" when unplaced), ``replica_nodes``, ``state`` (``active``; ``rebalancing`` while a new copy
    fills; ``degraded`` when under-replicated; ``unassigned``), ``vector_count`` (the memories as
    the shard's primary counted them in ``totals``; where it did not, those held here and
    ``counted`` false), ``size_bytes`` and ``namespace`` ("": a shard holds many agents'); and
    ``total``, the shard count."""
    smap = deps.shard_map.value if deps.shard_map else None
    local = deps.memory.shards.shards if deps.memory else {}
    out = []
    for shard in range(deps.config.shards):
        copies = (smap.placement[shard] if smap else [] if deps.config.cluster_mode else [deps.node_id])
        held = local.get(shard)
        row = report.rows.get(shard) if report is not None else None
        here = held.memory_count if held is not None else 0
        counted = totals.per_shard.get(shard) if totals is not None else None
        width = smap.counted if smap else len(copies)
        under = row is not None and report is not None and report.under_replicated(shard)
        view: dict[str, Any] = {
            "id": shard,
            "primary": copies[0] if copies else None,
            "replicas": list(copies[1:]),
            # counted where this node holds the shard; lag where this node is its primary
            "memories": here,
            "size_bytes": sum(len(m.content) for a in held.agents.values() for m in a.memories.values())
            if held is not None else 0,
            "seq": held.seq if held is not None else 0,
            "lag_ms": row.lag_ms if row is not None else 0,
            "shard_id": shard_name(shard),
            "namespace": "",
            "primary_node": copies[0] if copies else "",
            "replica_nodes": list(copies[1:]),
            "state": ("unassigned" if not copies else "rebalancing" if len(copies) > width
                      else "degraded" if under else "active"),
            "vector_count": counted[0] if counted is not None else here,
            "counted": counted is not None,
        }
        if row is not None and report is not None:
            view["under_replicated"] = under
        out.append(view)
    answer: dict[str, Any] = {"shards": out, "shard_map_version": smap.version if smap else 0,
                              "total": deps.config.shards}
    if totals is not None and totals.partial:
        answer.update(partial=True, unavailable=totals.unavailable)
    return answer


def cluster_nodes(deps: FacadeDeps) -> list[dict[str, Any]]:
    """``GET /admin/cluster/nodes``: every member this node knows of, itself included."""
    if deps.membership is None:
        return [{
            "id": deps.node_id, "state": "Alive", "role": "leader", "api_address": deps.api_address,
            "gossip_address": None, "incarnation": 0, "maintenance": False,
            "primary_shards": list(range(deps.config.shards)), "replica_shards": [],
        }]
    leader = deps.lease.value.leader if deps.lease else None
    smap = deps.shard_map.value if deps.shard_map else None
    return [{
        "id": m.id,
        "state": m.state.label,
        "role": "leader" if m.id == leader else "follower",
        "api_address": m.api,
        "gossip_address": m.address,
        "incarnation": m.incarnation,
        "maintenance": m.maintenance,
        "primary_shards": smap.primaries_of(m.id) if smap else [],
        "replica_shards": smap.replicas_of(m.id) if smap else [],
    } for m in sorted(deps.membership.value.members.values(), key=lambda m: m.id)]


def replication_report(report: ClusterReplication | None, write_ack: str,
                       members: dict[str, bool] | None = None) -> dict[str, Any]:
    """``GET /admin/cluster/replication``: each shard's copies and lag as its primary reports them.
    ``None`` is a single node: one copy of everything, nothing to lag. ``members`` maps each member
    this node knows (Left ones aside) to whether it is alive: ``total_nodes`` counts them and
    ``replication_lag`` (the typed SDKs' names) has one entry per member, see :func:`node_lags`."""
    members = members or {}
    if report is None:
        return {"replication_factor": 1, "write_ack": write_ack, "healthy_replicas": 0,
                "under_replicated_shards": 0, "lag_ms": 0, "down": [], "unreachable_primaries": [], "shards": [],
                "total_nodes": max(len(members), 1),
                "replication_lag": [{"node_id": n, "lag_ms": 0, "status": "healthy" if alive else "down",
                                     "lag_records": 0, "shards": 0} for n, alive in sorted(members.items())]}
    smap, shards = report.map, []
    for shard, copies in enumerate(smap.placement):
        row = report.rows.get(shard)
        shards.append({"id": shard, "primary": copies[0] if copies else None, "replicas": list(copies[1:]),
                       "lag_ms": row.lag_ms if row else None, "lag_records": row.lag_records if row else None,
                       "healthy_replicas": row.healthy_replicas if row else 0,
                       "under_replicated": report.under_replicated(shard)})
    return {"replication_factor": smap.rf, "write_ack": write_ack,
            "healthy_replicas": sum(r.healthy_replicas for r in report.rows.values()),
            "under_replicated_shards": sum(1 for s in shards if s["under_replicated"]),
            "lag_ms": max((r.lag_ms for r in report.rows.values()), default=0),
            "down": list(smap.down), "unreachable_primaries": report.unreachable, "shards": shards,
            "total_nodes": len(set(members) | smap.members()),
            "replication_lag": node_lags(report, members)}


def node_lags(report: ClusterReplication, members: dict[str, bool]) -> list[dict[str, Any]]:
    """One entry per member (those of ``members`` and of the map): ``lag_ms`` and ``lag_records``,
    the worst of the replica copies it holds as their primaries report them (0 for a member that
    holds no replica), ``shards`` how many replica copies that is, and ``status``: ``down`` (dead,
    or marked down in the map), ``unknown`` (a primary of one of its copies did not report),
    ``lagging`` (some copy is behind or has not fetched lately) or ``healthy``."""
    smap = report.map
    worst: dict[str, list[int]] = {}  # member -> [lag_ms, lag_records, copies, behind, unheard]
    for shard, copies in enumerate(smap.placement):
        row = report.rows.get(shard)
        seen = {r.member: r for r in row.replicas} if row is not None else {}
        for member in copies[1:]:
            entry = worst.setdefault(member, [0, 0, 0, 0, 0])
            entry[2] += 1
            replica = seen.get(member)
            if replica is None:
                entry[4] += 1
                continue
            entry[0] = max(entry[0], replica.lag_ms)
            entry[1] = max(entry[1], replica.behind)
            entry[3] += replica.behind > 0 or not replica.fresh
    out = []
    for member in sorted(set(members) | smap.members()):
        lag_ms, lag_records, held, behind, unheard = worst.get(member, [0, 0, 0, 0, 0])
        status = ("down" if member in smap.down or not members.get(member, True) else "unknown" if unheard
                  else "lagging" if behind else "healthy")
        out.append({"node_id": member, "lag_ms": lag_ms, "status": status, "lag_records": lag_records,
                    "shards": held})
    return out


def planned_moves(plan: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The typed SDKs' ``planned_moves`` of a rebalance plan (``[{"shard", "from": [...], "to": [...]}]``):
    one ``{shard_id, from_node, to_node}`` per copy that changes hands, a copy added where none
    leaves from ``""`` and one dropped with none arriving to ``""``; a shard whose copies stay but
    whose primary changes is one move of the primary role."""
    out = []
    for entry in plan:
        before, after = list(entry.get("from") or []), list(entry.get("to") or [])
        gone = [n for n in before if n not in after]
        new = [n for n in after if n not in before]
        pairs = list(zip(gone, new, strict=False))
        pairs += [(n, "") for n in gone[len(pairs):]] + [("", n) for n in new[len(pairs):]]
        if not pairs and before[:1] != after[:1]:
            pairs = [(before[0] if before else "", after[0] if after else "")]
        out += [{"shard_id": shard_name(int(entry["shard"])), "from_node": a, "to_node": b} for a, b in pairs]
    return out


def rebalance_view(answer: dict[str, Any], *, dry_run: bool, shards: int, operation_id: str) -> dict[str, Any]:
    """The leader's rebalance answer (``moved``, ``dry_run``, ``shard_map_version``, ``plan``) with
    the typed SDKs' ``ShardRebalanceResponse`` names: ``initiated`` (a step was taken: not a dry
    run and something to move), ``operation_id`` (names this answer; there is no job to poll: the
    moves show in ``/admin/cluster/status``' ``shards_moving``), ``shards_affected``,
    ``estimated_seconds`` (0 when nothing moves, else None: a copy takes as long as its shard's
    data takes to send), ``planned_moves`` and ``total_shards``."""
    plan = list(answer.get("plan") or [])
    return {**answer, "initiated": not dry_run and bool(plan), "operation_id": operation_id,
            "shards_affected": len({int(e["shard"]) for e in plan}), "estimated_seconds": None if plan else 0,
            "planned_moves": planned_moves(plan), "total_shards": shards}


#: the memory API routes that read (every read is answered from the hot tier)
READ_ROUTES = frozenset({"/v1/memory/get/<memory_id>", "/v1/memory/recall", "/v1/memory/search",
                         "/v1/memories/recall/batch"})
#: what the cold tier is made of, by backend
COLD_TECHNOLOGY = {"s3": "S3-compatible object storage", "filesystem": "local filesystem",
                   "memory": "in-memory object store (tests)", "none": "none"}


def _reads_served(deps: FacadeDeps) -> int:
    """Read requests this node's HTTP API answered with success (a forwarded one included: the
    owner's hot tier answered it)."""
    total = 0.0
    for family in deps.metrics.http_latency.collect():
        for sample in family.samples:
            if (sample.name.endswith("_count") and sample.labels.get("route") in READ_ROUTES
                    and sample.labels.get("status", "").startswith("2")):
                total += sample.value
    return int(total)


def _public_endpoint(url: str | None) -> str | None:
    """An endpoint URL without any user:password part (the admin views never show credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _no_cold_tier(deps: FacadeDeps) -> ColdTierStats:
    """The figures of a node whose archiver is not running: nothing archived, nothing behind."""
    config = deps.config
    return ColdTierStats("none", "", config.cold_flush_ms, config.cold_backlog_bytes)


def storage_tiers(deps: FacadeDeps) -> dict[str, Any]:
    """``GET /v1/admin/storage/tiers``: this node's three tiers, in the shape the SDK reads
    (``StorageTierOverview``), plus this server's own figures under extra keys.

    - hot: the in-memory index of the shards held here. ``current_count`` is the memories held
      here; ``hit_count`` the read requests this node's API answered (get, recall, search, batch
      recall), and ``hit_rate`` 1.0 once there is one, because every read is answered from memory.
    - warm: the write-ahead log and snapshots on this node's disk, a full copy of the hot tier
      (``current_count`` the same memories). Reads never come from it: ``hit_count`` is the
      records replayed from it at start, ``hit_rate`` 0.
    - cold: the object store the archiver writes every shard's history to. ``current_count`` is
      the shards this node is primary of whose archive has a base snapshot (a count of the tier's
      contents, unlike ``objects_written``, which counts uploads since start); ``hit_count`` the
      shards restored or seeded from it since start; ``hit_rate`` 0, as no read is served from it.

    ``config`` carries the SDK's tiering fields mapped onto this design (no memory moves between
    tiers by age: every write is in the warm tier before it is acknowledged and in the cold tier
    within ``DAKERA_COLD_FLUSH_MS``) and the cold-tier settings, never credentials. ``activity``
    counts what went where: ``demotions_to_warm`` records written to the WAL, ``demotions_to_cold``
    objects archived, ``promotions_to_hot`` shards restored from the archive.
    """
    config = deps.config
    cold = deps.cold.stats() if deps.cold is not None else _no_cold_tier(deps)
    backend = cold.backend if cold.enabled else config.storage
    ready = deps.memory is not None
    memories = sum(s.memory_count for s in deps.memory.shards.shards.values()) if deps.memory is not None else 0
    reads = _reads_served(deps)
    wal_records = int(deps.metrics.sample("dakera_wal_records_total"))
    replayed = int(deps.metrics.sample("dakera_wal_replayed_records"))
    flush_secs = math.ceil(config.cold_flush_ms / 1000)
    hot_rate = 1.0 if reads else 0.0
    architecture = [
        {"name": "hot", "tier_type": "hot", "technology": "in-memory index (vectors and BM25 postings)",
         "description": "every memory of the shards held on this node, in memory; every read is answered here",
         "target_latency": "< 1 ms", "capacity": None, "status": "healthy" if ready else "starting",
         "current_count": memories, "hit_count": reads, "hit_rate": hot_rate},
        {"name": "warm", "tier_type": "warm", "technology": "write-ahead log and snapshots on local disk",
         "description": "a write is acknowledged once fsynced here; read back only when the node starts",
         "target_latency": "1-10 ms (fsync, group commit)", "capacity": None,
         "status": "healthy" if ready else "starting", "current_count": memories, "hit_count": replayed,
         "hit_rate": 0.0},
        {"name": "cold", "tier_type": "cold", "technology": COLD_TECHNOLOGY.get(backend, backend),
         "description": ("every shard's history archived for restores, new copies and a whole-cluster restart; "
                         f"acknowledged writes arrive within {config.cold_flush_ms} ms"),
         "target_latency": "10-100 ms per object", "capacity": None, "status": cold.status,
         "current_count": cold.shards_archived, "hit_count": cold.restores, "hit_rate": 0.0},
    ]
    settings: dict[str, Any] = {
        "hot_tier_capacity": 0,  # unbounded: every memory of the shards held here stays in memory
        "hot_to_warm_threshold_secs": 0,  # in the WAL before it is acknowledged
        "warm_to_cold_threshold_secs": flush_secs,
        "auto_tier_enabled": cold.enabled,
        "tier_check_interval_secs": flush_secs,
        "storage_backend": backend,
        "storage_location": cold.location or describe(config, config.data_dir),
        "cold_flush_ms": config.cold_flush_ms,
        "cold_backlog_bytes": config.cold_backlog_bytes,
    }
    if config.storage == "s3":
        settings.update({"s3_endpoint": _public_endpoint(config.s3_endpoint), "s3_bucket": config.s3_bucket,
                         "s3_region": config.s3_region, "s3_prefix": config.s3_prefix})
    elif config.storage_path is not None:
        settings["storage_path"] = str(config.storage_path)
    return {
        "node_id": deps.node_id,
        "tiers_enabled": cold.enabled,
        "architecture": architecture,
        "config": settings,
        "activity": {
            "promotions": cold.restores,
            "demotions": wal_records + cold.objects_written,
            "cache_hit_rate": hot_rate,
            "storage_backend": backend,
            "promotions_to_hot": cold.restores,
            "demotions_to_warm": wal_records,
            "demotions_to_cold": cold.objects_written,
            "status": cold.status,
            "shards_archived": cold.shards_archived,
            "objects_written": cold.objects_written,
            "bytes_written": cold.bytes_written,
            "bytes_read": cold.bytes_read,
            "uploads_ok": cold.uploads_ok,
            "uploads_failed": cold.uploads_failed,
            "restores": cold.restores,
            "lag_seconds": round(cold.lag_seconds, 3),
            "behind": cold.behind,
            "backlog_bytes": cold.backlog_bytes,
            "backlog_limit": cold.backlog_limit,
            "circuit_open": cold.circuit_open,
            "last_upload_at": cold.last_upload_at,
        },
        "unavailable": [],
    }
