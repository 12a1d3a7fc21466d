"""The memory API routes (the SDK's paths): thin, they parse HTTP and call the MemoryService."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Response, request
from quart_trio import QuartTrio

from .errors import ApiError
from .responses import json_body, json_response

if TYPE_CHECKING:
    from ..node import Node


def mount_memory_routes(app: QuartTrio, node: Node) -> None:
    def service() -> Any:
        if node.memory is None or not node.readiness.is_open("storage"):
            raise ApiError(503, "node is not ready: storage is still being recovered", retry_after=1)
        return node.memory

    @app.post("/v1/memory/store")
    async def store() -> Response:
        return json_response(await service().store(await json_body()))

    @app.post("/v1/memories/store/batch")
    async def store_batch() -> Response:
        return json_response(await service().store_batch(await json_body()))

    @app.get("/v1/memory/get/<memory_id>")
    async def get(memory_id: str) -> Response:
        return json_response(service().get(request.args.get("agent_id"), memory_id))

    @app.put("/v1/memory/update/<memory_id>")
    async def update(memory_id: str) -> Response:
        return json_response(await service().update(request.args.get("agent_id"), memory_id, await json_body()))

    @app.post("/v1/memory/forget")
    async def forget() -> Response:
        return json_response(await service().forget(await json_body()))

    @app.post("/v1/memory/recall")
    async def recall() -> Response:
        return json_response(service().recall(await json_body(), default_top_k=5))

    @app.post("/v1/memory/search")
    async def search() -> Response:
        return json_response(service().recall(await json_body(), default_top_k=10))

    @app.post("/v1/memories/recall/batch")
    async def recall_batch() -> Response:
        return json_response(service().batch_recall(await json_body()))

    @app.delete("/v1/memories/forget/batch")
    async def forget_batch() -> Response:
        return json_response(await service().batch_forget(await json_body()))

    @app.get("/v1/agents")
    async def agents() -> Response:
        return json_response(service().list_agents())

    @app.get("/v1/agents/<agent_id>/memories")
    async def agent_memories(agent_id: str) -> Response:
        return json_response(service().agent_memories(agent_id, request.args))

    @app.get("/v1/agents/<agent_id>/stats")
    async def agent_stats(agent_id: str) -> Response:
        return json_response(service().agent_stats(agent_id))
