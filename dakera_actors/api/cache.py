"""The L1.5 cache's admin routes, at ``/admin/cache/...`` and ``/v1/admin/cache/...`` (the SDKs'
paths): its figures, and clearing an agent's cached answers or all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Response

from ..cache.errors import CacheUnavailable
from ..errors import InvalidRequest, Unavailable
from .deps import FacadeDeps
from .responses import json_body, json_response

NO_CACHE = {"enabled": False, "cache_type": "none", "healthy": False, "entries": 0, "total_entries": 0,
            "size_bytes": 0, "memory_bytes": 0, "evictions": 0, "hits": 0, "misses": 0, "hit_rate": 0.0}


def mount_cache_routes(app: Any, node: FacadeDeps, admin_route: Callable[[str, list[str]], Any]) -> None:
    @admin_route("/cache/stats", ["GET"])
    async def cache_stats() -> Response:
        if node.cache is None:
            return json_response(NO_CACHE)
        return json_response(await node.cache.stats())

    async def clear(namespace: str | None) -> Response:
        if node.cache is None:
            return json_response({"success": True, "entries_cleared": 0, "cleared": 0, "entries_evicted": 0,
                                  "message": "this node has no L1.5 cache (DAKERA_REDIS_URL is not set)"})
        try:
            count = await node.cache.clear(namespace)
        except CacheUnavailable as exc:
            raise Unavailable(str(exc)) from None
        what = f"of agent {namespace!r}" if namespace is not None else "of every agent"
        return json_response({"success": True, "entries_cleared": count, "cleared": count, "entries_evicted": count,
                              "message": f"cleared {count} cached answers {what}"})

    @admin_route("/cache/clear", ["POST"])
    async def cache_clear() -> Response:
        body = await json_body(required=False)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise InvalidRequest("body: must be a JSON object")
        namespace = body.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise InvalidRequest("namespace: must be an agent id", field="namespace")
        return await clear(namespace)

    @admin_route("/cache/clear/<namespace>", ["POST"])
    async def cache_clear_agent(namespace: str) -> Response:
        return await clear(namespace)
