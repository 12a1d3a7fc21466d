"""The memory API routes (the SDK's paths): thin. They name the operation and hand the raw request
to the router, which serves it here or forwards it to the owner of the agent's shard."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from .. import safejson
from ..routing.router import LARGE_ANSWER, Router, rough_size
from ..store import validation
from .deps import FacadeDeps
from .errors import ApiError
from .responses import json_bytes_response, request_bytes


def mount_memory_routes(app: QuartTrio, node: FacadeDeps) -> None:
    def router() -> Router:
        if node.router is None:
            raise ApiError(503, "node is not ready: still starting", retry_after=1)
        return node.router

    async def run(op: str, *, memory_id: str = "", agent: str = "") -> Response:
        raw = await request_bytes()
        status, payload, owner = await router().run(op, raw, dict(request.args), memory_id=memory_id,
                                                       path_agent=agent)
        # a large answer is serialized in a worker thread, not on the loop the protocols share
        data = (await node.offload.run(safejson.dumps, payload, size=rough_size(payload)) if op in LARGE_ANSWER
                else safejson.dumps(payload))
        # smart clients and load balancers can go straight to the owner next time
        return json_bytes_response(data, status, {"X-Dakera-Owner": owner} if owner else None)

    @app.post("/v1/memory/store")
    async def store() -> Response:
        return await run("store")

    @app.post("/v1/memories/store/batch")
    async def store_batch() -> Response:
        return await run("store_batch")

    @app.get("/v1/memory/get/<memory_id>")
    async def get(memory_id: str) -> Response:
        return await run("get", memory_id=memory_id)

    @app.put("/v1/memory/update/<memory_id>")
    async def update(memory_id: str) -> Response:
        return await run("update", memory_id=memory_id)

    @app.post("/v1/memory/forget")
    async def forget() -> Response:
        return await run("forget")

    @app.post("/v1/memory/recall")
    async def recall() -> Response:
        return await run("recall")

    @app.post("/v1/memory/search")
    async def search() -> Response:
        return await run("search")

    @app.post("/v1/memories/recall/batch")
    async def recall_batch() -> Response:
        return await run("batch_recall")

    @app.delete("/v1/memories/forget/batch")
    async def forget_batch() -> Response:
        return await run("batch_forget")

    @app.get("/v1/agents")
    async def agents() -> Response:
        # a plain list, as the SDK reads it; bounded pages (limit/offset), the next one linked
        try:
            limit, offset = validation.parse_agent_page(request.args)
        except validation.Invalid as exc:
            raise ApiError(400, str(exc), field=exc.field) from None
        page = await router().list_agents(limit, offset)
        headers = {}
        if len(page) == limit:  # there may be more
            headers["Link"] = f'</v1/agents?limit={limit}&offset={offset + limit}>; rel="next"'
        data = await node.offload.run(safejson.dumps, page, size=rough_size(page))
        return json_bytes_response(data, 200, headers or None)

    @app.get("/v1/agents/<agent_id>/memories")
    async def agent_memories(agent_id: str) -> Response:
        return await run("agent_memories", agent=agent_id)

    @app.get("/v1/agents/<agent_id>/stats")
    async def agent_stats(agent_id: str) -> Response:
        return await run("agent_stats", agent=agent_id)
