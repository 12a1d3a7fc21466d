"""The L1.5 cache's freshness rule: per-shard generations in Redis (pure: no I/O, no clock, no Trio).

**The guarantee.** With Redis healthy, a read answered from the cache through any node is never
older than a write acknowledged before the read began. How:

- Redis holds, per shard, ``g:<shard>`` = ``(inc, gen, term, until)``: an incarnation (random,
  set when the key is created, so an evicted or flushed key never brings old generations back),
  the generation, the term of the primary that last advanced it, and a *trust deadline* on
  Redis's own clock. Cache entries are keyed by ``(inc, gen)``: an entry is only ever reachable
  while its generation is the shard's current one.
- A reader trusts the shard's generation only while Redis's clock is before ``until``
  (:func:`read`); past it, no entry is answered (every read is forwarded to the shard's owner).
- The shard's primary **advances** the generation after it applies a write and before it
  acknowledges it (:func:`advance`: ``gen`` up by one, ``until`` = now + lease). Every entry of
  older generations is stale from the instant the advance runs, before the write is
  acknowledged. One advance covers every write applied before it was sent (group commit).
- A primary that cannot advance (Redis down, slow, paused) acknowledges only once every trust
  deadline it can have caused has surely passed (:attr:`PrimaryGeneration.hold_until`): for each
  call that answered, its reply time plus the lease; for each renewal that did not, its send time
  plus the timeout plus the lease (every mutating call carries a ``not_after`` on Redis's clock,
  so a call that waits in a queue, say behind a SIGSTOP, is refused when it finally runs instead
  of extending trust). An advance that did not answer needs no hold: if it runs, it trusts a new
  generation that has no entries (the primary fills only generations it learned from an answer).
  From then on readers miss: the write is bounded by about a second.
- Only the primary fills entries (:func:`fill`), for the generation it advanced to itself, with
  an answer computed while no write was applied after that advance, and only if Redis still says
  that generation, term and trust (so an answer computed before a write never lands under the
  write's generation).
- Trust is renewed (:func:`renew`) only by a clean primary (no write applied since its last
  advance), and nothing that extends trust or fills is sent by a primary without the cluster's
  authority (it heard the leader's lease within ``authority`` seconds), so a primary cut off
  from the cluster stops extending trust within ``authority`` plus a lease. A new primary advances
  with its higher term first (fencing the old one's renewals and fills: :func:`advance` refuses a
  lower term); without one it waits ``authority`` plus a lease before its first acknowledgement
  (its predecessor's trust may last that long). A term no map of the cluster can have yet (its
  token above the token of the leader whose lease the primary holds) is another cluster's, one
  wiped before this one started under the same namespace: once its trust has been over for
  ``authority`` seconds it does not fence, the primary takes the key over under a new
  incarnation (else a wiped cluster would never be cached again).

Redis's clock must not step backwards (it only decides ``until`` and ``not_after``); the nodes'
clocks are only ever compared with themselves. The Lua scripts (:mod:`.scripts`) implement the
pure functions below, which the tests use as the model of Redis.
"""

from __future__ import annotations

from typing import Literal

import attrs

from ..wirebounds import EpochOverflow, epoch_of


@attrs.frozen
class GenState:
    """``g:<shard>`` in Redis; ``until`` is on Redis's clock (seconds)."""

    inc: int
    gen: int
    term: int
    until: float


Entry = tuple[int, int, bytes]  # (inc, gen, answer): the generation an answer was computed at
#: a read's outcome: ``hit`` (answered), ``miss`` (no entry), ``stale`` (an entry, but of another
#: generation than the shard's current one, or the generation's trust is over)
Lookup = Literal["hit", "miss", "stale"]


@attrs.frozen
class Advanced:
    inc: int
    gen: int
    redis_now: float


@attrs.frozen
class Renewed:
    redis_now: float


@attrs.frozen
class Refused:
    """``late``: the call ran after its ``not_after``; ``fenced``: a newer term holds the shard;
    ``moved``: the generation is not the one the caller knows (advanced, evicted, restored)."""

    why: Literal["late", "fenced", "moved"]
    term: int = 0


# -- the scripts, as pure functions over Redis's state -------------------------------------
def advance(state: GenState | None, *, now: float, term: int, last_gen: int, lease: float, not_after: float,
            new_inc: int, foreign_from: int = 0, quiet: float = 0.0) -> tuple[GenState | None, Advanced | Refused]:
    """The primary of ``term`` moves the shard to a new generation and trusts it for ``lease``.
    ``last_gen``: the highest generation this primary knew (after a Redis restart from an old
    snapshot the generation jumps past it, never reissuing one); ``new_inc`` is used when the
    key does not exist (never existed, evicted, flushed), or holds a *foreign* term.

    ``foreign_from`` (0: none): the lowest term that cannot be of the caller's cluster, a wiped
    cluster's predecessor under the same namespace (its leader tokens, so its terms, start again
    from 1): such a term does not fence once its trust has been over for ``quiet`` seconds (a
    live primary renews it well before; belt and braces against a node whose view of its
    leader's lease is late); the key is taken over under a new incarnation and a generation past
    the old one, so none of its entries is ever answered."""
    if now > not_after:
        return state, Refused("late")
    if state is not None and foreign_from and state.term >= foreign_from and now > state.until + quiet:
        # another cluster's: a new incarnation, and a generation past its (never one it used)
        new = GenState(new_inc, max(state.gen, last_gen) + 1, term, now + lease)
        return new, Advanced(new.inc, new.gen, now)
    if state is not None and state.term > term:
        return state, Refused("fenced", state.term)
    if state is None:
        new = GenState(new_inc, last_gen + 1, term, now + lease)
    else:
        new = GenState(state.inc, max(state.gen, last_gen) + 1, term, now + lease)
    return new, Advanced(new.inc, new.gen, now)


def foreign_from(leader_token: int) -> int:
    """The lowest shard term no map of this cluster can have yet, for a node holding the lease of
    the leader of ``leader_token``: while that lease holds no later leader exists, and a map
    epoch is its leader's token and version (:func:`~dakera_actors.wirebounds.epoch_of`). A term
    from here up is a wiped predecessor's under the same namespace (see :func:`advance`). 0 (no
    bound known) past the token bound."""
    try:
        return epoch_of(leader_token + 1, 0)
    except EpochOverflow:
        return 0


def renew(state: GenState | None, *, now: float, term: int, inc: int, gen: int, lease: float,
          not_after: float) -> tuple[GenState | None, Renewed | Refused]:
    """Extend the trust of the generation the caller advanced to, if it is still the current one."""
    if now > not_after:
        return state, Refused("late")
    if state is not None and state.term > term:
        return state, Refused("fenced", state.term)
    if state is None or (state.inc, state.gen, state.term) != (inc, gen, term):
        return state, Refused("moved")
    return attrs.evolve(state, until=now + lease), Renewed(now)


def read(state: GenState | None, entries: dict[str, Entry], *, now: float, digest: str) -> tuple[Lookup, bytes | None]:
    """A cached answer, only if it was computed at the shard's current generation and that
    generation is trusted."""
    entry = entries.get(digest)
    if entry is None:
        return "miss", None
    if state is None or now > state.until or (entry[0], entry[1]) != (state.inc, state.gen):
        return "stale", None
    return "hit", entry[2]


def fill(state: GenState | None, entries: dict[str, Entry], *, now: float, term: int, inc: int, gen: int,
         digest: str, value: bytes, not_after: float) -> bool:
    """Store an answer under the generation it was computed at, only if that generation is still
    the trusted current one of the same term (and the call is not late)."""
    if now > not_after or state is None or now > state.until:
        return False
    if (state.inc, state.gen, state.term) != (inc, gen, term):
        return False
    entries[digest] = (inc, gen, value)
    return True


# -- the primary's side --------------------------------------------------------------------
@attrs.frozen
class GenerationConfig:
    lease: float = 1.0  # seconds readers trust a generation after an advance or renewal
    timeout: float = 0.05  # DAKERA_REDIS_TIMEOUT_MS: a call not answered by then failed
    renew_every: float = 0.3  # a clean primary renews this often (well inside the lease)
    #: how long a node goes on believing it holds a shard after it last heard the cluster's
    #: leader (a cut-off predecessor may renew that long): a new primary that cannot advance
    #: waits this plus a lease before its first acknowledgement
    authority: float = 2.0
    drift: float = 0.01  # clock rate difference allowed between a node and Redis
    margin: float = 0.005  # seconds added to every bound


@attrs.frozen
class TimeCall:
    """Read Redis's clock (changes nothing): the first call, so later calls can carry a
    ``not_after`` on that clock."""

    shard: int


@attrs.frozen
class AdvanceCall:
    shard: int
    term: int
    last_gen: int
    lease: float
    not_after: float  # on Redis's clock
    version: int  # writes applied when it was sent: what it covers
    foreign_from: int = 0  # see :func:`advance`
    quiet: float = 0.0


@attrs.frozen
class RenewCall:
    shard: int
    term: int
    inc: int
    gen: int
    lease: float
    not_after: float


@attrs.frozen
class Clock:
    redis_now: float


Call = TimeCall | AdvanceCall | RenewCall
Answer = Clock | Advanced | Renewed | Refused


@attrs.frozen
class FillTicket:
    """What a fill needs: the generation the primary advanced to and the writes applied then."""

    shard: int
    term: int
    inc: int
    gen: int
    version: int


class PrimaryGeneration:
    """One shard's generation as its primary (of one term) keeps it (see the module docstring).
    Times are the node's monotonic clock, except ``not_after`` (Redis's, from the measured offset)."""

    def __init__(self, shard: int, term: int, config: GenerationConfig, now: float) -> None:
        self.shard = shard
        self.term = term
        self.config = config
        self.inc: int | None = None
        self.gen = 0  # the highest generation this primary advanced to
        self.applied = 0  # writes applied (a version counter)
        self.covered = 0  # writes covered by a successful advance
        self.fenced = False  # a newer term holds the shard in Redis: never advance or fill again
        #: no call before this: another cluster's term held the key, trusted too lately to take over
        self.idle_until = 0.0
        self.in_flight: Call | None = None
        self.sent_at = 0.0
        #: Redis's clock minus ours, as last measured, its error then, and when (None: never)
        self.offset: float | None = None
        self.offset_error = 0.0
        self.measured_at = 0.0
        #: no trust this primary or a cut-off predecessor created lasts beyond this (our clock):
        #: a write may be acknowledged without an advance after it once it has passed
        self.hold_until = now + config.authority + self._trust_span()
        self.trusted_until = 0.0  # when our last advance or renewal's trust ends (our clock)

    def _trust_span(self) -> float:
        c = self.config
        return c.lease * (1 + c.drift) + c.margin

    def _error(self, now: float) -> float:
        """How far the measured offset may be off now (it drifts since it was measured)."""
        return self.offset_error + self.config.drift * max(now - self.measured_at, 0.0) + self.config.margin

    # -- writes ------------------------------------------------------------------------
    def applied_write(self) -> int:
        """A write was applied locally; returns its version (what ``may_ack`` is asked about)."""
        self.applied += 1
        return self.applied

    def may_ack(self, version: int, now: float) -> bool:
        """Whether a write of ``version`` may be acknowledged: an advance sent after it was
        applied succeeded, or every trust deadline that could hide it has passed."""
        return self.covered >= version or now >= self.hold_until

    @property
    def renew_at(self) -> float:
        """When a clean primary renews: ``renew_every`` after its last trust began."""
        c = self.config
        return self.trusted_until - (c.lease - c.renew_every)

    # -- calls to Redis ----------------------------------------------------------------
    def next_call(self, now: float, *, authorized: bool, foreign_from: int = 0) -> Call | None:
        """The call to send now, if any (one at a time). ``authorized``: this node still has the
        cluster's authority over the shard (it heard the leader's lease recently); ``foreign_from``:
        then, the lowest term no map of this cluster can have yet (the leader's token plus one,
        shifted as in a map epoch: while that leader's lease holds no later leader exists), 0 if
        not known."""
        if self.in_flight is not None or self.fenced or now < self.idle_until:
            return None
        c = self.config
        call: Call
        if self.offset is None:
            call = TimeCall(self.shard)
        elif not authorized:
            # cut off from the cluster: no trust of ours may outlast our authority (a newer
            # primary may be acknowledging writes); writes here wait out hold_until
            return None
        else:
            not_after = now + self.offset + self._error(now) + c.timeout
            if self.applied > self.covered or self.inc is None:
                call = AdvanceCall(self.shard, self.term, self.gen, c.lease, not_after, self.applied,
                                   foreign_from if foreign_from > self.term else 0, c.authority)
            elif now >= self.renew_at:
                call = RenewCall(self.shard, self.term, self.inc, self.gen, c.lease, not_after)
            else:
                return None
        self.in_flight = call
        self.sent_at = now
        return call

    def answered(self, result: Answer | None, now: float) -> None:
        """The in-flight call's outcome (None: it failed or timed out: it may still run later)."""
        call, self.in_flight = self.in_flight, None
        if call is None or isinstance(call, TimeCall):
            if isinstance(result, Clock):
                self._measure(result.redis_now, now)
            return
        c = self.config
        if result is None or isinstance(result, Refused) and result.why == "late":
            if isinstance(call, RenewCall):
                # it may still run inside Redis and extend the trust of a generation with
                # entries, but never after its not_after: by our clock, no later than its send
                # time plus the timeout and twice the offset's error. (An advance that runs late
                # only trusts a new generation, which has no entries: no hold for it.)
                latest = self.sent_at + c.timeout + 2 * self._error(self.sent_at)
                self.hold_until = max(self.hold_until, latest + self._trust_span())
            return
        if isinstance(result, Refused):  # (a refusal carries no clock reading)
            if result.why == "fenced" and isinstance(call, AdvanceCall) and call.foreign_from \
                    and result.term >= call.foreign_from:
                self.idle_until = now + c.renew_every  # another cluster's: taken over once quiet
            elif result.why == "fenced":
                self.fenced = True
            else:
                self.inc = None  # "moved": evicted, flushed, restored: the next call advances
            return
        self._measure(result.redis_now, now)
        # it ran before its answer arrived: the trust it gave ends by then plus the lease
        self.hold_until = max(self.hold_until, now + self._trust_span())
        if isinstance(result, Advanced):
            assert isinstance(call, AdvanceCall)
            self.inc, self.gen = result.inc, result.gen
            self.covered = max(self.covered, call.version)
        self.trusted_until = self.sent_at + c.lease * (1 - c.drift) - c.margin

    def _measure(self, redis_now: float, now: float) -> None:
        # Redis ran the call between sending and the answer: its clock then minus ours is
        # within half the round trip of the midpoint's
        self.offset = redis_now - (self.sent_at + now) / 2
        self.offset_error = (now - self.sent_at) / 2
        self.measured_at = now

    # -- fills -------------------------------------------------------------------------
    def ticket(self, *, authorized: bool) -> FillTicket | None:
        """Permission to compute an answer for the cache: only with the cluster's authority and
        no write applied since our last successful advance."""
        if not authorized or self.fenced or self.inc is None or self.applied > self.covered:
            return None
        return FillTicket(self.shard, self.term, self.inc, self.gen, self.applied)

    def still_valid(self, ticket: FillTicket) -> bool:
        """After computing: no write was applied meanwhile (else the answer may predate it)."""
        return not self.fenced and ticket.version == self.applied and (ticket.inc, ticket.gen) == (self.inc, self.gen)

    def fill_not_after(self, now: float) -> float | None:
        """The ``not_after`` of a fill sent now (None: Redis's clock is not measured yet)."""
        return None if self.offset is None else now + self.offset + self._error(now) + self.config.timeout
