"""The actor runtime: bounded mailboxes, request/reply, published state, loud crashes."""

from .actor import Actor, ActorCrashed, ActorStopped, ActorTimeout, MailboxStats, Refusal
from .published import Published

__all__ = ["Actor", "ActorCrashed", "ActorStopped", "ActorTimeout", "MailboxStats", "Published", "Refusal"]
