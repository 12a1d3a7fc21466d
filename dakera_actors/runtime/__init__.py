"""The actor runtime: bounded mailboxes, request/reply, published state, loud crashes."""

from .actor import Actor, ActorCrashed, ActorStopped, ActorTimeout, BatchActor, MailboxStats, Refusal, Request
from .published import Published

__all__ = ["Actor", "ActorCrashed", "BatchActor", "Request", "ActorStopped", "ActorTimeout", "MailboxStats", "Published", "Refusal"]
