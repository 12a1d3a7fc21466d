"""The lease's wire messages. Tags are protocol: never reuse or rename one."""

from __future__ import annotations

import attrs

from ..wire import message


@message("lease.request")
@attrs.frozen
class LeaseRequest:
    """Grant me (the sender) a lease of ``ttl`` seconds under ``token``."""

    token: int
    ttl: float
    renew: bool = False
    config_version: int = 0
    bootstrap: list[str] = attrs.field(factory=list)  # the proposed first voters, before any config
    voters: list[str] = attrs.field(factory=list)  # the candidate's configuration (version above)


@message("lease.grant")
@attrs.frozen
class LeaseGrant:
    token: int
    granted: bool
    highest: int  # the highest token this voter has seen: a refused candidate learns to outbid it
    reason: str = ""


@message("lease.release")
@attrs.frozen
class LeaseRelease:
    """A candidate that did not reach quorum gives back the grant it got under ``token``."""

    token: int


@message("lease.announce")
@attrs.frozen
class LeaseAnnounce:
    """The holder's heartbeat to every member: who leads, under which token, for how long."""

    token: int
    remaining: float
    voters: list[str] = attrs.field(factory=list)
    config_version: int = 0


@message("lease.config")
@attrs.frozen
class ConfigCommit:
    """The leader's new voter set, fenced by its token."""

    token: int
    voters: list[str]
    version: int


@message("lease.config-ack")
@attrs.frozen
class ConfigAck:
    version: int
