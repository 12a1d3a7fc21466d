"""A node's readiness: named gates that must all open before ``/health/ready`` says 200."""

from __future__ import annotations

import trio


class Readiness:
    """Named gates that must all open before ``/health/ready`` says 200."""

    def __init__(self) -> None:
        self._required: list[str] = []
        self._open: set[str] = set()
        self.changed = trio.Event()
        #: every required gate has been open at once: the node finished starting (a gate closed
        #: after that makes ``/health`` say degraded, not starting)
        self.started = False

    def require(self, gate: str) -> None:
        if gate not in self._required:
            self._required.append(gate)

    def open(self, gate: str) -> None:
        self._open.add(gate)
        if all(g in self._open for g in self._required):
            self.started = True
        self.changed.set()
        self.changed = trio.Event()

    def close(self, gate: str) -> None:
        self._open.discard(gate)

    def is_open(self, gate: str) -> bool:
        return gate in self._open

    def missing(self) -> list[str]:
        waiting = [g for g in self._required if g not in self._open]
        return waiting + ["stopping"] * self.stopping + ["maintenance (rejecting requests)"] * self.rejecting

    def checks(self) -> dict[str, bool]:
        """Each required gate, open or not, and ``accepting`` (not stopping, not rejecting requests
        in maintenance): what ``/health/ready`` shows."""
        return {**{g: g in self._open for g in self._required}, "accepting": not (self.stopping or self.rejecting)}

    stopping = False  # set when the node starts to stop: load balancers take it out at once
    #: in maintenance with reject_requests: client requests get 503, and so does readiness
    rejecting = False

    @property
    def ready(self) -> bool:
        return not self.missing()
