"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``, ``/v1/openapi.json``).

Generated from the app's own route table (``app.url_map``: every rule and method it serves) and
:data:`OPERATIONS`, which declares each route's request and answer once: the memory requests'
schemas come from :mod:`dakera_actors.store.schemas` (built on the validators' own limits), the
operator requests' from the limits of the modules that check them. A served route without an
entry, or an entry no route serves, is an error (:func:`document` raises; the tests check both).
Every route answers its refusals in the one JSON error shape (``{"error", "code"}``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
from werkzeug.routing import Map

from ..backup.bundle import BACKUP_TYPES, COMPRESSIONS
from ..backup.model import BACKUP_STATUSES, RESTORE_STATUSES
from ..backup.schedule import MAX_KEEP, MAX_RETENTION_DAYS
from ..backup.store import ID_PATTERN
from ..errors import DEFAULT_CODES
from ..store import schemas as s
from ..store.schemas import Schema, nullable
from ..version import __version__
from .operations import MAX_MINUTES, MAX_REASON

#: the statuses any route may refuse with (every one in the JSON error shape)
REFUSALS = (400, 404, 409, 411, 413, 503)
OPEN_PREFIX = "/health"
ADMIN = "/admin"
V1_ADMIN = "/v1/admin"
#: methods Quart adds by itself (HEAD to every GET); not documented, not fuzzed
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})


@attrs.frozen
class Operation:
    """One route and method: what it is for, what it takes, what it answers."""

    summary: str
    answer: Schema | None  # the JSON answer's schema (None: the answer is not JSON)
    ok: int = 200
    answer_media: str = "application/json"
    body: Schema | None = None
    body_required: bool = False
    body_media: tuple[str, ...] = ("application/json",)
    query: tuple[tuple[str, Schema, bool], ...] = ()
    tag: str = "memory"


def _obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An answer object: these keys always, maybe others (clients ignore extra keys)."""
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}


INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
STRS: Schema = {"type": "array", "items": STR}
INTS: Schema = {"type": "array", "items": INT}
WARNINGS = {"warnings": STRS}
ERROR: Schema = {**_obj({"error": STR, "code": {"type": "string", "examples": sorted(set(DEFAULT_CODES.values()))}}),
                 "description": "every refusal: what is wrong (naming the field, if one is) and the SDK's code; "
                                "some add fields (field, retry_after, waiting_for)"}

MEMORY: Schema = _obj({"id": STR, "agent_id": STR, "content": STR, "memory_type": STR, "importance": NUM,
                       "tags": STRS, "metadata": {"type": "object"}, "session_id": nullable(STR),
                       "created_at": INT, "updated_at": INT, "expires_at": nullable(NUM)})
SCORED: Schema = {**MEMORY, "required": [*MEMORY["required"], "score", "vector_score", "text_score"],
                  "properties": {**MEMORY["properties"], "score": NUM, "vector_score": nullable(NUM),
                                 "text_score": nullable(NUM)}}
MEMORY_SET: Schema = {**MEMORY, "properties": {**MEMORY["properties"], "memory_id": STR, "updated": BOOL}}
SESSION: Schema = _obj({"id": STR, "session_id": STR, "agent_id": STR, "started_at": INT, "ended_at": nullable(INT),
                        "last_activity_at": INT, "metadata": {"type": "object"}, "summary": nullable(STR),
                        "memory_count": INT, "ended_reason": nullable({"type": "string", "enum": ["client", "idle"]}),
                        "idle_since": nullable(INT), "idle_timeout_secs": nullable(INT),
                        "session_state": {"type": "string", "enum": ["active", "ended"]},
                        "idle_deadline_at": nullable(INT)})
RECALLED = _obj({"memories": {"type": "array", "items": SCORED}, "query_embedding_time_ms": INT,
                 "search_time_ms": INT}, WARNINGS)

BACKUP: Schema = _obj({"backup_id": STR, "name": STR, "backup_type": STR,
                       "status": {"type": "string", "enum": list(BACKUP_STATUSES)}, "created_at": NUM,
                       "namespaces": STRS, "vector_count": INT, "size_bytes": INT, "encrypted": BOOL})
RESTORE: Schema = _obj({"restore_id": STR, "status": {"type": "string", "enum": list(RESTORE_STATUSES)},
                        "backup_id": STR, "started_at": NUM, "namespaces": STRS,
                        "progress_percent": nullable(NUM), "vectors_restored": nullable(INT)})
SCHEDULE: Schema = _obj({"enabled": BOOL, "cron": nullable(STR), "backup_type": STR, "retention_days": INT,
                         "max_backups": INT, "namespaces": STRS, "encrypt": BOOL,
                         "last_backup_at": nullable(NUM), "next_backup_at": nullable(NUM)})
#: the typed SDKs' MaintenanceStatus, in every maintenance answer
MAINTENANCE_SDK: dict[str, Schema] = {"enabled": BOOL, "reason": nullable(STR), "enabled_at": nullable(INT),
                                      "since": nullable(INT), "scheduled_end": nullable(INT),
                                      "nodes_in_maintenance": STRS, "rejecting_requests": BOOL}
MAINTENANCE_ONE: Schema = _obj({"status": {"type": "string", "enum": ["active", "draining", "drained"]},
                                "node_id": STR, "maintenance": BOOL, "shards_remaining": INT, **MAINTENANCE_SDK})
MAINTENANCE: Schema = {"anyOf": [MAINTENANCE_ONE, _obj({"nodes": {"type": "array", "items": MAINTENANCE_ONE},
                                                        **MAINTENANCE_SDK})]}
CHECKS: Schema = {"type": "object", "additionalProperties": BOOL,
                  "description": "each readiness gate (storage, http, transport, membership, shard_map) and "
                                 "accepting (not stopping, not rejecting requests in maintenance): open or not"}
#: what a cluster-wide count adds (``partial``: some shard was not counted)
COUNTED: dict[str, Schema] = {"total_memories": INT, "agent_count": INT, "partial": BOOL, "shards_counted": INT}
UNCOUNTED: dict[str, Schema] = {
    "unavailable": {"type": "array", "items": _obj({"node_id": STR, "reason": STR}),
                    "description": "present only when partial: the primaries whose shards were not counted, and why"},
    "missing_shards": {**INTS, "description": "present only when partial: the shards left out"}}
OPS_STATS: Schema = _obj({"version": STR, "total_vectors": INT, "namespace_count": INT, "uptime_seconds": INT,
                          "timestamp": INT, "state": {"type": "string", "enum": ["healthy", "degraded"]},
                          "node_id": STR, **COUNTED}, UNCOUNTED)
HEALTH_OF: Schema = _obj({"healthy": BOOL, "message": STR, "last_check": INT})
DIAGNOSTICS: Schema = _obj({
    "node_id": STR, "version": STR, "timestamp": INT, "uptime_seconds": INT, "ready": BOOL, "readiness": CHECKS,
    "members": {"type": "array"}, "shard_map": {"type": "object"}, "replication": {"type": "object"},
    "wal": {"type": "object"}, "storage": {"type": "object"},
    "system": _obj({"version": STR, "uptime_seconds": INT, "pid": INT}),
    "resources": _obj({"memory_bytes": INT, "memory_total_bytes": INT, "thread_count": INT, "open_fds": INT}),
    "components": _obj({"storage": HEALTH_OF, "search_engine": HEALTH_OF, "cache": HEALTH_OF, "grpc": HEALTH_OF}),
    "active_jobs": INT, "active_connections": INT, "max_connections": INT},
    {"embedding": nullable(_obj({"embedder": STR, "shards_remaining": INT, "memories_remaining": INT,
                                 "memories_reembedded": INT, "bm25_only_shards": {"type": "array", "items": INT}}))})
REBALANCED: Schema = _obj({
    "moved": INT, "dry_run": BOOL, "shard_map_version": INT,
    "plan": {"type": "array", "items": _obj({"shard": INT, "from": STRS, "to": STRS})},
    # the typed SDKs' ShardRebalanceResponse
    "initiated": BOOL, "operation_id": STR, "shards_affected": INT, "estimated_seconds": nullable(INT),
    "planned_moves": {"type": "array", "items": _obj({"shard_id": STR, "from_node": STR, "to_node": STR})},
    "total_shards": INT})
CACHE_CLEARED = _obj({"success": BOOL, "entries_cleared": INT, "cleared": INT, "entries_evicted": INT, "message": STR})
NOT_NULL_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}}

# -- operator requests, from the limits their parsers check ------------------------------------
MAINTENANCE_BODY: Schema = {"type": "object", "additionalProperties": False, "properties": {
    "node_ids": nullable(NOT_NULL_LIST),
    "reason": nullable({"type": "string", "maxLength": MAX_REASON}),
    "reject_requests": nullable(BOOL),
    "duration_minutes": nullable({"type": "integer", "minimum": 1, "maximum": MAX_MINUTES}),
    "force": nullable(BOOL)}}


def rebalance_body(shards: int) -> Schema:
    """``{"dry_run"?, "shard_ids"?}``: shard numbers of this cluster, as numbers, digit strings (the
    Python SDK) or ``shard-N`` (the typed SDKs' ids)."""
    # the numbers themselves when there are few, else any digits
    number = ("^(shard-)?(" + "|".join(str(n) for n in range(shards)) + ")$") if shards <= 1024 \
        else "^(shard-)?[0-9]{1,5}$"
    return {"type": "object", "additionalProperties": False, "properties": {
        "dry_run": nullable(BOOL),
        "shard_ids": nullable({"type": "array", "items": {"anyOf": [
            {"type": "integer", "minimum": 0, "maximum": shards - 1}, {"type": "string", "pattern": number}]},
            "description": f"shard numbers, 0..{shards - 1}, or shard-N ids"})}}


BACKUP_ID: Schema = {"type": "string", "pattern": "^(?!.*[.][.])" + ID_PATTERN + "$",
                     "description": "1-128 letters, digits, '_', '.' or '-' (no '..')"}


def _cron_field(value: str) -> str:
    item = rf"(\*(/[1-9][0-9]?)?|{value})"
    return rf"{item}(,{item})*"


#: five cron fields (minute, hour, day of month, month, day of week): *, */step, values and lists of
#: them (the node takes whatever croniter takes in five fields: ranges, names, ...)
CRON: Schema = {"type": "string", "description": "five cron fields, e.g. '0 3 * * *'",
                "pattern": "^" + " ".join(_cron_field(v) for v in (
                    "[1-5]?[0-9]", "(1?[0-9]|2[0-3])", "([1-9]|[12][0-9]|3[01])", "([1-9]|1[0-2])", "[0-6]")) + "$"}


def _encrypt(can: bool) -> Schema:
    return BOOL if can else {"const": False, "description": "true needs DAKERA_BACKUP_KEY, which this node lacks"}


def backup_body(can_encrypt: bool) -> Schema:
    return {"type": "object", "description": "other fields are ignored", "properties": {
        "name": nullable({"type": "string", "maxLength": 256}),
        "backup_type": nullable({"type": "string", "enum": list(BACKUP_TYPES),
                                 "description": "incremental: needs a completed backup of the same namespaces"}),
        "namespaces": nullable({**NOT_NULL_LIST, "description": "agent ids (none: every agent)"}),
        "encrypt": nullable(_encrypt(can_encrypt)),
        "compression": nullable({"type": "string", "enum": list(COMPRESSIONS),
                                 "description": "accepted and ignored: a bundle is always gzip, and its record's "
                                                "compression says gzip"})}}


def schedule_body(can_encrypt: bool) -> Schema:
    ignored: Schema = {"description": "ignored (the node keeps its own)"}
    return {"type": "object", "additionalProperties": False,
            "description": "a partial update: each field given is checked and set; enabling needs a cron "
                           "(given, or set before)",
            "properties": {
                "enabled": BOOL, "cron": nullable(CRON), "backup_type": {"type": "string", "enum": list(BACKUP_TYPES)},
                "retention_days": {"type": "integer", "minimum": 1, "maximum": MAX_RETENTION_DAYS},
                "max_backups": {"type": "integer", "minimum": 1, "maximum": MAX_KEEP},
                "namespaces": NOT_NULL_LIST, "encrypt": _encrypt(can_encrypt),
                "compression": nullable({"type": "string", "enum": list(COMPRESSIONS)}),
                "last_backup_at": ignored, "next_backup_at": ignored, "enabled_at": ignored}}


RESTORE_FIELDS: dict[str, Schema] = {
    "target_namespaces": nullable({**NOT_NULL_LIST, "description": "agent ids (none: every agent)"}),
    "overwrite": nullable(BOOL),
    "point_in_time": nullable({**NUM, "description": "Unix seconds, within the reach of the cold tier's archive "
                                                     "(a point out of reach is a 400 naming the reach)"})}
RESTORE_BODY: Schema = {"type": "object", "description": "other fields are ignored",
                        "properties": {"backup_id": BACKUP_ID, **RESTORE_FIELDS},
                        "anyOf": [{"required": ["backup_id"]},
                                  {"required": ["point_in_time"], "properties": {"point_in_time": NUM}}]}
BUNDLE: Schema = {"description": "a backup bundle (the gzip a download answers; Content-Type application/gzip, "
                                 "application/x-gzip or application/octet-stream)"}
CACHE_CLEAR_BODY: Schema = {"type": "object", "properties": {"namespace": nullable({"type": "string", "minLength": 1})}}

#: every route the app serves, by (rule, method); admin routes once, under "/admin" (served at
#: both "/admin/..." and "/v1/admin/...")
#: bodies that depend on the node's settings (filled in by :func:`document`)
BACKUP_BODY_OF_NODE: Schema = {"$ref": "#/components/schemas/BackupRequest"}
SCHEDULE_BODY_OF_NODE: Schema = {"$ref": "#/components/schemas/BackupScheduleRequest"}
REBALANCE_BODY_OF_NODE: Schema = {"$ref": "#/components/schemas/RebalanceRequest"}

OPERATIONS: dict[tuple[str, str], Operation] = {
    # health, metrics, this document
    ("/health", "GET"): Operation(
        "liveness with a verdict: healthy once every readiness gate is open, starting before, degraded when one "
        "closed after start (always 200)",
        _obj({"status": {"type": "string", "enum": ["healthy", "degraded", "starting"]}, "healthy": BOOL,
              "node_id": STR, "version": STR, "uptime_seconds": INT}), tag="health"),
    ("/health/live", "GET"): Operation("the process answers", _obj({"alive": {"const": True}, "status": STR,
                                                                    "node_id": STR, "version": STR,
                                                                    "uptime_seconds": INT}), tag="health"),
    ("/health/ready", "GET"): Operation(
        "200 once every readiness gate is open; 503 naming those still closed (waiting_for)",
        _obj({"ready": BOOL, "status": STR, "node_id": STR, "version": STR, "checks": CHECKS,
              "components": CHECKS}), tag="health"),
    ("/metrics", "GET"): Operation("Prometheus text", None, answer_media="text/plain", tag="ops"),
    ("/v1/ops/metrics", "GET"): Operation("Prometheus text", None, answer_media="text/plain", tag="ops"),
    ("/v1/ops/stats", "GET"): Operation(
        "memories (total_vectors) and agents (namespace_count) across the cluster, each shard counted at its primary; "
        "partial, unavailable and missing_shards say what could not be counted", OPS_STATS, tag="ops"),
    ("/ops/diagnostics", "GET"): Operation(
        "this node's view: members, shard map, replication, WAL, storage, process figures", DIAGNOSTICS, tag="ops"),
    ("/openapi.json", "GET"): Operation("this document", _obj({"openapi": STR, "paths": {"type": "object"}}), tag="ops"),
    ("/v1/openapi.json", "GET"): Operation("this document", _obj({"openapi": STR, "paths": {"type": "object"}}),
                                           tag="ops"),
    # the memory API
    ("/v1/memory/store", "POST"): Operation(
        "store one memory (acknowledged once in the WAL, and on the replicas DAKERA_WRITE_ACK names)",
        _obj({"memory": MEMORY, "embedding_time_ms": INT},
             {**WARNINGS, "session_state": {"type": "string", "enum": ["active", "ended"]}}),
        body=s.STORE, body_required=True),
    ("/v1/memories/store/batch", "POST"): Operation(
        "store 1..1000 memories of one agent",
        _obj({"stored": {"type": "array", "items": _obj({"id": STR, "content": STR, "agent_id": STR, "tags": STRS,
                                                         "importance": NUM, "created_at": INT})},
              "stored_count": INT, "total_embedding_time_ms": INT}, {**WARNINGS, "ended_sessions": STRS}),
        body=s.STORE_BATCH, body_required=True),
    ("/v1/memory/get/<memory_id>", "GET"): Operation("one memory", MEMORY, query=s.GET_QUERY),
    ("/v1/memory/update/<memory_id>", "PUT"): Operation(
        "a partial update", {**MEMORY, "properties": {**MEMORY["properties"], **WARNINGS}},
        body=s.UPDATE, body_required=True, query=s.UPDATE_QUERY),
    ("/v1/memory/forget", "POST"): Operation("delete memories by id",
                                             _obj({"deleted_count": INT, "memory_ids": STRS}),
                                             body=s.FORGET, body_required=True),
    ("/v1/memory/recall", "POST"): Operation("hybrid, vector or BM25 recall", RECALLED, body=s.RECALL,
                                             body_required=True),
    ("/v1/memory/search", "POST"): Operation("as recall (ten hits by default)", RECALLED, body=s.RECALL,
                                             body_required=True),
    ("/v1/memories/recall/batch", "POST"): Operation(
        "an agent's memories by filter, newest first",
        _obj({"memories": {"type": "array", "items": MEMORY}, "total": INT, "filtered": INT, "truncated": BOOL}),
        body=s.BATCH_RECALL, body_required=True),
    ("/v1/memories/forget/batch", "DELETE"): Operation("delete an agent's memories by filter (one predicate at least)",
                                                       _obj({"deleted_count": INT}), body=s.BATCH_FORGET,
                                                       body_required=True),
    ("/v1/agents", "GET"): Operation(
        "agents in id order, paged (a full page links the next one)",
        {"type": "array", "items": _obj({"agent_id": STR, "memory_count": INT, "session_count": INT,
                                         "last_memory_at": INT})},
        query=s.AGENT_PAGE_QUERY),
    ("/v1/agents/<agent_id>/memories", "GET"): Operation("an agent's memories, newest first",
                                                         {"type": "array", "items": MEMORY}, query=s.LISTING_QUERY),
    ("/v1/agents/<agent_id>/stats", "GET"): Operation(
        "an agent's counts", _obj({"agent_id": STR, "total_memories": INT, "memories_by_type": {"type": "object"},
                                   "total_sessions": INT, "active_sessions": INT, "avg_importance": nullable(NUM),
                                   "oldest_memory_at": nullable(INT), "newest_memory_at": nullable(INT)})),
    # importance and sessions (sessions: see dakera_actors/store/sessions.py)
    ("/v1/memory/importance", "POST"): Operation(
        "set one memory's importance (logged and replicated like any update)", MEMORY_SET,
        body=s.IMPORTANCE_BODY, body_required=True),
    ("/v1/memories/<memory_id>/importance", "PATCH"): Operation(
        "as /v1/memory/importance, the memory named in the path", MEMORY_SET, body=s.IMPORTANCE_PATCH,
        body_required=True),
    ("/v1/sessions/start", "POST"): Operation("start a session of an agent", _obj({"session": SESSION}),
                                              body=s.SESSION_START, body_required=True),
    ("/v1/sessions", "GET"): Operation("an agent's sessions (without agent_id: every agent's), newest first",
                                       {"type": "array", "items": SESSION},
                                       query=s.SESSION_LIST_QUERY),
    ("/v1/sessions/<session_id>", "GET"): Operation("one session", SESSION),
    ("/v1/sessions/<session_id>/touch", "POST"): Operation(
        "activity in an open session (an ended one is answered as it is)",
        _obj({"session": SESSION, "session_state": STR, "idle_deadline_at": nullable(INT)})),
    ("/v1/sessions/<session_id>/end", "POST"): Operation(
        "end a session (one ended already keeps its end)", {**SESSION, "properties": {**SESSION["properties"], **WARNINGS}},
        body=s.SESSION_END),
    ("/v1/sessions/<session_id>/memories", "GET"): Operation(
        "a session's memories, newest first",
        _obj({"session_id": STR, "memories": {"type": "array", "items": MEMORY}, "total": INT}),
        query=s.SESSION_MEMORIES_QUERY),
    ("/v1/agents/<agent_id>/sessions", "GET"): Operation("as /v1/sessions for the agent in the path",
                                                         {"type": "array", "items": SESSION},
                                                         query=s.SESSION_LISTING_QUERY),
    # cluster admin
    ("/admin/cluster/status", "GET"): Operation(
        "health, leader, fencing token, shard placement",
        _obj({"status": {"type": "string", "enum": ["healthy", "degraded", "unavailable"]}, "node_id": STR,
              "leader": nullable(STR), "fencing_token": INT, "lease_remaining_ms": nullable(INT), "nodes": INT,
              "alive": INT, "replication_factor": INT, "shard_count": INT, "shard_map_version": INT,
              "shard_distribution": {"type": "object"}, "shard_balance": NUM, "unassigned_shards": INT,
              # the typed SDKs' ClusterStatus
              "cluster_id": STR, "state": STR, "node_count": INT, "total_vectors": INT, "namespace_count": INT,
              "version": STR, "timestamp": INT, "healthy": BOOL, **COUNTED}, UNCOUNTED),
        tag="admin"),
    ("/admin/cluster/nodes", "GET"): Operation(
        "every member this node knows of",
        {"type": "array", "items": _obj({"id": STR, "state": {"type": "string",
                                                              "enum": ["Alive", "Suspect", "Dead", "Left"]},
                                         "role": {"type": "string", "enum": ["leader", "follower"]},
                                         "api_address": nullable(STR), "gossip_address": nullable(STR),
                                         "incarnation": INT, "maintenance": BOOL, "primary_shards": INTS,
                                         "replica_shards": INTS})},
        tag="admin"),
    ("/admin/cluster/shards", "GET"): Operation(
        "every shard's copies, size here and lag",
        _obj({"shards": {"type": "array", "items": _obj({
            "id": INT, "primary": nullable(STR), "replicas": STRS, "memories": INT, "size_bytes": INT, "lag_ms": INT,
            # the typed SDKs' ShardInfo
            "shard_id": {"type": "string", "pattern": "^shard-[0-9]+$"}, "namespace": STR, "primary_node": STR,
            "replica_nodes": STRS, "state": {"type": "string", "enum": ["active", "rebalancing", "degraded",
                                                                        "unassigned"]},
            "vector_count": INT, "counted": BOOL})},
              "shard_map_version": INT, "total": INT}, UNCOUNTED), tag="admin"),
    ("/admin/cluster/replication", "GET"): Operation(
        "replication as every primary reports it",
        _obj({"replication_factor": INT, "write_ack": STR, "healthy_replicas": INT, "under_replicated_shards": INT,
              "lag_ms": INT, "total_nodes": INT,
              "replication_lag": {"type": "array", "items": _obj({
                  "node_id": STR, "lag_ms": INT,
                  "status": {"type": "string", "enum": ["healthy", "lagging", "unknown", "down"]}})}}),
        tag="admin"),
    ("/admin/cluster/rebalance", "POST"): Operation(
        "the leader's planned moves and, unless dry_run, a step toward them (a single node: nothing to move)",
        REBALANCED, body=REBALANCE_BODY_OF_NODE, tag="admin"),
    ("/admin/cluster/shards/rebalance", "POST"): Operation(
        "as /admin/cluster/rebalance (the SDK's path)", REBALANCED, body=REBALANCE_BODY_OF_NODE, tag="admin"),
    ("/admin/storage/tiers", "GET"): Operation(
        "this node's hot, warm and cold tiers",
        _obj({"tiers_enabled": BOOL, "architecture": {"type": "array"}, "config": {"type": "object"},
              "activity": {"type": "object"}}), tag="admin"),
    # maintenance (the seed's paths and the SDK's)
    ("/admin/maintenance/enable", "POST"): Operation("drain this node (or node_ids) (cluster mode)", MAINTENANCE,
                                                     body=MAINTENANCE_BODY, tag="admin"),
    ("/admin/maintenance/disable", "POST"): Operation("bring it back (cluster mode)", MAINTENANCE,
                                                      body=MAINTENANCE_BODY, tag="admin"),
    ("/admin/maintenance/status", "GET"): Operation("maintenance status (a single node: always active)", MAINTENANCE,
                                                    tag="admin"),
    ("/admin/cluster/maintenance/enable", "POST"): Operation("as /admin/maintenance/enable", MAINTENANCE,
                                                             body=MAINTENANCE_BODY, tag="admin"),
    ("/admin/cluster/maintenance/disable", "POST"): Operation("as /admin/maintenance/disable", MAINTENANCE,
                                                              body=MAINTENANCE_BODY, tag="admin"),
    ("/admin/cluster/maintenance", "GET"): Operation("as /admin/maintenance/status", MAINTENANCE, tag="admin"),
    # backups
    ("/admin/backups", "GET"): Operation("every backup", _obj({"backups": {"type": "array", "items": BACKUP},
                                                               "total": INT}), tag="backups"),
    ("/admin/backups", "POST"): Operation(
        "start a backup (answers its record, inprogress)",
        {**BACKUP, "required": [*BACKUP["required"], "backup", "id"],
         "properties": {**BACKUP["properties"], "backup": BACKUP, "id": STR}}, ok=201, body=BACKUP_BODY_OF_NODE,
        tag="backups"),
    ("/admin/backups/schedule", "GET"): Operation("the backup schedule", SCHEDULE, tag="backups"),
    ("/admin/backups/schedule", "POST"): Operation("change the schedule", SCHEDULE, body=SCHEDULE_BODY_OF_NODE,
                                                   body_required=True, tag="backups"),
    ("/admin/backups/upload", "POST"): Operation(
        "keep an uploaded bundle as a backup", _obj({"backup_id": STR, "status": STR, "backup": BACKUP}), ok=201,
        body=BUNDLE, body_required=True, body_media=("application/octet-stream",), tag="backups"),
    ("/admin/backups/restore", "POST"): Operation(
        "restore a stored backup, a point in time, or an uploaded bundle (a job)", RESTORE, ok=201,
        body=RESTORE_BODY, body_required=True, body_media=("application/json", "application/octet-stream"),
        tag="backups"),
    ("/admin/backups/restore/<restore_id>", "GET"): Operation("a restore job", RESTORE, tag="backups"),
    ("/admin/backups/<backup_id>", "GET"): Operation("one backup", BACKUP, tag="backups"),
    ("/admin/backups/<backup_id>", "DELETE"): Operation("delete a backup",
                                                        _obj({"deleted": {"const": True}, "backup_id": STR}),
                                                        tag="backups"),
    ("/admin/backups/<backup_id>/download", "GET"): Operation("the backup's bundle", None,
                                                              answer_media="application/gzip", tag="backups"),
    ("/admin/backups/<backup_id>/restore", "POST"): Operation(
        "restore this backup (a job)", RESTORE, ok=201,
        body={"type": "object", "description": "other fields are ignored", "properties": RESTORE_FIELDS},
        tag="backups"),
    # the L1.5 cache
    ("/admin/cache/stats", "GET"): Operation(
        "the L1.5 cache's figures",
        _obj({"enabled": BOOL, "cache_type": STR, "entries": INT, "size_bytes": INT, "hits": INT, "misses": INT,
              "hit_rate": NUM, "evictions": INT, "total_entries": INT, "memory_bytes": INT}), tag="cache"),
    ("/admin/cache/clear", "POST"): Operation("drop one agent's cached answers (namespace) or all", CACHE_CLEARED,
                                              body=CACHE_CLEAR_BODY, tag="cache"),
    ("/admin/cache/clear/<namespace>", "POST"): Operation("drop one agent's cached answers", CACHE_CLEARED,
                                                          tag="cache"),
}

PATH_PARAMETERS: dict[str, Schema] = {
    "memory_id": s.MEMORY_ID,
    "agent_id": s.AGENT_ID,
    "session_id": s.SESSION_PATH_ID,
    "backup_id": BACKUP_ID,
    "restore_id": BACKUP_ID,
    "namespace": {"type": "string", "minLength": 1, "description": "an agent id"},
}


def operation_key(rule: str, method: str) -> tuple[str, str]:
    """The :data:`OPERATIONS` key of a served rule (a ``/v1/admin`` rule is its ``/admin`` twin)."""
    if rule.startswith(V1_ADMIN + "/"):
        rule = ADMIN + rule[len(V1_ADMIN):]
    return rule, method


def served_routes(url_map: Map) -> set[tuple[str, str]]:
    """(rule, method) of everything the app serves, Quart's implicit HEAD and OPTIONS left out."""
    return {(rule.rule, method) for rule in url_map.iter_rules()
            for method in (rule.methods or ()) if method not in IMPLICIT_METHODS}


def documented_routes() -> set[tuple[str, str]]:
    """(rule, method) of every entry of :data:`OPERATIONS`, admin entries at both prefixes."""
    out = set()
    for rule, method in OPERATIONS:
        out.add((rule, method))
        if rule.startswith(ADMIN + "/"):
            out.add((V1_ADMIN + rule[len(ADMIN):], method))
    return out


def _path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}")


def _parameters(arguments: Iterable[str], query: tuple[tuple[str, Schema, bool], ...]) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "path", "required": True, "schema": PATH_PARAMETERS[name]}
              for name in sorted(arguments)]
    params += [{"name": name, "in": "query", "required": required, "schema": schema}
               for name, schema, required in query]
    return params


def _responses(op: Operation, rule: str, secured: bool) -> dict[str, Any]:
    if op.answer_media == "application/json":
        content = {"application/json": {"schema": op.answer if op.answer is not None else {}}}
    elif op.answer_media == "application/gzip":
        content = {op.answer_media: {"schema": {}}}
    else:
        content = {op.answer_media: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(op.ok): {"description": op.summary, "content": content}}
    statuses = REFUSALS + ((401,) if secured and not rule.startswith(OPEN_PREFIX) else ())
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    return responses


def _operation(rule: str, method: str, arguments: Iterable[str], secured: bool) -> dict[str, Any]:
    op = OPERATIONS[operation_key(rule, method)]
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}:{rule}",
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(arguments, op.query),
        "responses": _responses(op, rule, secured),
    }
    if rule.startswith(OPEN_PREFIX):
        out["security"] = []  # /health* answers without the key
    if op.body is not None:
        # an optional JSON body may also be a JSON null: the same as none
        json_body = op.body if op.body_required else {"anyOf": [op.body, {"type": "null"}]}
        out["requestBody"] = {"required": op.body_required,
                              "content": {media: {"schema": json_body if media == "application/json" else BUNDLE}
                                          for media in op.body_media}}
    return out


ERROR_MEANINGS = {400: "bad input: the body, a field, a query parameter (names the field)",
                  401: "no API key, or a wrong one",
                  404: "no such route, memory, backup or job",
                  409: "not in this node's mode or state (e.g. a cluster operation on a single node)",
                  411: "a body streamed without a Content-Length",
                  413: "a body over DAKERA_MAX_BODY_BYTES (bundles: DAKERA_MAX_BUNDLE_BYTES), or text over "
                       "DAKERA_MAX_REQUEST_TEXT_BYTES",
                  503: "not ready, no owner reachable, overloaded or in maintenance: retry (Retry-After)"}


def document(url_map: Map, *, secured: bool, can_encrypt: bool = False, shards: int = 64) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every rule in ``url_map``. ``secured``: the node checks
    ``DAKERA_ROOT_API_KEY`` (every route but ``/health*`` then needs it); ``can_encrypt``: it has a
    ``DAKERA_BACKUP_KEY`` (backups may ask for encryption); ``shards``: the cluster's shard count. Raises ``LookupError``
    naming any served route without an entry in :data:`OPERATIONS`, or any entry not served."""
    served = served_routes(url_map)
    undocumented = sorted(r for r in served if operation_key(*r) not in OPERATIONS)
    unserved = sorted(documented_routes() - served)
    if undocumented or unserved:
        raise LookupError(f"routes served but not documented: {undocumented}; documented but not served: {unserved}")
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(url_map.iter_rules(), key=lambda r: r.rule):
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            paths.setdefault(_path(rule.rule), {})[method.lower()] = _operation(rule.rule, method, rule.arguments,
                                                                                 secured)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "dakera_actors", "version": __version__,
                 "description": "The Dakera agent-memory API of one node of a dakera_actors cluster "
                                "(any node serves every route; a request for an agent whose shard another node "
                                "owns is forwarded). Admin routes are at /admin/... and /v1/admin/...."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR, "JsonValue": s.JSON_VALUE, "BackupRequest": backup_body(can_encrypt),
                        "BackupScheduleRequest": schedule_body(can_encrypt), "RebalanceRequest": rebalance_body(shards)},
            "responses": {f"E{status}": {"description": meaning,
                                         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                          for status, meaning in ERROR_MEANINGS.items()},
        },
    }
    if secured:
        doc["components"]["securitySchemes"] = {"rootApiKey": {
            "type": "http", "scheme": "bearer",
            "description": "DAKERA_ROOT_API_KEY as 'Authorization: Bearer <key>'; /health* needs none"}}
        doc["security"] = [{"rootApiKey": []}]
    return doc
