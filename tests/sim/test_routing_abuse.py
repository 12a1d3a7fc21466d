"""Routing under abuse in an in-process cluster (MockClock): a forwarded body nested too deeply is
the facade's 400 relayed back, never a crash of the owner; the agent listing pages across members."""

from __future__ import annotations

import json

import trio
import trio.testing

from dakera_actors.routing.messages import Forward, Reply
from dakera_actors.store.shard import shard_of
from dakera_actors.testing import open_cluster

from ..waiting import eventually
from .test_routing import ready

MockClock = trio.testing.MockClock


async def test_a_forwarded_body_nested_too_deeply_is_a_400_and_the_owner_stays_up(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=3) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        sender = cluster.node("node-1")
        smap = sender.shard_map.view.value  # type: ignore[union-attr]
        assert smap is not None and sender.membership is not None and sender.endpoint is not None
        agent = next(f"agent-{i}" for i in range(1000) if smap.owner(shard_of(f"agent-{i}", 64)) == "node-2")
        owner = sender.membership.view.value.members["node-2"]
        deep = b'{"agent_id": "' + agent.encode() + b'", "content": "x", "metadata": ' + \
            b"[" * 100_000 + b"]" * 100_000 + b"}"
        reply = await sender.endpoint.request(owner.address, Forward("store", deep, {}, map_version=smap.version),
                                              timeout=5)
        answer: Reply = reply.message
        assert answer.status == 400, answer
        body = json.loads(answer.body)
        assert body["code"] == "INVALID_REQUEST" and "nested" in body["error"]
        # the owner is still up and serving, and stored nothing
        async with cluster.client("node-2") as http:
            assert (await http.get("/v1/agents")).json() == []
            r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": "fine"})
            assert r.status_code == 200, r.text


async def test_the_agent_listing_pages_across_members(autojump_clock: MockClock) -> None:
    async with open_cluster(3, seed=4) as cluster:
        await eventually(lambda: ready(cluster), timeout=30)
        agents = [f"agent-{i:02d}" for i in range(12)]
        async with cluster.client("node-1") as http:
            for agent in agents:
                r = await http.post("/v1/memory/store", json={"agent_id": agent, "content": "x"})
                assert r.status_code == 200, r.text
        async with cluster.client("node-3") as http:
            seen: list[str] = []
            offset = 0
            while True:
                page = await http.get("/v1/agents", params={"limit": 5, "offset": offset})
                assert page.status_code == 200, page.text
                assert len(page.json()) <= 5
                seen += [a["agent_id"] for a in page.json()]
                if "link" not in page.headers:
                    break
                offset += 5
        assert seen == agents  # every agent once, in id order, wherever its shard lives
