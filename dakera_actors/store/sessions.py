"""Sessions: an agent's conversations, and the rules of their life (pure: no I/O, no clock).

A session is agent data: it lives in the agent's shard beside its memories and changes only by
WAL records (``session_start``, ``session_touch``, ``session_end``, see :mod:`.shard`), so it is
replicated, snapshotted and recovered like them. Every rule takes the time it judges at as an
argument; a record carries the time of its write, so a primary and its replicas agree.

Ids route: a session id is ``<agent_id>~<suffix>`` (``~`` is never in an agent id), so a request
that names only a session (get, touch, end, its memories) finds the agent's shard, and so its
owner, on any node. The server makes the suffix 24 random hex digits; a client may choose its own
(``[A-Za-z0-9_.-]``, at most 64 characters) when it starts a session.

Idle ending is worked out, not written: a session whose idle timeout (its own, else the server's
``DAKERA_SESSION_IDLE_TIMEOUT_SECS`` when it started; 0 = never) passed since its last activity is
ended as of its idle deadline (``ended_reason`` ``"idle"``) for every reader, with no timer and no
record. A touch or a memory stored into it no longer counts; ending it answers the idle end.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

SEPARATOR: Final = "~"
SUFFIX_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_IDLE_TIMEOUT_SECS: Final = 2_592_000  # 30 days, the SDK's documented bound
DEFAULT_IDLE_TIMEOUT_SECS: Final = 4 * 3600
ACTIVE: Final = "active"
ENDED: Final = "ended"


def newest_first(s: Session | Mapping[str, Any]) -> tuple[int, str]:
    """The key of every session listing (``reverse=True``): start second, then id. Whole seconds,
    as the JSON says, so members' parts of a listing and their merge order sessions alike."""
    if isinstance(s, Session):
        return int(s.started_at), s.id
    return int(s["started_at"]), str(s["id"])


def new_session_id(agent_id: str, rng: random.Random) -> str:
    return f"{agent_id}{SEPARATOR}{rng.getrandbits(96):024x}"


def split_session_id(session_id: str) -> tuple[str, str] | None:
    """``(agent id, suffix)`` of a well-formed session id (the agent part unchecked), else None."""
    agent, sep, suffix = session_id.partition(SEPARATOR)
    if not sep or not agent or not SUFFIX_RE.fullmatch(suffix):
        return None
    return agent, suffix


@attrs.frozen
class Session:
    """One session as its records made it. Times are Unix seconds (floats inside)."""

    id: str
    agent_id: str
    started_at: float
    last_activity_at: float
    #: the effective idle timeout in seconds, fixed at start (0: never ended for inactivity)
    timeout: int
    #: the timeout the client asked for at start (None: the server's applied)
    idle_timeout_secs: int | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    ended_at: float | None = None
    ended_reason: str | None = None  # "client" or "idle"
    summary: str | None = None

    # -- the rules -------------------------------------------------------------------------
    def idle_deadline(self) -> float | None:
        """When inactivity ends it (None: ended already, or never times out)."""
        if self.ended_at is not None or self.timeout == 0:
            return None
        return self.last_activity_at + self.timeout

    def at(self, now: float) -> Session:
        """The session as it stands at ``now``: past its idle deadline, ended there for inactivity."""
        deadline = self.idle_deadline()
        if deadline is not None and now >= deadline:
            return attrs.evolve(self, ended_at=deadline, ended_reason="idle")
        return self

    def active(self, now: float) -> bool:
        return self.at(now).ended_at is None

    def state(self, now: float) -> str:
        return ACTIVE if self.active(now) else ENDED

    def touched(self, now: float) -> Session:
        """Activity at ``now`` (a touch, a memory stored into it): an open session's last activity
        moves up to ``now``; an ended one (by a client or idle) never re-opens."""
        if not self.active(now) or now <= self.last_activity_at:
            return self
        return attrs.evolve(self, last_activity_at=now)

    def closed(self, now: float, summary: str | None) -> Session:
        """Ended by a client at ``now`` with ``summary``; one already ended keeps its end, reason
        and summary (ending twice, or after an idle end, changes nothing)."""
        if not self.active(now):
            return self
        return attrs.evolve(self, ended_at=now, ended_reason="client", summary=summary)

    # -- forms -----------------------------------------------------------------------------
    def to_json(self, now: float, memory_count: int) -> dict[str, Any]:
        """What every session route answers (both id names; the state at ``now``)."""
        s = self.at(now)
        deadline = s.idle_deadline()
        return {
            "id": s.id,
            "session_id": s.id,
            "agent_id": s.agent_id,
            "started_at": int(s.started_at),
            "ended_at": None if s.ended_at is None else int(s.ended_at),
            "last_activity_at": int(s.last_activity_at),
            "metadata": s.metadata,
            "summary": s.summary,
            "memory_count": memory_count,
            "ended_reason": s.ended_reason,
            "idle_since": int(s.last_activity_at) if s.ended_reason == "idle" else None,
            "idle_timeout_secs": s.idle_timeout_secs,
            "session_state": ACTIVE if s.ended_at is None else ENDED,
            "idle_deadline_at": None if deadline is None else int(deadline),
        }

    def to_record(self) -> dict[str, Any]:
        """The msgpack-ready form in the WAL, snapshots, copies and the cold tier."""
        return {"id": self.id, "a": self.agent_id, "sa": self.started_at, "la": self.last_activity_at,
                "t": self.timeout, "it": self.idle_timeout_secs, "m": self.metadata, "ea": self.ended_at,
                "er": self.ended_reason, "su": self.summary}

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Session:
        return cls(id=r["id"], agent_id=r["a"], started_at=r["sa"], last_activity_at=r["la"], timeout=r["t"],
                   idle_timeout_secs=r["it"], metadata=r["m"], ended_at=r["ea"], ended_reason=r["er"],
                   summary=r["su"])


RECORD_KEYS: Final = frozenset({"id", "a", "sa", "la", "t", "it", "m", "ea", "er", "su"})
