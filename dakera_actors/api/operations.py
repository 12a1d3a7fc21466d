"""Routes for operator actions: maintenance (the seed's and the SDK's paths) and manual rebalance."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from quart import Response
from quart_trio import QuartTrio

from ..operations.maintenance import MaintenanceOptions
from ..operations.service import Operations
from .admin_views import in_maintenance, maintenance_view, rebalance_view, single_node_maintenance
from .deps import FacadeDeps
from .errors import ApiError
from .responses import json_body, json_response

MAX_REASON = 1024
MAX_MINUTES = 525_600  # a year


def _object(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if kind is int and isinstance(value, float) and value.is_integer():  # 5.0 is JSON's 5
        value = int(value)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,))):
        raise ApiError(400, f"{name}: must be {what}", field=name)
    return value


def parse_maintenance(data: Any) -> tuple[list[str] | None, MaintenanceOptions]:
    """(node_ids, options) of a maintenance request: the seed's empty body or the SDK's fields."""
    body = _object(data)
    unknown = set(body) - {"node_ids", "reason", "reject_requests", "duration_minutes", "force"}
    if unknown:
        raise ApiError(400, f"{sorted(unknown)[0]}: unknown field", field=sorted(unknown)[0])
    node_ids = _field(body, "node_ids", list, "a list of node ids")
    if node_ids is not None and not all(isinstance(n, str) and n for n in node_ids):
        raise ApiError(400, "node_ids: must be a list of node ids", field="node_ids")
    reason = _field(body, "reason", str, "a string") or ""
    if len(reason) > MAX_REASON:
        raise ApiError(400, f"reason: at most {MAX_REASON} characters", field="reason")
    reject = _field(body, "reject_requests", bool, "true or false") or False
    minutes = _field(body, "duration_minutes", int, "a whole number of minutes")
    if minutes is not None and not 1 <= minutes <= MAX_MINUTES:
        raise ApiError(400, f"duration_minutes: must be 1..{MAX_MINUTES}", field="duration_minutes")
    _field(body, "force", bool, "true or false")  # disabling is always immediate here
    return node_ids, MaintenanceOptions(reject, minutes, reason)


def parse_rebalance(data: Any, shards: int) -> tuple[bool, list[int] | None]:
    body = _object(data)
    unknown = set(body) - {"dry_run", "shard_ids"}
    if unknown:
        raise ApiError(400, f"{sorted(unknown)[0]}: unknown field", field=sorted(unknown)[0])
    dry_run = _field(body, "dry_run", bool, "true or false") or False
    raw = _field(body, "shard_ids", list, "a list of shard ids")
    if raw is None:
        return dry_run, None
    ids = []
    for item in raw:  # numbers, or strings: "3" (the Python SDK) or "shard-3" (the typed SDKs' ids)
        if isinstance(item, float) and item.is_integer():  # 3.0 is JSON's 3
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise ApiError(400, "shard_ids: must be shard numbers or \"shard-N\" ids", field="shard_ids")
        digits = item.removeprefix("shard-") if isinstance(item, str) else None
        if digits is not None and not (digits.isascii() and digits.isdigit() and len(digits) <= 6):
            raise ApiError(400, f"shard_ids: {item!r} is not a shard number or \"shard-N\" id", field="shard_ids")
        shard = int(digits) if digits is not None else int(item)
        if not 0 <= shard < shards:
            raise ApiError(400, f"shard_ids: {shard} is not in 0..{shards - 1}", field="shard_ids")
        ids.append(shard)
    return dry_run, ids


def mount_operation_routes(app: QuartTrio, node: FacadeDeps, admin_route: Callable[..., Any]) -> None:
    def ops() -> Operations:
        if node.operations is None:
            raise ApiError(409, "this needs cluster mode")
        return node.operations

    def view(statuses: list[Any]) -> Response:
        return json_response(maintenance_view(statuses, in_maintenance(node)))

    async def set_maintenance(enable: bool) -> Response:
        node_ids, options = parse_maintenance(await json_body(required=False))
        return view(await ops().maintenance(enable, node_ids, options if enable else None))

    async def status() -> Response:
        if node.operations is None and not node.config.cluster_mode:
            return view([single_node_maintenance(node)])  # a lone node: always active
        return view(await ops().maintenance(None, None))

    @admin_route("/maintenance/enable", ["POST"])
    async def maintenance_enable() -> Response:
        return await set_maintenance(True)

    @admin_route("/maintenance/disable", ["POST"])
    async def maintenance_disable() -> Response:
        return await set_maintenance(False)

    @admin_route("/maintenance/status", ["GET"])
    async def maintenance_status() -> Response:
        return await status()

    # the SDK's paths
    @admin_route("/cluster/maintenance/enable", ["POST"])
    async def cluster_maintenance_enable() -> Response:
        return await set_maintenance(True)

    @admin_route("/cluster/maintenance/disable", ["POST"])
    async def cluster_maintenance_disable() -> Response:
        return await set_maintenance(False)

    @admin_route("/cluster/maintenance", ["GET"])
    async def cluster_maintenance() -> Response:
        return await status()

    async def rebalance() -> Response:
        dry_run, shard_ids = parse_rebalance(await json_body(required=False), node.config.shards)
        if node.operations is None and not node.config.cluster_mode:
            # a lone node holds every shard: nothing to move, and nothing wrong with asking
            answer: Any = {"moved": 0, "dry_run": dry_run, "shard_map_version": 0, "plan": []}
        else:
            answer = await ops().rebalance(dry_run, shard_ids)
        return json_response(rebalance_view(answer, dry_run=dry_run, shards=node.config.shards,
                                            operation_id=f"rebalance-{uuid.uuid4().hex[:16]}"))

    admin_route("/cluster/rebalance", ["POST"])(rebalance)

    async def shards_rebalance() -> Response:
        return await rebalance()

    admin_route("/cluster/shards/rebalance", ["POST"])(shards_rebalance)
