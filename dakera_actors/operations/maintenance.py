"""A node's maintenance flag as it is kept across restarts, and the options an operator sets.

See :mod:`.service` for what maintenance does.
"""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

from ..wal.statefile import StateFile

STATE_FILE = "maintenance.msgpack"


@attrs.frozen
class MaintenanceOptions:
    reject_requests: bool = False
    duration_minutes: int | None = None
    reason: str = ""


@attrs.frozen
class MaintenanceState:
    """What survives a restart: whether this node is in maintenance, and how."""

    enabled: bool = False
    reject_requests: bool = False
    reason: str = ""
    until: float | None = None  # Unix seconds at which maintenance ends by itself; None: never
    since: float | None = None  # Unix seconds at which it was enabled (None: stored before this was kept)

    def expired(self, wall_now: float) -> bool:
        return self.until is not None and wall_now >= self.until


@attrs.frozen
class MaintenanceStatus:
    """One node's maintenance as it reports it (here, or in a reply to another node)."""

    node_id: str
    maintenance: bool
    shards_remaining: int  # shards the map still places here plus primaries still being handed over
    primary_shards: list[int]
    replica_shards: list[int]
    reason: str = ""
    reject_requests: bool = False
    ends_in_seconds: int | None = None
    since: float | None = None  # Unix seconds: when maintenance was enabled
    until: float | None = None  # Unix seconds: when it ends by itself (None: when disabled)

    @property
    def phase(self) -> str:
        """``drained`` (in maintenance, nothing left here: safe to stop), ``draining`` or ``active``."""
        return "drained" if self.maintenance and self.shards_remaining == 0 else \
            "draining" if self.maintenance else "active"

    @classmethod
    def of_json(cls, data: Any) -> MaintenanceStatus:
        """The status another node answered with (its fields as JSON)."""
        if not isinstance(data, dict):
            raise ValueError(f"a maintenance status is a JSON object, not {type(data).__name__}")
        known = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class MaintenanceStore:
    def __init__(self, data_dir: Any, disk: Any) -> None:
        self.file = StateFile(STATE_FILE, data_dir, disk)
        self.blocking = self.file.blocking

    def load(self) -> MaintenanceState:
        raw = self.file.read()
        if raw is None:
            return MaintenanceState()
        try:
            d = msgpack.unpackb(raw, raw=False)
            until, since = d.get("until"), d.get("since")
            return MaintenanceState(bool(d["enabled"]), bool(d.get("reject_requests", False)),
                                    str(d.get("reason", "")), float(until) if until is not None else None,
                                    float(since) if since is not None else None)
        except Exception as exc:
            # refusing to start over a flag would turn a maintenance window into an outage;
            # starting in maintenance is the safe reading (no shards come to a node mid-work)
            return MaintenanceState(True, False, f"unreadable {STATE_FILE} ({type(exc).__name__}): disable to clear")

    def load_current(self, wall_now: float) -> tuple[MaintenanceState, MaintenanceState | None]:
        """The state to start in, and the one that ended while the node was down (None if none):
        a maintenance whose end time has passed is cleared here, and the cleared state saved."""
        state = self.load()
        if not (state.enabled and state.expired(wall_now)):
            return state, None
        self.save(MaintenanceState())
        return MaintenanceState(), state

    def save(self, state: MaintenanceState) -> None:
        self.file.write(msgpack.packb({"v": 1, "enabled": state.enabled, "reject_requests": state.reject_requests,
                                       "reason": state.reason, "until": state.until, "since": state.since},
                                      use_bin_type=True))
