"""One embedder per cluster: which embedder is the cluster's, who refuses to join, whom to leave out.

Every node announces the identity of its embedder (``hashing:384``, ``wordllama:256``...) in its
member metadata under ``embedder``. Vectors of different embedders do not compare, so a cluster
holds one. The rule, pure:

* the cluster's embedder is the one most reachable members announce (the node asking counts
  itself); a tie goes to the lease holder's embedder when it is one of the tied, and is otherwise
  undecided (wait for more members);
* a node whose own embedder is not the cluster's refuses to join (:func:`refusal`): it stops
  with a one-line error naming ``DAKERA_EMBEDDER`` and the cluster's value;
* the other members leave a member announcing another embedder out of the shard map (no shard is
  placed on it, so nothing is routed to it: :func:`mismatched`).

A member that announces no embedder (a version before this rule) is counted as agreeing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .member import Member

__all__ = ["META_KEY", "announced", "cluster_embedder", "mismatched", "refusal"]

#: the member metadata key carrying a node's embedder identity
META_KEY = "embedder"


def announced(member: Member) -> str | None:
    """The embedder identity a member announces, None when it announces none."""
    value = member.meta.get(META_KEY)
    return value if isinstance(value, str) and value else None


def cluster_embedder(members: Iterable[Member], leader: str | None) -> str | None:
    """The cluster's embedder among the reachable members that announce one (see the module doc),
    None when undecided (nobody announces one, or a tie the lease holder does not break)."""
    votes: Counter[str] = Counter()
    leader_value: str | None = None
    for m in members:
        value = announced(m) if m.reachable else None
        if value is None:
            continue
        votes[value] += 1
        if m.id == leader:
            leader_value = value
    if not votes:
        return None
    ranked = votes.most_common()
    top = ranked[0][1]
    tied = sorted(v for v, n in ranked if n == top)
    if len(tied) == 1:
        return tied[0]
    return leader_value if leader_value in tied else None


def refusal(self_id: str, own: str, members: Iterable[Member], leader: str | None) -> str | None:
    """The one-line error a node with embedder ``own`` stops with, or None while it may stay:
    another member is known and the cluster's embedder is decided and not ``own``."""
    members = list(members)
    if not any(m.id != self_id and m.reachable and announced(m) is not None for m in members):
        return None  # alone (or nobody announces one): nothing to disagree with
    cluster = cluster_embedder(members, leader)
    if cluster is None or cluster == own:
        return None
    return (f"refusing to join: this node's DAKERA_EMBEDDER gives {own!r} but the cluster embeds with "
            f"{cluster!r}; vectors of different embedders do not mix. Set DAKERA_EMBEDDER={cluster} on "
            f"this node, or change it on every node with the whole cluster stopped (see the README)")


def mismatched(members: Iterable[Member], leader: str | None) -> frozenset[str]:
    """The members announcing an embedder other than the cluster's (none while it is undecided)."""
    members = list(members)
    cluster = cluster_embedder(members, leader)
    if cluster is None:
        return frozenset()
    return frozenset(m.id for m in members if (value := announced(m)) is not None and value != cluster)
