"""Importance updates and sessions over HTTP on one node: the SDK's routes and shapes, bad input
that changes nothing, the WAL (a crash replays them) and snapshots (a clean stop, then nothing to replay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .test_facade import assert_error
from .test_memory_api import FakeWallClock, memory_node, store


async def _memory(client: httpx.AsyncClient, agent: str, mid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/memory/get/{mid}", params={"agent_id": agent})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_importance_post_and_patch_set_it_and_survive_a_crash(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock, crash=True) as (_, client):
        m = await store(client, "a1", "likes tea", importance=0.2)
        clock.now += 10
        r = await client.post("/v1/memory/importance", json={"agent_id": "a1", "memory_id": m["id"], "importance": 0.9})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["id"], body["memory_id"], body["importance"], body["updated"]) == (m["id"], m["id"], 0.9, True)
        assert body["updated_at"] == int(clock.now) and body["content"] == "likes tea"
        r = await client.patch(f"/v1/memories/{m['id']}/importance", json={"agent_id": "a1", "importance": 0.4})
        assert r.status_code == 200 and r.json()["importance"] == 0.4
        assert (await _memory(client, "a1", m["id"]))["importance"] == 0.4
    async with memory_node(tmp_path, clock) as (_, client):  # replayed from the WAL
        assert (await _memory(client, "a1", m["id"]))["importance"] == 0.4


async def test_bad_importance_requests_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (_, client):
        m = await store(client, "a1", "likes tea", importance=0.2)
        for bad, field in [({"agent_id": "a1", "memory_id": m["id"], "importance": "high"}, "importance"),
                           ({"agent_id": "a1", "memory_id": m["id"], "importance": 1.5}, "importance"),
                           ({"agent_id": "a1", "memory_id": m["id"], "importance": -0.1}, "importance"),
                           ({"agent_id": "a1", "memory_id": m["id"]}, "importance"),
                           ({"agent_id": "a1", "importance": 0.5}, "memory_id"),
                           ({"memory_id": m["id"], "importance": 0.5}, "agent_id")]:
            body = assert_error(await client.post("/v1/memory/importance", json=bad), 400, "INVALID_REQUEST")
            assert body["error"].startswith(field), body
        body = assert_error(await client.patch(f"/v1/memories/{m['id']}/importance",
                                               json={"agent_id": "a1", "importance": True}), 400, "INVALID_REQUEST")
        assert "importance" in body["error"]
        body = assert_error(await client.post("/v1/memory/importance",
                                              json={"agent_id": "a1", "memory_id": "nope-1", "importance": 0.5}),
                            404, "NOT_FOUND")
        assert "nope-1" in body["error"]
        assert_error(await client.patch("/v1/memories/nope-2/importance", json={"agent_id": "a1", "importance": 0.5}),
                     404, "NOT_FOUND")
        assert (await _memory(client, "a1", m["id"]))["importance"] == 0.2


async def test_a_session_lives_starts_touches_ends_and_keeps_its_end(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock) as (_, client):
        r = await client.post("/v1/sessions/start", json={"agent_id": "a1", "metadata": {"topic": "tea"}})
        assert r.status_code == 200, r.text
        s = r.json()["session"]
        sid = s["id"]
        assert sid.startswith("a1~") and s["session_id"] == sid and s["agent_id"] == "a1"
        assert (s["session_state"], s["ended_at"], s["metadata"], s["memory_count"]) == ("active", None, {"topic": "tea"}, 0)
        assert s["idle_deadline_at"] == int(clock.now) + 4 * 3600 and s["idle_timeout_secs"] is None
        clock.now += 60
        m = (await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "green", "session_id": sid})).json()
        assert m["session_state"] == "active" and m["memory"]["session_id"] == sid
        clock.now += 60
        t = (await client.post(f"/v1/sessions/{sid}/touch")).json()
        assert t["session_state"] == "active" and t["session"]["last_activity_at"] == int(clock.now)
        assert t["idle_deadline_at"] == int(clock.now) + 4 * 3600
        got = (await client.get(f"/v1/sessions/{sid}")).json()
        assert got["memory_count"] == 1 and got["last_activity_at"] == int(clock.now)
        mem = (await client.get(f"/v1/sessions/{sid}/memories", params={"content_preview_chars": 2})).json()
        assert mem["total"] == 1 and mem["memories"][0]["content"] == "gr" and mem["memories"][0]["content_truncated"]
        clock.now += 5
        e = (await client.post(f"/v1/sessions/{sid}/end", json={"summary": "talked tea"})).json()
        assert (e["session_state"], e["ended_reason"], e["summary"], e["ended_at"]) == ("ended", "client", "talked tea",
                                                                                         int(clock.now))
        ended_at = e["ended_at"]
        clock.now += 5
        t = (await client.post(f"/v1/sessions/{sid}/touch")).json()  # never re-opens
        assert t["session_state"] == "ended" and t["idle_deadline_at"] is None
        e2 = (await client.post(f"/v1/sessions/{sid}/end", json={"summary": "other"})).json()
        assert (e2["summary"], e2["ended_at"]) == ("talked tea", ended_at)
        m = (await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "late", "session_id": sid})).json()
        assert m["session_state"] == "ended"  # stored all the same, as the SDK documents
        b = (await client.post("/v1/memories/store/batch", json={"agent_id": "a1", "memories": [
            {"content": "x", "session_id": sid}, {"content": "y", "session_id": "a tag only"}]})).json()
        assert b["ended_sessions"] == [sid]
        plain = (await client.post("/v1/memory/store", json={"agent_id": "a1", "content": "z", "session_id": "free"})).json()
        assert "session_state" not in plain  # not a started session: a tag, as before


async def test_sessions_are_listed_newest_first_paged_and_end_when_idle(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock, session_idle_timeout_secs=100) as (_, client):
        ids = []
        for n in range(4):
            body: dict[str, Any] = {"agent_id": "a1", "session_id": f"s{n}"}
            if n == 3:
                body["idle_timeout_secs"] = 0
            r = await client.post("/v1/sessions/start", json=body)
            assert r.status_code == 200, r.text
            ids.append(r.json()["session"]["id"])
            clock.now += 10
        other = (await client.post("/v1/sessions/start", json={"agent_id": "a2"})).json()["session"]["id"]
        assert ids == [f"a1~s{n}" for n in range(4)]
        everyone = (await client.get("/v1/sessions", params={"limit": 3})).json()  # every agent's
        assert [s["id"] for s in everyone] == [other, ids[3], ids[2]]
        assert [s["id"] for s in (await client.get("/v1/sessions", params={"offset": 4})).json()] == [ids[0]]
        listed = (await client.get("/v1/sessions", params={"agent_id": "a1"})).json()
        assert [s["id"] for s in listed] == ids[::-1]
        page = (await client.get("/v1/sessions", params={"agent_id": "a1", "limit": 2, "offset": 1})).json()
        assert [s["id"] for s in page] == [ids[2], ids[1]]
        await client.post(f"/v1/sessions/{ids[2]}/touch")
        clock.now = FakeWallClock().now + 115  # s0, s1 idle past 100 s; s2 touched at 40 s; s3 never times out
        active = (await client.get("/v1/agents/a1/sessions", params={"active_only": "true"})).json()
        assert [s["id"] for s in active] == [ids[3], ids[2]]
        s0 = (await client.get(f"/v1/sessions/{ids[0]}")).json()
        assert (s0["session_state"], s0["ended_reason"], s0["ended_at"], s0["idle_since"]) == \
            ("ended", "idle", int(FakeWallClock().now) + 100, int(FakeWallClock().now))
        e = (await client.post(f"/v1/sessions/{ids[0]}/end", json={"summary": "late"})).json()
        assert (e["ended_reason"], e["summary"]) == ("idle", None)  # the idle end is kept
        stats = (await client.get("/v1/agents/a1/stats")).json()
        assert (stats["total_sessions"], stats["active_sessions"]) == (4, 2)


async def test_bad_session_requests_are_clear_4xx_and_change_nothing(tmp_path: Path) -> None:
    async with memory_node(tmp_path) as (_, client):
        sid = (await client.post("/v1/sessions/start", json={"agent_id": "a1", "session_id": "one"})).json()["session"]["id"]
        for path in ("/v1/sessions/a1~nope", "/v1/sessions/a1~nope/memories"):
            body = assert_error(await client.get(path), 404, "NOT_FOUND")
            assert "a1~nope" in body["error"]
        assert_error(await client.post("/v1/sessions/a1~nope/touch"), 404, "NOT_FOUND")
        assert_error(await client.post("/v1/sessions/a1~nope/end"), 404, "NOT_FOUND")
        for bad in ("no-separator", "bad agent~x", "a1~", "a1~a/b"):
            r = await client.get(f"/v1/sessions/{bad}")
            assert r.status_code in (400, 404), r.text
            if r.status_code == 400:
                assert r.json()["error"].startswith("session_id")
        for body, field in [({"agent_id": "a1", "idle_timeout_secs": -1}, "idle_timeout_secs"),
                            ({"agent_id": "a1", "idle_timeout_secs": 2_592_001}, "idle_timeout_secs"),
                            ({"agent_id": "a1", "session_id": "a~b"}, "session_id"),
                            ({"agent_id": "a1", "metadata": "x"}, "metadata"),
                            ({"agent_id": "a1", "colour": "red"}, "colour"),
                            ({}, "agent_id")]:
            r = await client.post("/v1/sessions/start", json=body)
            assert_error(r, 400, "INVALID_REQUEST")
            assert r.json()["error"].startswith(field), r.text
        assert_error(await client.post("/v1/sessions/start", json={"agent_id": "a1", "session_id": "one"}), 409, "CONFLICT")
        assert_error(await client.post(f"/v1/sessions/{sid}/end", json={"summary": 5}), 400, "INVALID_REQUEST")
        assert_error(await client.get("/v1/sessions", params={"agent_id": "a1", "active_only": "maybe"}),
                     400, "INVALID_REQUEST")
        listed = (await client.get("/v1/sessions", params={"agent_id": "a1"})).json()
        assert [(s["id"], s["session_state"], s["summary"]) for s in listed] == [(sid, "active", None)]


async def test_sessions_survive_a_crash_and_a_clean_restart_from_snapshots(tmp_path: Path) -> None:
    clock = FakeWallClock()
    async with memory_node(tmp_path, clock, crash=True) as (_, client):
        a = (await client.post("/v1/sessions/start", json={"agent_id": "a1", "metadata": {"k": 1}})).json()["session"]
        b = (await client.post("/v1/sessions/start", json={"agent_id": "a2"})).json()["session"]
        await store(client, "a1", "in a", session_id=a["id"])
        clock.now += 7
        await client.post(f"/v1/sessions/{b['id']}/end", json={"summary": "done"})
        before = [(await client.get(f"/v1/sessions/{sid}")).json() for sid in (a["id"], b["id"])]
    async with memory_node(tmp_path, clock) as (node, client):  # from the WAL; a clean stop snapshots
        assert [(await client.get(f"/v1/sessions/{sid}")).json() for sid in (a["id"], b["id"])] == before
    async with memory_node(tmp_path, clock) as (node, client):
        assert node.metrics.sample("dakera_wal_replayed_records") == 0  # the snapshots carried them
        after = [(await client.get(f"/v1/sessions/{sid}")).json() for sid in (a["id"], b["id"])]
        assert after == before and after[0]["memory_count"] == 1 and after[1]["summary"] == "done"
