"""The memory API routes (the SDK's paths): thin. They name the operation and hand the raw request
to the router, which serves it here or forwards it to the owner of the agent's shard."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from ..routing.router import Router
from ..store import validation
from ..store.service import valid
from ..store.sessions import split_session_id
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
        data = await router().dumps_answer(payload)
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

    @app.post("/v1/memory/importance")
    async def importance() -> Response:
        return await run("importance")

    @app.patch("/v1/memories/<memory_id>/importance")
    async def patch_importance(memory_id: str) -> Response:
        return await run("patch_importance", memory_id=memory_id)

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
        with valid():
            limit, offset = validation.parse_agent_page(request.args)
        page = await router().list_agents(limit, offset)
        headers = {}
        if len(page) == limit:  # there may be more
            headers["Link"] = f'</v1/agents?limit={limit}&offset={offset + limit}>; rel="next"'
        data = await router().dumps_answer(page)
        return json_bytes_response(data, 200, headers or None)

    @app.get("/v1/agents/<agent_id>/memories")
    async def agent_memories(agent_id: str) -> Response:
        return await run("agent_memories", agent=agent_id)

    @app.get("/v1/agents/<agent_id>/stats")
    async def agent_stats(agent_id: str) -> Response:
        return await run("agent_stats", agent=agent_id)

    # sessions: a route that names only a session is routed by the agent its id carries
    def session_agent(session_id: str) -> str:
        parts = split_session_id(session_id)
        return parts[0] if parts is not None else ""  # malformed: refused (400) where it is served

    @app.post("/v1/sessions/start")
    async def session_start() -> Response:
        return await run("session_start")

    @app.get("/v1/sessions")
    async def session_list() -> Response:
        if "agent_id" in request.args:
            return await run("session_list")
        # every agent's sessions: each member's newest, merged (as the agent listing is)
        with valid():
            _, active_only, limit, offset = validation.parse_session_listing(request.args, need_agent=False)
        page = await router().list_sessions(active_only, limit, offset)
        return json_bytes_response(await router().dumps_answer(page), 200)

    @app.get("/v1/sessions/<session_id>")
    async def session_get(session_id: str) -> Response:
        return await run("session_get", memory_id=session_id, agent=session_agent(session_id))

    @app.post("/v1/sessions/<session_id>/touch")
    async def session_touch(session_id: str) -> Response:
        return await run("session_touch", memory_id=session_id, agent=session_agent(session_id))

    @app.post("/v1/sessions/<session_id>/end")
    async def session_end(session_id: str) -> Response:
        return await run("session_end", memory_id=session_id, agent=session_agent(session_id))

    @app.get("/v1/sessions/<session_id>/memories")
    async def session_memories(session_id: str) -> Response:
        return await run("session_memories", memory_id=session_id, agent=session_agent(session_id))

    @app.get("/v1/agents/<agent_id>/sessions")
    async def agent_sessions(agent_id: str) -> Response:
        return await run("agent_sessions", agent=agent_id)
