"""How the workload files an SDK error: ``fail`` only when the node said it did nothing (or no
connection was made), ``info`` whenever the request may have been applied."""

from __future__ import annotations

import pytest
import requests
import urllib3
from dakera.exceptions import ConnectionError as SdkConnectionError
from dakera.exceptions import TimeoutError as SdkTimeout
from dakera.exceptions import error_from_response

from .workload import classify


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
