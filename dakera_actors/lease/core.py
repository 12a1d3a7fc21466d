"""The leader lease: one leader at a time, fencing tokens that only grow, quorum to elect.

Protocol (pure: messages and ticks in, effects out):

- A **candidate** first runs a **pre-vote** (as Raft's PreVote): it asks every voter "would you
  grant token ``t = highest seen + 1``?". Nobody binds itself: the voter promises and records
  nothing, the candidate neither persists nor raises its token. A voter says yes only if it would
  grant that request now *and* it hears no live leader other than the candidate (leader
  stickiness: a node that was cut off, or one that just healed, cannot unseat a healthy leader).
  Only once the candidate has *heard* a quorum of yeses does the real campaign start: it asks
  every voter for a lease of ``ttl`` under a fresh token, records that token durably first
  (``Persist`` precedes every send), and holds the lease once a quorum granted the same token.
  A node that can send but not receive therefore never holds voters with promises nor burns
  tokens; one that can receive but not send is never heard. Validity is counted from the moment
  it *asked*, minus the drift margin: ``lease_until = asked_at + ttl - margin``, so it always
  ends before any voter's promise.
- A **voter** grants at most one lease per token and promises, by its own clock, not to grant
  to anyone else until ``received_at + ttl + margin``. It never grants a token at or below the
  highest it has seen (persisted before it answers, so a restart cannot grant an old token).
  After a restart it grants nothing new for ``ttl + margin``: it may have promised before dying.
- The **holder** renews under the same token every ``ttl * renew_fraction`` and steps down the
  moment ``lease_until`` passes without a renewal; stepping down it releases every voter's
  promise (a leader that stops hearing renewal grants, but can still send, does not keep the
  voters bound for another TTL). A candidate that cannot reach quorum releases the grants it
  got, so a split vote costs one round trip rather than a whole TTL.
- **Voters** are the members of the cluster configuration the last leader committed. A new
  cluster bootstraps when a node sees ``bootstrap_expect`` members: it proposes the first
  ``bootstrap_expect`` of them by id and needs *all* of them to grant (unanimity), so two
  bootstrap proposals can only both succeed with disjoint sets, which needs at least
  ``2 * bootstrap_expect`` nodes up before any leader exists (documented). The first leader
  commits the configuration; from then on quorum is a majority of committed voters. The leader
  changes voters one member at a time (a new member in, a long-dead or departed one out),
  committing each change to a majority of the new set before the next, so any two quorums used
  one after the other share a voter, whose promise keeps their leases apart.
- **Fencing**: every leader decision carries its token; ``fence(token)`` accepts only tokens at
  or above the highest seen, and raises the highest seen.
- **Token bounds**: tokens stay below ``MAX_TOKEN`` (2^31: the shard-map epoch is
  ``(token << 32) | version``). A token from a peer (announce, commit, request, pre-vote, the
  ``highest`` of a reply, a fenced decision) more than ``max_token_jump`` above every token this
  node knows is refused and counted: elections raise tokens one at a time. While the node hears
  no leader the allowance grows by ``token_rate`` per second, so a node that was away through
  many elections still catches up. A persisted state beyond the bound refuses to load.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs

from ..wirebounds import TOKEN_MAX
from .messages import (
    ConfigAck,
    ConfigCommit,
    LeaseAnnounce,
    LeaseGrant,
    LeasePreVote,
    LeasePreVoteReply,
    LeaseRelease,
    LeaseRequest,
)

MAX_TOKEN = TOKEN_MAX  # the shard-map epoch (wirebounds.epoch_of) holds the token in its high 31 bits


@attrs.frozen
class LeaseConfig:
    ttl: float = 1.0
    drift_margin: float = 0.15  # bound on clock disagreement over one TTL, plus scheduling slack
    renew_fraction: float = 1 / 3
    request_timeout: float = 0.3  # a campaign or renewal round that gets no quorum by then gives up
    backoff: tuple[float, float] = (0.05, 0.4)  # random wait before campaigning again
    bootstrap_expect: int = 3
    max_voters: int = 5
    voter_dead_grace: float = 30.0  # a voter Dead this long is replaced
    # a token from a peer more than this above every token known is refused: elections add one
    # at a time. While no leader is heard the allowance grows by token_rate per second
    max_token_jump: int = 1000
    token_rate: float = 100.0


@attrs.frozen
class ClusterConfig:
    voters: tuple[str, ...]
    version: int

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


@attrs.frozen
class LeaseState:
    """What must survive a restart: tokens seen and proposed, and the committed configuration."""

    highest_token: int = 0  # the highest token this node granted: it never grants a lower one afresh
    leader_token: int = 0  # the highest token a leader is known to have held: the fencing floor
    proposed_token: int = 0  # the highest this node proposed as a candidate: never proposed again
    config: ClusterConfig | None = None

    def check(self) -> None:
        """Refuse a state no election can have produced (a token at or beyond ``MAX_TOKEN``)."""
        for name in ("highest_token", "leader_token", "proposed_token"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_TOKEN:
                raise ValueError(f"lease state {name}={value} outside 0..{MAX_TOKEN}")
        if self.config is not None and not 0 <= self.config.version <= MAX_TOKEN:
            raise ValueError(f"lease state config version {self.config.version} outside 0..{MAX_TOKEN}")


@attrs.frozen
class Send:
    to: str  # member id
    message: Any


@attrs.frozen
class Broadcast:
    """To every reachable member (the actor resolves ids to addresses through membership)."""

    message: Any


@attrs.frozen
class Persist:
    """Write ``state`` durably before carrying out the effects that follow it."""

    state: LeaseState


@attrs.frozen
class TokenRefused:
    """A token no election could have produced was refused (beyond the bound, or a jump above
    every known token): the actor logs it, so a forged or corrupt decision is visible."""

    token: int
    floor: int
    sender: str = ""  # who sent it ("" for a decision checked through fence_check)
    kind: str = ""  # the message type it came in


Effect = Send | Broadcast | Persist | TokenRefused


@attrs.define
class _Grant:
    holder: str
    token: int
    until: float


@attrs.define
class _Round:
    """One pre-vote, campaign or renewal: who granted, and when it was asked."""

    token: int
    asked_at: float
    deadline: float
    voters: tuple[str, ...]
    needed: int
    renew: bool
    bootstrap: tuple[str, ...] = ()
    granted: set[str] = attrs.Factory(set)
    prevote: bool = False
    refused: set[str] = attrs.Factory(set)


@attrs.define
class LeaseStats:
    campaigns: int = 0
    elections_won: int = 0
    step_downs: int = 0
    grants_given: int = 0
    grants_refused: int = 0
    fencing_rejections: int = 0
    prevotes: int = 0
    tokens_refused: int = 0  # tokens beyond MAX_TOKEN or a jump no election could make


class LeaseCore:
    def __init__(self, config: LeaseConfig, *, self_id: str, state: LeaseState, now: float,
                 rng: random.Random, restarted: bool = True) -> None:
        state.check()
        self.cfg = config
        self.self_id = self_id
        self.rng = rng
        self.highest = state.highest_token
        self.fence_floor = state.leader_token
        self.proposed = state.proposed_token
        self.config = state.config
        self.stats = LeaseStats()
        self._refusals: list[TokenRefused] = []  # refusals not yet returned as effects
        self.alive: set[str] = {self_id}  # reachable members, from membership
        self.dead_since: dict[str, float] = {}
        self.leader: str | None = None  # the holder this node believes in
        self.leader_token = 0
        self.leader_seen_until = -math.inf  # the believed leader's lease, by this node's clock
        self.lease_until = -math.inf  # this node's own lease, when it holds one
        self._grant: _Grant | None = None
        # a voter that may have promised before a crash keeps silent for one promise period
        self._quiet_until = now + config.ttl + config.drift_margin if restarted else now
        self._round: _Round | None = None
        self._next_campaign = now + self._backoff()
        self._next_renew = math.inf
        self._next_announce = math.inf
        self._config_change: ClusterConfig | None = None
        self._config_acks: set[str] = set()
        self._in_touch_at = now  # when this node last heard (or was) the current leader

    # -- queries -----------------------------------------------------------------------
    def is_leader(self, now: float) -> bool:
        return self.leader == self.self_id and now < self.lease_until

    def lease_remaining(self, now: float) -> float | None:
        """This node's view of the current lease: its own, or the one last announced to it."""
        if self.is_leader(now):
            return self.lease_until - now
        if self.leader is not None and now < self.leader_seen_until:
            return self.leader_seen_until - now
        return None

    def current_leader(self, now: float) -> str | None:
        return self.leader if self.lease_remaining(now) is not None else None

    def state(self) -> LeaseState:
        return LeaseState(self.highest, self.fence_floor, self.proposed, self.config)

    def next_deadline(self) -> float:
        times = [self._next_campaign, self._next_renew, self._next_announce]
        if self._round is not None:
            times.append(self._round.deadline)
        if self.leader == self.self_id:
            times.append(self.lease_until)
        return min(times)

    def fence(self, token: int, now: float | None = None) -> bool:
        """Accept a leader decision stamped ``token``? Only if no newer leader is known, and the
        token is one an election could have produced (see :meth:`plausible`).

        Accepting raises the floor: from then on every decision of older leaders is refused.
        The caller persists :meth:`state` when the floor moved (see ``fence_floor``).
        """
        if not self.plausible(token, now):
            return False
        if token < self.fence_floor:
            self.stats.fencing_rejections += 1
            return False
        self.fence_floor = token
        return True

    def plausible(self, token: int, now: float | None = None) -> bool:
        """Could an election have produced ``token``, given the tokens this node knows? No if it
        is beyond ``MAX_TOKEN`` or jumps more than the allowance above every known token (the
        allowance grows while no leader is heard). A refusal is counted in ``tokens_refused``."""
        known = max(self.highest, self.fence_floor, self.proposed)
        away = 0.0 if now is None else max(0.0, now - self._in_touch_at)
        if 0 <= token <= MAX_TOKEN and token <= known + self.cfg.max_token_jump + self.cfg.token_rate * away:
            return True
        self.stats.tokens_refused += 1
        self._refusals.append(TokenRefused(token, self.fence_floor))
        return False

    # -- helpers -----------------------------------------------------------------------
    def _backoff(self) -> float:
        lo, hi = self.cfg.backoff
        return self.rng.uniform(lo, hi)

    def _voters(self) -> tuple[str, ...] | None:
        return self.config.voters if self.config is not None else None

    def _bootstrap_set(self) -> tuple[str, ...] | None:
        if self.config is not None or len(self.alive) < self.cfg.bootstrap_expect:
            return None
        chosen = tuple(sorted(self.alive)[: self.cfg.bootstrap_expect])
        return chosen if self.self_id in chosen else None

    def _persist(self) -> Persist:
        return Persist(self.state())

    # -- membership --------------------------------------------------------------------
    def on_members(self, alive: set[str], dead: set[str], now: float) -> list[Effect]:
        """The membership view changed: who is reachable, who is dead (Left counts as dead)."""
        self.alive = set(alive) | {self.self_id}
        for member in dead:
            self.dead_since.setdefault(member, now)
        for member in list(self.dead_since):
            if member in self.alive:
                del self.dead_since[member]
        return []

    # -- time --------------------------------------------------------------------------
    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.leader == self.self_id and now >= self.lease_until:
            effects.extend(self._release_voters())
            self._step_down()
        rnd = self._round
        if rnd is not None and now >= rnd.deadline:
            self._round = None
            if not rnd.renew:
                if not rnd.prevote:
                    effects.extend(self._release(rnd))
                self._next_campaign = now + self._backoff()
        if self.leader == self.self_id and now >= self._next_renew and self._round is None:
            effects.extend(self._start_round(now, renew=True))
        if self.leader == self.self_id and now >= self._next_announce:
            self._next_announce = now + self.cfg.ttl * self.cfg.renew_fraction
            effects.append(Broadcast(self._announcement(now)))
            effects.extend(self._maybe_reconfigure(now))
        if now >= self._next_campaign:
            self._next_campaign = now + self.cfg.ttl * self.cfg.renew_fraction
            promised = self._grant is not None and self._grant.holder != self.self_id and now < self._grant.until
            # no point campaigning while this node's own promise to another still binds it: a
            # quorum would refuse too (each refused round costs a timeout and burns a token)
            if self._round is None and self.lease_remaining(now) is None and now >= self._quiet_until \
                    and not promised:
                effects.extend(self._prevote(now))
        return effects

    def _announcement(self, now: float) -> LeaseAnnounce:
        config = self.config
        return LeaseAnnounce(token=self.leader_token, remaining=max(0.0, self.lease_until - now),
                             voters=list(config.voters) if config else [],
                             config_version=config.version if config else 0)

    def _electorate(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """Whom a campaign of this node asks (and the bootstrap proposal, if any), or None."""
        voters = self._voters()
        bootstrap: tuple[str, ...] = ()
        if voters is None:
            proposal = self._bootstrap_set()
            if proposal is None:
                return None
            voters, bootstrap = proposal, proposal
        if self.self_id not in voters:
            return None  # only voters lead: the leader's own promise is part of its quorum
        return voters, bootstrap

    def _next_token(self) -> int | None:
        token = max(self.highest, self.proposed, self.fence_floor) + 1
        return token if token <= MAX_TOKEN else None

    def _prevote(self, now: float) -> list[Effect]:
        """Ask whether a campaign could win, binding nobody and persisting nothing."""
        electorate, token = self._electorate(), self._next_token()
        if electorate is None or token is None:
            return []
        voters, bootstrap = electorate
        self.stats.prevotes += 1
        needed = len(voters) if bootstrap else len(voters) // 2 + 1
        rnd = _Round(token, now, now + self.cfg.request_timeout, voters, needed, False, bootstrap, prevote=True)
        self._round = rnd
        ask = LeasePreVote(token=token, ttl=self.cfg.ttl, config_version=self.config.version if self.config else 0,
                           bootstrap=list(bootstrap), voters=list(self.config.voters) if self.config else [])
        if self.self_id in voters and self._prevote_refusal(self.self_id, ask, now) is None:
            rnd.granted.add(self.self_id)
        effects: list[Effect] = [Send(v, ask) for v in voters if v != self.self_id]
        effects.extend(self._check_round(now))
        return effects

    def _campaign(self, now: float) -> list[Effect]:
        electorate, token = self._electorate(), self._next_token()
        if electorate is None or token is None:
            return []
        voters, bootstrap = electorate
        self.stats.campaigns += 1
        self.proposed = token
        return [self._persist(), *self._start_round(now, renew=False, voters=voters, bootstrap=bootstrap)]

    def _start_round(self, now: float, *, renew: bool, voters: tuple[str, ...] | None = None,
                     bootstrap: tuple[str, ...] = ()) -> list[Effect]:
        voters = voters or self._voters() or ()
        needed = len(voters) if bootstrap else len(voters) // 2 + 1
        token = self.leader_token if renew else self.proposed
        rnd = _Round(token, now, now + self.cfg.request_timeout, voters, needed, renew, bootstrap)
        self._round = rnd
        if renew:
            self._next_renew = now + self.cfg.ttl * self.cfg.renew_fraction
        request = LeaseRequest(token=token, ttl=self.cfg.ttl, renew=renew,
                               config_version=self.config.version if self.config else 0,
                               bootstrap=list(bootstrap), voters=list(self.config.voters) if self.config else [])
        effects: list[Effect] = []
        if self.self_id in voters:
            # vote for itself through the same rule as for anyone else
            grant, persist = self._decide(self.self_id, request, now)
            if persist:
                effects.append(self._persist())
            if grant.granted:
                rnd.granted.add(self.self_id)
        effects.extend(Send(v, request) for v in voters if v != self.self_id)
        effects.extend(self._check_round(now))
        return effects

    def _release(self, rnd: _Round) -> list[Effect]:
        return [Send(v, LeaseRelease(rnd.token)) for v in sorted(rnd.granted) if v != self.self_id] + (
            [] if self.self_id not in rnd.granted else self._release_own(rnd.token))

    def _release_own(self, token: int) -> list[Effect]:
        if self._grant is not None and self._grant.holder == self.self_id and self._grant.token == token:
            self._grant = None
        return []

    def _release_voters(self) -> list[Effect]:
        """The lease ran out without a renewal: give the voters back their promises, so a leader
        that can send but no longer hears grants does not hold them for another TTL. Safe: this
        node never acts under the token again (it steps down before anything else)."""
        voters = self._voters() or ()
        return [Send(v, LeaseRelease(self.leader_token)) for v in voters if v != self.self_id] \
            + self._release_own(self.leader_token)

    def _step_down(self) -> None:
        self.stats.step_downs += 1
        self.leader = None
        self.lease_until = -math.inf
        self._next_renew = math.inf
        self._next_announce = math.inf
        self._config_change = None

    # -- voting ------------------------------------------------------------------------
    def _judge(self, candidate: str, req: LeaseRequest | LeasePreVote, renew: bool, now: float,
               config: ClusterConfig | None) -> str | None:
        """The voter's rule, reading state only: why a request would be refused, or None.
        ``config`` is the configuration to judge by (the request's, when it is newer)."""
        grant = self._grant
        if now < self._quiet_until and candidate != self.self_id:
            return "restarted recently"  # it may have promised before it died
        if config is not None:
            if candidate not in config.voters:
                return "not a voter"
            if req.config_version < config.version:
                return "stale configuration"
        elif not req.bootstrap or self.self_id not in req.bootstrap or candidate not in req.bootstrap:
            return "not bootstrapped"
        if grant is not None and now < grant.until and grant.holder != candidate:
            return f"promised to {grant.holder}"
        # a fresh grant needs a token above every token granted or led before. A renewal may be
        # granted by a voter that holds no other promise (it joined, restarted, or its promise
        # lapsed) as long as no newer leader is known: mutual exclusion comes from the promises
        if renew:
            if req.token < self.fence_floor:
                return "a newer leader is known"
        elif req.token <= max(self.highest, self.fence_floor):
            return "token not above the highest seen"
        return None

    def _config_for(self, req: LeaseRequest | LeasePreVote) -> ClusterConfig | None:
        if req.voters and req.config_version > (self.config.version if self.config else 0):
            # a newer configuration than ours exists (its commit did not reach us): only a leader
            # makes one, and versions only grow, so judge the request by it
            return ClusterConfig(tuple(req.voters), req.config_version)
        return self.config

    def _prevote_refusal(self, candidate: str, ask: LeasePreVote, now: float) -> str | None:
        """Why this node would not back ``candidate``'s campaign now, or None."""
        leader = self.current_leader(now)
        if leader is not None and leader != candidate:
            return f"leader {leader} is alive"  # stickiness: a healthy leader is not unseated
        return self._judge(candidate, ask, False, now, self._config_for(ask))

    def _decide(self, candidate: str, req: LeaseRequest, now: float) -> tuple[LeaseGrant, bool]:
        """The voter's rule. Returns the answer and whether state must be persisted first."""

        config = self._config_for(req)
        adopted = config is not self.config
        self.config = config
        grant = self._grant
        if req.renew and grant is not None and grant.holder == candidate and grant.token == req.token \
                and not (now < self._quiet_until and candidate != self.self_id):
            grant.until = now + req.ttl + self.cfg.drift_margin
            self.stats.grants_given += 1
            return LeaseGrant(token=req.token, granted=True, highest=self.highest), adopted
        reason = self._judge(candidate, req, req.renew, now, config)
        if reason is not None:
            self.stats.grants_refused += 1
            return LeaseGrant(token=req.token, granted=False, highest=self.highest, reason=reason), adopted
        self.highest = max(self.highest, req.token)
        self._grant = _Grant(candidate, req.token, now + req.ttl + self.cfg.drift_margin)
        self.stats.grants_given += 1
        return LeaseGrant(token=req.token, granted=True, highest=self.highest), True

    # -- messages ----------------------------------------------------------------------
    def fence_check(self, token: int, now: float) -> tuple[bool, list[Effect]]:
        """:meth:`fence` as effects: accepted or not, plus a Persist when the floor moved (before the
        answer is given, so a restart cannot accept an older leader again) and any refusal."""
        effects = self._fence_persist(token, now)
        return effects is not None, [*(effects or []), *self._take_refusals()]

    def _fence_persist(self, token: int, now: float) -> list[Effect] | None:
        """:meth:`fence` ``token``: None when refused, else the Persist of a raised floor (or nothing)."""
        floor = self.fence_floor
        if not self.fence(token, now):
            return None
        return [self._persist()] if self.fence_floor != floor else []

    def _take_refusals(self, sender: str = "", kind: str = "") -> list[Effect]:
        refused, self._refusals = self._refusals, []
        return [attrs.evolve(r, sender=sender, kind=kind) for r in refused]

    def handle(self, message: Any, sender: str, now: float) -> list[Effect]:
        """Effects of one lease message from ``sender`` (a refused token among them, if any)."""
        effects = self._handle(message, sender, now)
        return [*effects, *self._take_refusals(sender, type(message).__name__)] if self._refusals else effects

    def _handle(self, message: Any, sender: str, now: float) -> list[Effect]:
        token = getattr(message, "highest" if isinstance(message, LeaseGrant | LeasePreVoteReply) else "token", None)
        if isinstance(token, int) and not isinstance(message, LeaseRelease | ConfigCommit) \
                and not self.plausible(token, now):
            return []  # forged or corrupt: no election produces it (ConfigCommit: see fence)
        if isinstance(message, LeaseRequest):
            answer, persist = self._decide(sender, message, now)
            effects: list[Effect] = [self._persist()] if persist else []
            return [*effects, Send(sender, answer)]
        if isinstance(message, LeasePreVote):
            reason = self._prevote_refusal(sender, message, now)
            return [Send(sender, LeasePreVoteReply(token=message.token, granted=reason is None,
                                                   highest=self.highest, reason=reason or ""))]
        if isinstance(message, LeasePreVoteReply):
            return self._on_prevote_reply(message, sender, now)
        if isinstance(message, LeaseGrant):
            return self._on_grant(message, sender, now)
        if isinstance(message, LeaseRelease):
            grant = self._grant
            if grant is not None and grant.holder == sender and grant.token == message.token:
                self._grant = None
            return []
        if isinstance(message, LeaseAnnounce):
            return self._on_announce(message, sender, now)
        if isinstance(message, ConfigCommit):
            return self._on_config(message, sender, now)
        if isinstance(message, ConfigAck):
            return self._on_config_ack(message, sender, now)
        return []

    def _on_prevote_reply(self, reply: LeasePreVoteReply, sender: str, now: float) -> list[Effect]:
        rnd = self._round
        if reply.highest > self.proposed:
            self.proposed = reply.highest  # someone is ahead: our campaign must outbid it
        if rnd is None or not rnd.prevote or reply.token != rnd.token or sender not in rnd.voters:
            return []
        if reply.granted:
            rnd.granted.add(sender)
            return self._check_round(now)
        return self._refused(rnd, sender, now)

    def _on_grant(self, grant: LeaseGrant, sender: str, now: float) -> list[Effect]:
        rnd = self._round
        if grant.highest > self.proposed:
            self.proposed = grant.highest  # someone is ahead: our next campaign must outbid it
        if rnd is None or rnd.prevote or grant.token != rnd.token or sender not in rnd.voters:
            return []
        if grant.granted:
            rnd.granted.add(sender)
            return self._check_round(now)
        return self._refused(rnd, sender, now) if not rnd.renew else []

    def _refused(self, rnd: _Round, sender: str, now: float) -> list[Effect]:
        """A refusal: once enough refused that quorum is out of reach, give up at once (and give
        the grants back) rather than at the timeout, so colliding candidates part quickly."""
        rnd.refused.add(sender)
        if len(rnd.voters) - len(rnd.refused) >= rnd.needed:
            return []
        self._round = None
        self._next_campaign = now + self._backoff()
        return [] if rnd.prevote else self._release(rnd)

    def _check_round(self, now: float) -> list[Effect]:
        rnd = self._round
        if rnd is None or len(rnd.granted) < rnd.needed:
            return []
        self._round = None
        if rnd.prevote:
            if self.lease_remaining(now) is not None:
                return []  # a leader appeared meanwhile: the campaign would only disturb it
            return self._campaign(now)  # a quorum was heard: the real campaign may bind voters
        if rnd.renew:
            if self.leader == self.self_id and rnd.token == self.leader_token:
                self.lease_until = rnd.asked_at + self.cfg.ttl - self.cfg.drift_margin
                self._in_touch_at = now
            return []
        if rnd.token < self.fence_floor:
            return self._release(rnd)  # a newer leader appeared while grants came in: void
        self.stats.elections_won += 1
        self._in_touch_at = now
        self.fence_floor = rnd.token
        self.leader = self.self_id
        self.leader_token = rnd.token
        self.lease_until = rnd.asked_at + self.cfg.ttl - self.cfg.drift_margin
        self._next_renew = rnd.asked_at + self.cfg.ttl * self.cfg.renew_fraction
        self._next_announce = now + self.cfg.ttl * self.cfg.renew_fraction
        effects: list[Effect] = [Broadcast(self._announcement(now))]  # followers learn at once
        if rnd.bootstrap:
            self.config = ClusterConfig(rnd.bootstrap, 1)
            effects.append(self._persist())
            effects.extend(self._commit(self.config))
        return effects

    def _on_announce(self, ann: LeaseAnnounce, sender: str, now: float) -> list[Effect]:
        effects = self._fence_persist(ann.token, now)
        if effects is None:
            return []  # a stale leader still announcing: ignored
        self._in_touch_at = now
        if self.leader == self.self_id and sender != self.self_id and self.leader_token < ann.token:
            self._step_down()  # a newer lease exists: this node's is over
        self.leader = sender
        self.leader_token = ann.token
        # believe it a little shorter than announced: the message took some time to arrive
        self.leader_seen_until = now + max(0.0, ann.remaining - self.cfg.drift_margin)
        if ann.voters and (self.config is None or ann.config_version > self.config.version):
            self.config = ClusterConfig(tuple(ann.voters), ann.config_version)
            effects.append(self._persist())
        return effects

    # -- configuration -----------------------------------------------------------------
    def _commit(self, config: ClusterConfig) -> list[Effect]:
        self._config_change = config
        self._config_acks = {self.self_id}
        return [Broadcast(ConfigCommit(token=self.leader_token, voters=list(config.voters), version=config.version))]

    def _on_config(self, msg: ConfigCommit, sender: str, now: float) -> list[Effect]:
        effects = self._fence_persist(msg.token, now)
        if effects is None:
            return []
        if self.config is None or msg.version > self.config.version:
            self.config = ClusterConfig(tuple(msg.voters), msg.version)
            effects.append(self._persist())
        if self.config.version == msg.version and self.self_id in msg.voters:
            effects.append(Send(sender, ConfigAck(version=msg.version)))
        return effects

    def _on_config_ack(self, ack: ConfigAck, sender: str, now: float) -> list[Effect]:
        change = self._config_change
        if change is None or ack.version != change.version or sender not in change.voters:
            return []
        self._config_acks.add(sender)
        if len(self._config_acks & set(change.voters)) >= change.quorum():
            self._config_change = None  # committed: the next change may start
        return []

    def _maybe_reconfigure(self, now: float) -> list[Effect]:
        """The leader keeps the voters alive and up to ``max_voters``, one change at a time."""
        config = self.config
        if config is None or self._config_change is not None or not self.is_leader(now):
            return []
        gone = [v for v in config.voters if v != self.self_id and v in self.dead_since
                and now - self.dead_since[v] >= self.cfg.voter_dead_grace]
        if gone:
            voters = tuple(v for v in config.voters if v != gone[0])
        else:
            candidates = sorted(m for m in self.alive if m not in config.voters)
            if not candidates or len(config.voters) >= self.cfg.max_voters:
                return []
            voters = tuple(sorted((*config.voters, candidates[0])))
        self.config = ClusterConfig(voters, config.version + 1)
        return [self._persist(), *self._commit(self.config)]
