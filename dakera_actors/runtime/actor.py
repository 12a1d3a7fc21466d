"""Actors: one task, one bounded mailbox, no shared mutable state.

An actor owns a protocol core and feeds it from its mailbox and its timers; see DESIGN.md. The
runtime gives it three ways in:

- ``await actor.tell(msg)``: fire and forget, waits while the mailbox is full (backpressure);
- ``actor.tell_nowait(msg)``: for senders that must never block (packet dispatch): returns
  False and counts a drop when the mailbox is full, the way a full socket buffer drops;
- ``await actor.ask(msg, timeout=...)``: request/reply; the handler's return value is the reply.

A handler that raises :class:`Refusal` answers the asker with that error and carries on. Any
other exception is a bug: the actor crashes, the runtime logs it with its traceback and the node
goes down with it. Nothing is swallowed.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import attrs
import trio

from ..log import get_logger

T = TypeVar("T")
_log = get_logger("dakera_actors.runtime")
_NOTHING = object()


class Refusal(Exception):
    """An expected, reportable refusal of a request. Sent back to the asker; the actor lives on."""


class ActorTimeout(TimeoutError):
    """An ask did not get its reply in time."""


class ActorStopped(RuntimeError):
    """The actor is not running (never started, stopped, or crashed)."""


class ActorCrashed(RuntimeError):
    """An actor raised an unexpected exception; the original is ``__cause__``."""

    def __init__(self, actor: str) -> None:
        super().__init__(f"actor {actor!r} crashed")
        self.actor = actor


class _Reply(Generic[T]):
    """A one-shot slot the actor fills and the asker waits on."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@attrs.frozen
class _Ask:
    message: Any
    reply: _Reply[Any]


@attrs.define
class MailboxStats:
    received: int = 0
    dropped: int = 0
    asks_timed_out: int = 0


#: longest stretch of an ask's wait counted at once (see :meth:`Actor.ask`)
ASK_SLICE = 0.5


class Actor:
    """Base class. Subclasses implement :meth:`handle`; timers via :meth:`next_timer`/:meth:`on_timer`."""

    def __init__(self, name: str, *, mailbox_size: int = 1024) -> None:
        self.name = name
        self._send, self._recv = trio.open_memory_channel[Any](mailbox_size)
        self.stats = MailboxStats()
        self._running = False
        self._stopped = False

    # -- the outside world's side ------------------------------------------------------
    async def tell(self, message: Any) -> None:
        """Deliver ``message``; waits while the mailbox is full."""
        try:
            await self._send.send(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(self.name) from None

    def tell_nowait(self, message: Any) -> bool:
        """Deliver without waiting; False (and a counted drop) when the mailbox is full or closed."""
        try:
            self._send.send_nowait(message)
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.stats.dropped += 1
            return False

    async def ask(self, message: Any, *, timeout: float = 5.0) -> Any:
        """Send ``message`` and wait for the handler's return value (or its Refusal).

        ``timeout`` counts the time this process ran, not the time that passed: the wait goes in
        slices of at most ASK_SLICE seconds, and a slice counts for no more than its own length.
        A process stopped for longer than the timeout (SIGSTOP, a VM or container freeze) wakes
        with every deadline in the past; counting that time would fail asks the other actor never
        had a chance to answer, and a failed ask inside a handler takes the node down."""
        if self._stopped:
            raise ActorStopped(self.name)
        reply: _Reply[Any] = _Reply()
        sent = False
        waited = 0.0
        while True:
            step = min(ASK_SLICE, timeout - waited)
            started = trio.current_time()
            with trio.move_on_after(step):
                if not sent:
                    await self.tell(_Ask(message, reply))  # a cancelled send has sent nothing
                    sent = True
                return await reply.wait()
            waited += min(trio.current_time() - started, step)
            if waited >= timeout:
                self.stats.asks_timed_out += 1
                raise ActorTimeout(f"{self.name} did not answer within {timeout}s")

    @property
    def mailbox_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    # -- the actor's side --------------------------------------------------------------
    async def handle(self, message: Any) -> Any:
        """Process one message; the return value answers an ask. Override."""
        raise NotImplementedError

    def next_timer(self) -> float:
        """Absolute trio time of this actor's next timer, ``inf`` for none. Override."""
        return math.inf

    async def on_timer(self, now: float) -> None:
        """Called once the time from :meth:`next_timer` has come. Override."""

    async def on_start(self) -> None:
        """Runs before the first message, inside the actor's task. Override."""

    async def on_stop(self) -> None:
        """Runs after the mailbox closed or the actor was cancelled (shielded). Override."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's task: start under ``nursery.start(actor.run)``."""
        if self._running:
            raise RuntimeError(f"actor {self.name} is already running")
        self._running = True
        try:
            await self.on_start()
            task_status.started()
            while True:
                now = trio.current_time()
                deadline = self.next_timer()
                if deadline <= now:
                    await self.on_timer(now)
                    continue
                message: Any = _NOTHING
                # only the wait is bounded by the timer: a running handler is never cut short
                with trio.move_on_at(deadline):
                    try:
                        message = await self._recv.receive()
                    except trio.EndOfChannel:
                        return
                if message is _NOTHING:
                    await self.on_timer(trio.current_time())
                    continue
                self.stats.received += 1
                await self._dispatch(message)
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled | KeyboardInterrupt):
                _log.error("actor_crashed", actor=self.name, error=repr(exc), exc_info=exc)
                raise ActorCrashed(self.name) from exc
            raise
        finally:
            self._stopped = True
            self._running = False
            self._send.close()
            self._fail_pending()
            with trio.CancelScope(shield=True):
                await self.on_stop()

    async def _dispatch(self, message: Any) -> None:
        if not isinstance(message, _Ask):
            await self.handle(message)
            return
        try:
            result = await self.handle(message.message)
        except Refusal as refusal:
            message.reply.fail(refusal)
            return
        except BaseException as exc:
            message.reply.fail(ActorCrashed(self.name))
            raise exc
        message.reply.set(result)

    def _fail_pending(self) -> None:
        while True:
            try:
                pending = self._recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if isinstance(pending, _Ask):
                pending.reply.fail(ActorStopped(self.name))

    def close(self) -> None:
        """Stop accepting messages; the actor finishes what is queued and returns."""
        self._send.close()


class Request:
    """One message of a batch, with the means to answer it (a no-op for a ``tell``)."""

    __slots__ = ("message", "_reply")

    def __init__(self, message: Any, reply: _Reply[Any] | None) -> None:
        self.message = message
        self._reply = reply

    def reply(self, value: Any) -> None:
        if self._reply is not None:
            self._reply.set(value)

    def fail(self, error: BaseException) -> None:
        if self._reply is not None:
            self._reply.fail(error)


class BatchActor(Actor):
    """An actor that takes everything waiting in its mailbox at once (up to ``max_batch``).

    This is group commit: while one batch is being made durable, the next one queues up, so
    many concurrent writers share one fsync. Subclasses implement :meth:`handle_batch` and
    answer each request; an exception fails every unanswered request of the batch and crashes
    the actor, like any other bug.
    """

    def __init__(self, name: str, *, mailbox_size: int = 1024, max_batch: int = 1024) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.max_batch = max_batch

    async def handle_batch(self, batch: list[Request]) -> None:
        raise NotImplementedError

    async def _dispatch(self, message: Any) -> None:
        batch = [self._request(message)]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._request(self._recv.receive_nowait()))
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self.stats.received += len(batch) - 1
        try:
            await self.handle_batch(batch)
        except BaseException:
            for request in batch:
                request.fail(ActorCrashed(self.name))
            raise

    @staticmethod
    def _request(message: Any) -> Request:
        if isinstance(message, _Ask):
            return Request(message.message, message.reply)
        return Request(message, None)
