"""SWIM's wire messages. Tags are protocol: never reuse or rename one."""

from __future__ import annotations

from typing import Any

import attrs

from ..wire import message, register_structure_hook
from ..wirebounds import ADDRESS, MEMBERS_MAX, NODE_ID, SEQ, Nested, Seq, bound
from .member import Update

_UPDATE_TEXT = ("id", "address", "api", "by")


def _structure_update(value: Any, _type: Any) -> Update:
    """Updates are most of every SWIM packet: decode them directly, as strictly as cattrs would."""
    if not isinstance(value, dict):
        raise TypeError("update must be a map")
    state, incarnation, meta = value["state"], value["incarnation"], value.get("meta", {})
    if type(state) is not int or type(incarnation) is not int or not isinstance(meta, dict):
        raise TypeError("bad update field types")
    text = [value.get(k, "") for k in _UPDATE_TEXT]
    if not all(type(t) is str for t in text):
        raise TypeError("bad update field types")
    if any(not isinstance(k, str) for k in meta):
        raise TypeError("meta keys must be strings")
    return Update(text[0], state, incarnation, text[1], text[2], meta, text[3])


register_structure_hook(Update, _structure_update)
UPDATES = Seq(Nested(Update), MEMBERS_MAX)  # bounded by the packet too; push-pull streams carry them all


@message("swim.ping")
@attrs.frozen
class SwimPing:
    """Are you alive? ``target`` is the id the sender means to reach (an address may be reused)."""

    seq: int = attrs.field(metadata=bound(SEQ))
    target: str = attrs.field(metadata=bound(NODE_ID))
    updates: list[Update] = attrs.field(factory=list, metadata=bound(UPDATES))


@message("swim.ack")
@attrs.frozen
class SwimAck:
    seq: int = attrs.field(metadata=bound(SEQ))
    updates: list[Update] = attrs.field(factory=list, metadata=bound(UPDATES))


@message("swim.ping-req")
@attrs.frozen
class SwimPingReq:
    """Please probe ``target`` at ``address`` for me and relay its ack (or a nack)."""

    seq: int = attrs.field(metadata=bound(SEQ))
    target: str = attrs.field(metadata=bound(NODE_ID))
    address: str = attrs.field(metadata=bound(ADDRESS))
    updates: list[Update] = attrs.field(factory=list, metadata=bound(UPDATES))


@message("swim.nack")
@attrs.frozen
class SwimNack:
    """Lifeguard: "I tried your indirect probe and heard nothing": the requester is not the problem."""

    seq: int = attrs.field(metadata=bound(SEQ))
    updates: list[Update] = attrs.field(factory=list, metadata=bound(UPDATES))


@message("swim.gossip")
@attrs.frozen
class SwimGossip:
    """Updates pushed to a few random members each gossip interval (no reply)."""

    updates: list[Update] = attrs.field(metadata=bound(UPDATES))


@message("swim.push-pull")
@attrs.frozen
class SwimPushPull:
    """Full state exchange over a stream: on join, and periodically to heal what gossip missed."""

    members: list[Update] = attrs.field(metadata=bound(UPDATES))
    join: bool = False
