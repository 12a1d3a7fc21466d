"""GET /openapi.json in-process (ASGI): the document is the app's own route table, valid OpenAPI 3.1,
keyed like the rest of the API, and its request schemas agree with the validators that serve them."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from werkzeug.routing import Map, Rule

from dakera_actors import Config, Node, open_node
from dakera_actors.api import openapi
from dakera_actors.api.operations import parse_maintenance, parse_rebalance
from dakera_actors.store import schemas, validation

KEY = "openapi-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@asynccontextmanager
async def node_client(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    cfg = Config(data_dir=tmp_path / "data", node_id="node-o", **config)
    async with open_node(cfg, serve_http=False) as node:
        transport = httpx.ASGITransport(app=node.app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            yield node, client


def paths_and_methods(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path.replace("{", "<").replace("}", ">"), method.upper())
            for path, ops in doc["paths"].items() for method in ops}


async def test_every_served_route_is_documented_and_every_documented_route_is_served(tmp_path: Path) -> None:
    async with node_client(tmp_path, root_api_key=KEY) as (node, client):
        served = openapi.served_routes(node.app.url_map)
        assert served == openapi.documented_routes()
        answer = await client.get("/openapi.json", headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert paths_and_methods(answer.json()) == served
        # both admin prefixes, health, metrics, this document and the memory API are all there
        for route in [("/admin/cluster/status", "GET"), ("/v1/admin/cluster/status", "GET"), ("/health", "GET"),
                      ("/v1/ops/metrics", "GET"), ("/openapi.json", "GET"), ("/v1/openapi.json", "GET"),
                      ("/v1/memory/store", "POST"), ("/v1/memories/forget/batch", "DELETE")]:
            assert route in served
        assert (await client.get("/v1/openapi.json", headers=AUTH)).content == answer.content


def documented_rules() -> list[Rule]:
    return [Rule(rule, methods=[method]) for rule, method in openapi.documented_routes()]


def test_a_route_without_an_entry_or_an_entry_without_a_route_is_an_error() -> None:
    openapi.document(Map(documented_rules()), secured=True)  # the app's own table: complete
    with pytest.raises(LookupError, match=r"served but not documented: \[\('/v1/memory/teleport', 'POST'\)\]"):
        openapi.document(Map([*documented_rules(), Rule("/v1/memory/teleport", methods=["POST"])]), secured=True)
    with pytest.raises(LookupError, match=r"documented but not served: \[\('/v1/admin/cache/stats', 'GET'\)\]"):
        openapi.document(Map([r for r in documented_rules() if r.rule != "/v1/admin/cache/stats"]), secured=True)


@pytest.mark.parametrize("config", [{"root_api_key": KEY},
                                    {"backup_key": bytes(32), "shards": 8}],
                         ids=["keyed", "open-with-backup-key"])
async def test_the_document_is_valid_openapi_3_1(tmp_path: Path, config: dict[str, Any]) -> None:
    async with node_client(tmp_path, **config) as (_, client):
        answer = await client.get("/openapi.json", headers=AUTH)
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        doc = answer.json()
        validate(doc)  # openapi-spec-validator: raises on anything not OpenAPI 3.1
        assert doc["openapi"] == "3.1.0"
        assert schemathesis.openapi.from_dict(doc)["/v1/memory/store"]["POST"] is not None
        every = [op for ops in doc["paths"].values() for op in ops.values()]
        # every refusal is the one JSON error shape
        for op in every:
            assert {"400", "404", "503"} <= set(op["responses"])
            assert all(r == {"$ref": f"#/components/responses/E{status}"}
                       for status, r in op["responses"].items() if status.startswith(("4", "5")))
        assert doc["components"]["schemas"]["Error"]["required"] == ["error", "code"]
        keyed = "root_api_key" in config
        assert ("security" in doc) is keyed and ("401" in doc["paths"]["/v1/agents"]["get"]["responses"]) is keyed
        assert doc["paths"]["/health"]["get"].get("security", []) == []
        encrypt = doc["components"]["schemas"]["BackupRequest"]["properties"]["encrypt"]["anyOf"][0]
        assert encrypt == ({"const": False, "description": "true needs DAKERA_BACKUP_KEY, which this node lacks"}
                           if keyed else {"type": "boolean"})


async def test_the_document_is_keyed_like_the_api(tmp_path: Path) -> None:
    async with node_client(tmp_path, root_api_key=KEY) as (_, client):
        for path in ("/openapi.json", "/v1/openapi.json"):
            refused = await client.get(path)
            assert refused.status_code == 401 and refused.json()["code"] == "AUTHENTICATION_REQUIRED"
            assert (await client.get(path, headers=AUTH)).status_code == 200


async def test_a_405_names_the_methods_the_route_takes(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        answer = await client.put("/v1/memory/store")
        assert answer.status_code == 405 and answer.json()["code"] == "METHOD_NOT_ALLOWED"
        assert answer.headers["Allow"] == "POST"
        assert set((await client.delete("/admin/backups")).headers["Allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_no_static_files_are_served(tmp_path: Path) -> None:
    async with node_client(tmp_path) as (_, client):
        answer = await client.get("/static/__init__.py")
        assert answer.status_code == 404 and answer.json()["code"] == "ROUTE_NOT_FOUND"


# -- the request schemas and the validators cannot drift ----------------------------------------

#: (path, method, the parser that serves its body, the body schema the document declares)
VALIDATED: list[tuple[str, str, Callable[[Any], Any], dict[str, Any]]] = [
    ("/v1/memory/store", "POST", validation.parse_store, schemas.STORE),
    ("/v1/memories/store/batch", "POST", validation.parse_store_batch, schemas.STORE_BATCH),
    ("/v1/memory/update/{memory_id}", "PUT", validation.parse_update, schemas.UPDATE),
    ("/v1/memory/forget", "POST", validation.parse_forget, schemas.FORGET),
    ("/v1/memory/recall", "POST", validation.parse_recall, schemas.RECALL),
    ("/v1/memories/recall/batch", "POST", validation.parse_batch_recall, schemas.BATCH_RECALL),
    ("/v1/memories/forget/batch", "DELETE", validation.parse_batch_forget, schemas.BATCH_FORGET),
    ("/v1/memory/importance", "POST", validation.parse_importance, schemas.IMPORTANCE_BODY),
    ("/v1/memories/{memory_id}/importance", "PATCH", lambda body: validation.parse_importance(body, "m1"),
     schemas.IMPORTANCE_PATCH),
    ("/v1/sessions/start", "POST", validation.parse_session_start, schemas.SESSION_START),
    ("/admin/maintenance/enable", "POST", parse_maintenance, openapi.MAINTENANCE_BODY),
    ("/admin/cluster/rebalance", "POST", lambda body: parse_rebalance(body, 64), openapi.rebalance_body(64)),
]


def judge(schema: dict[str, Any]) -> Any:
    """A JSON Schema 2020-12 validator with ECMA-262 regular expressions, as OpenAPI 3.1 says
    (Python's ``re`` lets "$" match before a final newline; jsonschema-rs's engine does not)."""
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


def _accepts(parse: Callable[[Any], Any], body: Any) -> bool:
    try:
        parse(body)
    except validation.Invalid:
        return False
    except Exception as exc:  # the facade's parsers raise ApiError (a ServiceError)
        assert getattr(exc, "status", None) == 400, f"{body!r}: {exc!r}"
        return False
    return True


@pytest.fixture(scope="module")
def document() -> Any:
    return schemathesis.openapi.from_dict(openapi.document(Map(documented_rules()), secured=False, shards=64))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method", "parse", "schema"), VALIDATED, ids=[f"{m} {p}" for p, m, _, _ in VALIDATED])
def test_the_validators_accept_exactly_what_the_schemas_allow(document: Any, path: str, method: str,
                                                               parse: Callable[[Any], Any], schema: dict[str, Any],
                                                               mode: GenerationMode) -> None:
    """Bodies schemathesis generates from the document, valid and not, fed straight to the
    validator that serves the route (no HTTP: hundreds of bodies a second)."""
    # the schema inside the whole document, so that its references resolve
    root = {**document.raw_schema, "$ref": "#/$defs/body", "$defs": {"body": schema}}
    checker = judge(root)
    seen = {"checked": 0}

    @settings(max_examples=15, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=document[path][method].as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        body = case.body
        if not isinstance(body, dict | list | str | int | float | bool) and body is not None:
            return  # no body at all (a negative case that drops it)
        valid = checker.is_valid(body)
        if valid != (mode is GenerationMode.POSITIVE):
            return  # a negative case that negated something else (a header, the path)
        seen["checked"] += 1
        assert _accepts(parse, body) is valid, (
            f"{method} {path}: the schema {'allows' if valid else 'refuses'} {body!r} but the validator "
            f"{'refuses' if valid else 'accepts'} it")

    check()
    assert seen["checked"] >= 3, f"only {seen['checked']} bodies were checked"


def test_integral_numbers_are_integers_to_the_operator_routes_too() -> None:
    # JSON Schema's "integer" is 5 and 5.0 alike; the maintenance, rebalance and schedule parsers
    # refused 5.0 (schemathesis sent it as valid data)
    from dakera_actors.backup.schedule import BackupSchedule, updated

    assert parse_maintenance({"duration_minutes": 5.0})[1].duration_minutes == 5
    assert parse_rebalance({"shard_ids": [3.0, "4"]}, 8) == (False, [3, 4])
    assert updated(BackupSchedule(), {"retention_days": 30.0, "max_backups": 3.0}, can_encrypt=False).retention_days == 30


def _unwrap(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of a nullable field."""
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    return branches[0] if len(branches) == 1 and "anyOf" in schema and "type" not in schema else schema


def _edges(schema: dict[str, Any]) -> list[Any]:
    """Values on and just past every bound a field's schema sets, and one of another type."""
    s = _unwrap(schema)
    out: list[Any] = [{"wrong": "type"}, None]
    kind = s.get("type")
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.001
        for bound, past in (("minimum", -step), ("maximum", step)):
            if bound in s:
                out += [s[bound], s[bound] + past]
        out += ["1", True]
    if kind == "string":
        if "maxLength" in s:
            out += ["x" * s["maxLength"], "x" * (s["maxLength"] + 1)]
        out += ["", "   ", "a\n", "A", "ok-1", 5, "\x1c", "\ufeff", "\x85x"]
    if "enum" in s:
        out += [*s["enum"], "nope"]
    if "pattern" in s:
        out += ["a\n", "Semantic", "EPISODIC", "x y"]
    if kind == "array":
        item = "t" if _unwrap(s.get("items", {})).get("type") == "string" else 1
        out += [[], [item], ["", ""], [5]]
        if "maxItems" in s:
            out += [[f"{item}{n}" for n in range(s["maxItems"])], [f"{item}{n}" for n in range(s["maxItems"] + 1)]]
    return out


#: (parser, body schema, a minimal valid body, nested objects to walk: their key and the sub-schema)
EDGES: list[tuple[str, Callable[[Any], Any], dict[str, Any], dict[str, Any]]] = [
    ("store", validation.parse_store, schemas.STORE, {"agent_id": "a", "content": "x"}),
    ("store_batch", validation.parse_store_batch, schemas.STORE_BATCH,
     {"agent_id": "a", "memories": [{"content": "x"}]}),
    ("update", validation.parse_update, schemas.UPDATE, {"content": "x"}),
    ("forget", validation.parse_forget, schemas.FORGET, {"agent_id": "a", "memory_ids": ["m1"]}),
    ("recall", validation.parse_recall, schemas.RECALL, {"agent_id": "a", "query": "q"}),
    ("batch_recall", validation.parse_batch_recall, schemas.BATCH_RECALL, {"agent_id": "a", "filter": {"tags": ["t"]}}),
    ("batch_forget", validation.parse_batch_forget, schemas.BATCH_FORGET, {"agent_id": "a", "filter": {"tags": ["t"]}}),
    ("importance", validation.parse_importance, schemas.IMPORTANCE_BODY,
     {"agent_id": "a", "memory_id": "m1", "importance": 0.5}),
    ("patch_importance", lambda body: validation.parse_importance(body, "m1"), schemas.IMPORTANCE_PATCH,
     {"agent_id": "a", "importance": 0.5}),
    ("session_start", validation.parse_session_start, schemas.SESSION_START, {"agent_id": "a"}),
    ("session_end", validation.parse_session_end, schemas.SESSION_END, {"summary": "s"}),
    ("maintenance", parse_maintenance, openapi.MAINTENANCE_BODY, {}),
    ("rebalance", lambda body: parse_rebalance(body, 64), openapi.rebalance_body(64), {}),
    ("schedule", lambda body: _schedule(body), openapi.schedule_body(False), {"cron": "0 3 * * *"}),
]


def _schedule(body: Any) -> Any:
    from dakera_actors.backup.schedule import BackupSchedule, ScheduleError, updated

    try:
        return updated(BackupSchedule(), body, can_encrypt=False)
    except ScheduleError as exc:
        raise validation.Invalid(exc.field, str(exc)) from None


@pytest.mark.parametrize(("parse", "schema", "base"), [e[1:] for e in EDGES], ids=[e[0] for e in EDGES])
def test_the_validators_and_the_schemas_agree_on_every_edge(document: Any, parse: Callable[[Any], Any],
                                                             schema: dict[str, Any], base: dict[str, Any]) -> None:
    """Every field (nested ones too) set to values on and just past each bound its schema names:
    the schema and the validator must agree on each body (deterministic, no HTTP)."""
    root = {**document.raw_schema, "$ref": "#/$defs/body", "$defs": {"body": schema}}
    checker = judge(root)
    assert checker.is_valid(base) and _accepts(parse, base), base
    disagreements = []

    def walk(obj_schema: dict[str, Any], body: dict[str, Any], at: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
        count = 0
        for name, field in _unwrap(obj_schema).get("properties", {}).items():
            for value in _edges(field):
                candidate = copy.deepcopy(base)
                at(candidate)[name] = value
                if checker.is_valid(candidate) != _accepts(parse, candidate):
                    disagreements.append(f"{name}={value!r}: schema {checker.is_valid(candidate)}")
                count += 1
            inner = _unwrap(field)
            here = at(base).get(name)
            if inner.get("type") == "object" and isinstance(here, dict):
                count += walk(inner, here, lambda b, name=name: at(b)[name])
            if inner.get("type") == "array" and isinstance(here, list) and here and isinstance(here[0], dict):
                count += walk(inner["items"], here[0], lambda b, name=name: at(b)[name][0])
        return count

    assert walk(schema, base, lambda b: b) >= 8
    assert not disagreements, disagreements
