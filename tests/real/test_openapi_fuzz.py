"""schemathesis against a real node process, from the node's own ``GET /openapi.json``.

Every documented operation gets positive cases (valid per the document) and negative ones (each
violating it somewhere), from a fixed seed, derandomized: no answer may be a 5xx, every answer
must match its documented status, media type and schema, every negative case must be refused, every
refusal (4xx) must be the JSON error shape, and a refused request must have written nothing
(the node's agents and their memory counts, its WAL record count and its backups are the same
before and after it). The budget is ``DAKERA_FUZZ_EXAMPLES`` cases per operation and mode (3 in
``make test``; ``make fuzz-api`` runs more, with shrinking).

Nothing is excluded: on a single node the maintenance and rebalance routes answer 409 (cluster
mode only) after checking their bodies; the backup routes run for real (a backup of the few
memories stored so far; restores and deletes name ids that do not exist); the cache routes answer
without a cache. Memories that would expire while the run goes on (small ``ttl_seconds`` or
``expires_at``, still valid) are given a later expiry, so that a purge (a WAL record) never lands
between a refused request's before and after.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from dakera_actors.api.openapi import BUNDLE, OPERATIONS, documented_routes, operation_key

from .procs import NodeProcess

pytestmark = pytest.mark.real

KEY = "fuzz-root-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = int(os.environ.get("DAKERA_FUZZ_EXAMPLES", "3"))
SHRINK = os.environ.get("DAKERA_FUZZ_SHRINK", "") == "1"
#: the /v1/admin twins of the /admin routes (the same handlers) are fuzzed by `make fuzz-api` only
TWINS = os.environ.get("DAKERA_FUZZ_TWINS", "") == "1"
WAL_RECORDS = re.compile(r"^dakera_wal_records_total (\S+)$", re.MULTILINE)
LATER = 10 * 365 * 24 * 3600  # what a short-lived memory's expiry becomes (still valid)


class Fuzzed:
    def __init__(self, node: NodeProcess, schema: Any) -> None:
        self.node = node
        self.schema = schema
        self.http = httpx.Client(base_url=node.url, headers=AUTH, timeout=30)

    def state(self) -> tuple[Any, ...]:
        """What a refused request must not change: agents with their memory counts, WAL records, backups."""
        agents = self.http.get("/v1/agents", params={"limit": 10_000})
        assert agents.status_code == 200, agents.text
        wal = WAL_RECORDS.findall(self.http.get("/metrics").text)
        assert len(wal) == 1, "no dakera_wal_records_total in /metrics"
        backups = self.http.get("/admin/backups")
        assert backups.status_code == 200, backups.text
        return (sorted((a["agent_id"], a["memory_count"]) for a in agents.json()), wal,
                sorted(b["backup_id"] for b in backups.json()["backups"]))


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp: Path = tmp_path_factory.mktemp("openapi-fuzz")
    node = NodeProcess(tmp, DAKERA_ROOT_API_KEY=KEY).start()
    try:
        node.wait_healthy()
        answer = httpx.get(node.url + "/openapi.json", headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        schema = schemathesis.openapi.from_dict(answer.json())
        # unknown query parameters are ignored, not refused (as most HTTP APIs do); the key is
        # sent with every case (refusals without it: the ignored_auth check and tests/http)
        schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
        fuzzed = Fuzzed(node, schema)
        yield fuzzed
        fuzzed.http.close()
        assert node.proc is not None and node.proc.poll() is None, f"the node died:\n{node.log()}"
        assert "http_unhandled_error" not in node.log(), node.log()
    finally:
        node.stop()


def _later(value: Any, floor: float) -> Any:
    """A valid but near expiry made distant (a number; anything else stays as it is)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < floor:
        return int(floor + LATER)
    return value


def keep_alive(body: Any) -> None:
    """Give memories about to be stored a distant expiry (see the module's doc)."""
    items = [body] if isinstance(body, dict) else []
    if isinstance(body, dict) and isinstance(body.get("memories"), list):
        items += [m for m in body["memories"] if isinstance(m, dict)]
    now = time.time()
    for item in items:
        if "ttl_seconds" in item and isinstance(item["ttl_seconds"], int | float) and item["ttl_seconds"] >= 1:
            item["ttl_seconds"] = _later(item["ttl_seconds"], 86_400)
        if "expires_at" in item:
            item["expires_at"] = _later(item["expires_at"], now + 86_400)


def is_error_shape(response: Any) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    kinds = {k.lower(): v for k, v in response.headers.items()}.get("content-type") or [""]
    return (kinds[0].startswith("application/json") and isinstance(body, dict)
            and isinstance(body.get("error"), str) and isinstance(body.get("code"), str))


#: operations left out of the generic run, and why
EXCLUDED = {
    # a generated schedule may be valid and enabled ("* * * * *"): it would start backups all
    # through the rest of the run (its checks: tests/backup, and the edge test of tests/http/test_openapi.py)
    ("/admin/backups/schedule", "POST"): "enabled schedules start backups for the rest of the run",
}
#: operations whose valid requests may still be refused for what the generated data cannot know
#: (positive_data_acceptance is not checked for them; every other check is)
STATEFUL = {
    ("/admin/backups/upload", "POST"): "the body must be a real backup bundle",
    ("/admin/backups/restore", "POST"): "a bundle body must be a real bundle; a point in time must be within "
                                        "the cold tier's archive, which this node does not have",
    ("/admin/backups/<backup_id>/restore", "POST"): "a point in time must be within the cold tier's archive",
}


def run_operation(fuzzed: Fuzzed, rule: str, method: str, mode: GenerationMode) -> None:
    path = rule.replace("<", "{").replace(">", "}")
    operation = fuzzed.schema[path][method]
    excluded = [positive_data_acceptance] if operation_key(rule, method) in STATEFUL else []
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else [])

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=phases,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        keep_alive(case.body)
        before = fuzzed.state() if method != "GET" else None  # a GET writes nothing whatever it answers
        response = case.call(base_url=fuzzed.node.url, headers=AUTH)
        case.validate_response(response, headers=AUTH, excluded_checks=excluded)
        if 400 <= response.status_code < 500:
            assert is_error_shape(response), f"{method} {path} refused without the JSON error shape: {response.text!r}"
        if 400 <= response.status_code < 500 and before is not None:
            after = fuzzed.state()
            assert after == before, (f"{method} {path} was refused ({response.status_code} {response.text}) "
                                     f"but changed the node: {before} -> {after}")

    check()


def _fuzzed(mode: GenerationMode) -> list[tuple[str, str]]:
    """The routes fuzzed in ``mode``: every documented one not excluded (negative: those that take
    anything that can be wrong: a JSON body, a query or path parameter with a schema)."""
    routes = [(rule, method) for rule, method in sorted(documented_routes())
              if operation_key(rule, method) not in EXCLUDED and (TWINS or not rule.startswith("/v1/admin/"))]
    if mode is GenerationMode.NEGATIVE:
        # any bytes may be a bundle, and any non-empty string a cache namespace: nothing to get wrong
        routes = [(rule, method) for rule, method in routes if ("<" in rule and "<namespace>" not in rule) or (
            (op := OPERATIONS[operation_key(rule, method)]).body not in (None, BUNDLE) or op.query)]
    return routes


@pytest.mark.parametrize(("route", "mode"), [(r, m) for m in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                                             for r in _fuzzed(m)],
                         ids=lambda v: f"{v[1]} {v[0]}" if isinstance(v, tuple) else v.value)
def test_every_operation_survives_schemathesis(fuzzed: Fuzzed, route: tuple[str, str], mode: GenerationMode) -> None:
    rule, method = route
    run_operation(fuzzed, rule, method, mode)
