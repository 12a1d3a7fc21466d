"""The admin JSON views (``/admin/cluster/status``, ``/nodes``, ``/shards``, ``/replication``,
maintenance), built from
what this node sees: the membership, lease and shard-map views, the shards it holds, and the
maintenance status operations report."""

from __future__ import annotations

from typing import Any

import trio

from ..operations.maintenance import MaintenanceStatus
from ..replication.status import ClusterReplication
from .deps import FacadeDeps


def maintenance_view(statuses: list[MaintenanceStatus]) -> dict[str, Any]:
    """``/admin/maintenance/*`` and ``/v1/admin/cluster/maintenance*``: one node's status, or
    ``{"nodes": [...]}`` for several."""
    views = [{"status": s.phase, "node_id": s.node_id, "maintenance": s.maintenance,
              "shards_remaining": s.shards_remaining, "primary_shards": s.primary_shards,
              "replica_shards": s.replica_shards, "reason": s.reason, "reject_requests": s.reject_requests,
              "ends_in_seconds": s.ends_in_seconds} for s in statuses]
    return views[0] if len(views) == 1 else {"nodes": views}


def cluster_status(deps: FacadeDeps) -> dict[str, Any]:
    """``GET /admin/cluster/status``: health, leader and shard placement at a glance."""
    config = deps.config
    shards = config.shards
    members = deps.membership.value.members if deps.membership else {}
    alive = sum(1 for m in members.values() if m.alive) if members else 1
    known = sum(1 for m in members.values() if m.state.label != "Left") if members else 1
    cluster = config.cluster_mode
    lease = deps.lease.value if deps.lease else None
    smap = deps.shard_map.value if deps.shard_map else None
    ready = deps.readiness.ready
    return {
        "status": ("healthy" if ready and alive == known else "degraded" if ready else "unavailable"),
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
    }


def cluster_shards(deps: FacadeDeps, report: ClusterReplication | None) -> dict[str, Any]:
    """``GET /admin/cluster/shards``: each shard's copies, its size where held here, and its lag
    (and whether it is under-replicated) as its primary reports them in ``report`` (lag 0 where
    there is no report or its primary did not answer)."""
    smap = deps.shard_map.value if deps.shard_map else None
    local = deps.memory.shards.shards if deps.memory else {}
    out = []
    for shard in range(deps.config.shards):
        copies = (smap.placement[shard] if smap else [] if deps.config.cluster_mode else [deps.node_id])
        held = local.get(shard)
        row = report.rows.get(shard) if report is not None else None
        view: dict[str, Any] = {
            "id": shard,
            "primary": copies[0] if copies else None,
            "replicas": list(copies[1:]),
            # counted where this node holds the shard; lag where this node is its primary
            "memories": held.memory_count if held is not None else 0,
            "size_bytes": sum(len(m.content) for a in held.agents.values() for m in a.memories.values())
            if held is not None else 0,
            "seq": held.seq if held is not None else 0,
            "lag_ms": row.lag_ms if row is not None else 0,
        }
        if row is not None and report is not None:
            view["under_replicated"] = report.under_replicated(shard)
        out.append(view)
    return {"shards": out, "shard_map_version": smap.version if smap else 0}


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


def replication_report(report: ClusterReplication | None, write_ack: str) -> dict[str, Any]:
    """``GET /admin/cluster/replication``: each shard's copies and lag as its primary reports them.
    ``None`` is a single node: one copy of everything, nothing to lag."""
    if report is None:
        return {"replication_factor": 1, "write_ack": write_ack, "healthy_replicas": 0,
                "under_replicated_shards": 0, "lag_ms": 0, "down": [], "unreachable_primaries": [], "shards": []}
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
            "down": list(smap.down), "unreachable_primaries": report.unreachable, "shards": shards}
