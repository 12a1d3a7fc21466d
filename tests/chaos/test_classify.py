"""How the workload files an SDK error: ``fail`` only when the node said it did nothing (or no
connection was made), ``info`` whenever the request may have been applied."""

from __future__ import annotations

import pytest
import requests
import urllib3
from dakera.exceptions import ConnectionError as SdkConnectionError
from dakera.exceptions import TimeoutError as SdkTimeout
from dakera.exceptions import error_from_response

from .history import History
from .workload import Workload, classify


def answered(status: int, message: str) -> Exception:
    return error_from_response(status, {"error": message, "code": "X"})


@pytest.mark.parametrize(("status", "message", "outcome"), [
    (400, "content: is required", "fail"),
    (404, "memory m1 not found", "fail"),
    (503, "node is not ready: still starting", "fail"),
    (503, "node is serving 256 requests, its limit (DAKERA_MAX_CONCURRENT_REQUESTS); retry shortly", "fail"),
    (503, "node n1 is in maintenance and rejects client requests; send them to another node", "fail"),
    (503, "shard 3 is being taken over by this node; retry shortly", "fail"),
    (503, "shard owner n2 is unreachable; retry once the map moves the shard", "fail"),
    (503, "the write is durable on the primary but reached 1 of 2 copies", "info"),
    (503, "shard owner n2 did not answer: timeout", "info"),
    (503, "shard 3 moved before the write reached 2 copies; it may or may not be kept", "info"),
    (500, "internal error; see the node's log", "info"),
    (502, "bad gateway", "info"),
])
def test_answers_are_filed_by_what_the_node_says_it_did(status: int, message: str, outcome: str) -> None:
    assert classify(answered(status, message)) == (outcome, f"{status} {message}")


def test_no_connection_made_failed_and_a_cut_or_timed_out_request_is_unknown() -> None:
    refused = requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(
        None, "/v1/memory/store", urllib3.exceptions.NewConnectionError(None, "connection refused")))  # type: ignore[arg-type]
    cut = requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted."))

    def sdk_error(cause: Exception) -> Exception:
        try:
            raise SdkConnectionError("Failed to connect") from cause
        except SdkConnectionError as exc:
            return exc

    assert classify(sdk_error(refused))[0] == "fail"
    assert classify(sdk_error(requests.exceptions.ConnectTimeout("connect timed out")))[0] == "fail"
    assert classify(sdk_error(cut))[0] == "info"
    assert classify(SdkTimeout("Request timed out"))[0] == "info"
    assert classify(ValueError("not JSON"))[0] == "info"


class Refusing:
    """An SDK client whose every call raises ``exc``."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def store_memory(self, agent: str, content: str) -> dict:
        raise self.exc

    def forget(self, agent: str, mid: str) -> dict:
        raise self.exc

    def agent_memories(self, agent: str, limit: int) -> list:
        raise self.exc


@pytest.mark.parametrize(("kind", "outcome"), [("store", "fail"), ("forget", "info"), ("read", "fail")])
def test_the_workload_records_an_error_as_the_ops_error_and_outcome(kind: str, outcome: str) -> None:
    history = History()
    workload = Workload(lambda: ["u"], agents=1, clients=1, history=history, seed=0)
    refused = answered(503, "node is not ready: still starting")
    unknown = answered(503, "shard owner n2 did not answer: timeout")
    if kind == "store":
        assert workload._store(0, Refusing(refused), "u", "agent-0", "c0-0") is None  # type: ignore[arg-type]
    elif kind == "forget":
        assert workload._forget(0, Refusing(unknown), "u", "agent-0", "m1") == "info"  # type: ignore[arg-type]
    else:
        workload._read(0, Refusing(unknown), "u", "agent-0")  # type: ignore[arg-type]
    [op] = history.ops()
    assert (op.kind, op.outcome, op.result) == (kind, outcome, None)
    assert op.error is not None and op.error.startswith("503 ")
