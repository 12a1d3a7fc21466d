"""The cache's one error: callers go on without the cache (forward the read, wait out the hold)."""

from __future__ import annotations


class CacheUnavailable(Exception):
    """Redis did not answer a call in time, or could not be reached, or refused it. ``reason``:
    ``timeout``, ``unreachable`` (no connection) or ``error`` (Redis answered with an error: out of
    memory with noeviction, a failing script ...). The caller falls back; never a redis exception.

    It does not mean the command was not carried out: a command sent to a server that then stalls
    (paused, swapping, a long script) is cut off here at the bound but stays in the server's input
    and may still run after it (tests/cache: a SET sent to a paused server lands once it resumes).
    Whatever a timed-out write does must be harmless whenever it lands."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
