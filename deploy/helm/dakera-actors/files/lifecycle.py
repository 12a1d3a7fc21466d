"""Kubernetes lifecycle hooks of a dakera_actors pod (standard library only).

``prestop``: the README's rolling-upgrade step for this node, run by Kubernetes before it sends
SIGTERM. It waits (at most HOOK_SETTLE_TIMEOUT_SECONDS) until ``GET /admin/cluster/status``
shows ``shards_moving: 0`` (the pod upgraded before this one has taken its shards back), then
``POST /admin/maintenance/enable`` with a reason naming this hook, then polls
``GET /admin/maintenance/status`` until it says ``"status": "drained"`` (at most
HOOK_DRAIN_TIMEOUT_SECONDS; past it the hook exits 1 and Kubernetes stops the pod anyway).

``poststart``: once the restarted node answers, ``POST /admin/maintenance/disable`` if, and only
if, the maintenance it is in was enabled by ``prestop`` (the flag and its reason survive the
restart in the data dir); maintenance an operator enabled is left alone.

Both talk to this pod's own node on 127.0.0.1:$DAKERA_PORT with $DAKERA_ROOT_API_KEY, and
write one line per step to stderr and to HOOK_LOG_PATH (default /proc/1/fd/2: the node's own
stderr, so the steps show in `kubectl logs`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

#: the reason prestop enables maintenance with; poststart disables only maintenance carrying it
REASON_PREFIX = "kubernetes preStop:"
POLL_SECONDS = 1.0


def log(message: str) -> None:
    line = f"lifecycle_hook {message}\n"
    sys.stderr.write(line)
    try:  # also into the container's log (hook output is otherwise shown only on failure)
        with open(os.environ.get("HOOK_LOG_PATH", "/proc/1/fd/2"), "a") as out:
            out.write(line)
    except OSError:
        pass


class Node:
    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/")
        self.key = key

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        with urllib.request.urlopen(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer


def poll(what: str, timeout: float, attempt: Any) -> Any:
    """Call ``attempt`` until it returns something other than None (errors count as not yet);
    None when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            result = attempt()
            if result is not None:
                return result
        except (OSError, urllib.error.URLError, ValueError) as exc:
            if str(exc) != last:
                last = str(exc)
                log(f"waiting_for={what!r} error={last!r}")
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)


def prestop(node: Node, pod: str, settle: float, drain: float) -> int:
    status = poll("shards_moving 0", settle,
                  lambda: s if (s := node.call("GET", "/admin/cluster/status"))["shards_moving"] == 0 else None)
    if status is None:
        log(f"event=settle_timeout seconds={settle:g} (shards still moving; draining anyway)")
    reason = f"{REASON_PREFIX} pod {pod} stopping"
    enabled = poll("maintenance enabled", drain, lambda: node.call("POST", "/admin/maintenance/enable",
                                                                   {"reason": reason}))
    if enabled is None:
        log("event=enable_failed (the node did not accept maintenance)")
        return 1
    log(f"event=maintenance_enabled status={enabled.get('status')} shards_remaining={enabled.get('shards_remaining')}")
    drained = poll("drained", drain, lambda: s if (s := node.call("GET", "/admin/maintenance/status"))
                   ["status"] == "drained" else None)
    if drained is None:
        log(f"event=drain_timeout seconds={drain:g}")
        return 1
    log(f"event=drained shards_remaining={drained['shards_remaining']}")
    return 0


def poststart(node: Node, timeout: float) -> int:
    status = poll("node answering", timeout, lambda: node.call("GET", "/admin/maintenance/status"))
    if status is None:
        log(f"event=node_not_answering seconds={timeout:g} (maintenance left as it is)")
        return 0  # a slow start must not get the container killed: disable it by hand
    if not status.get("maintenance"):
        return 0
    if not str(status.get("reason", "")).startswith(REASON_PREFIX):
        log(f"event=maintenance_kept reason={status.get('reason')!r} (not enabled by preStop)")
        return 0
    answer = poll("maintenance disabled", timeout, lambda: node.call("POST", "/admin/maintenance/disable", {}))
    if answer is None:
        log("event=disable_failed")
        return 0
    log(f"event=maintenance_disabled status={answer.get('status')}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("prestop", "poststart"):
        sys.stderr.write("usage: lifecycle.py prestop|poststart\n")
        return 2
    env = os.environ
    node = Node(f"http://127.0.0.1:{env.get('DAKERA_PORT', '3300')}", env.get("DAKERA_ROOT_API_KEY", ""))
    if argv[1] == "prestop":
        return prestop(node, env.get("POD_NAME", env.get("DAKERA_NODE_ID", "")),
                       float(env.get("HOOK_SETTLE_TIMEOUT_SECONDS", "300")),
                       float(env.get("HOOK_DRAIN_TIMEOUT_SECONDS", "600")))
    return poststart(node, float(env.get("HOOK_START_TIMEOUT_SECONDS", "600")))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
