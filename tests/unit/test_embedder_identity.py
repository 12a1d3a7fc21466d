"""One embedder per cluster, pure: which embedder is the cluster's, who refuses, whom the leader
leaves out of the map (dakera_actors.membership.embedder, MapLeader's eligible members)."""

from __future__ import annotations

import attrs

from dakera_actors.membership.embedder import cluster_embedder, mismatched, refusal
from dakera_actors.membership.member import Member, MemberState
from dakera_actors.sharding.leader import Log, MapLeader


@attrs.frozen
class View:
    leader: str | None
    token: int
    is_self: bool


def m(id: str, embedder: str | None, state: MemberState = MemberState.ALIVE) -> Member:
    return Member(id=id, address=f"addr-{id}", api="", incarnation=1, state=state,
                  meta={"embedder": embedder} if embedder is not None else {})


def test_the_majority_of_reachable_members_names_the_clusters_embedder() -> None:
    members = [m("a", "hashing:384"), m("b", "hashing:384"), m("c", "hashing:256")]
    assert cluster_embedder(members, None) == "hashing:384"
    assert cluster_embedder(members, "c") == "hashing:384"  # the lease holder does not outvote a majority
    # dead members and members announcing nothing (older versions) do not vote
    assert cluster_embedder([m("a", "hashing:256"), m("b", "hashing:384", MemberState.DEAD), m("c", None)],
                            None) == "hashing:256"
    assert cluster_embedder([m("c", None)], None) is None


def test_a_tie_goes_to_the_lease_holder_or_stays_undecided() -> None:
    pair = [m("a", "hashing:384"), m("b", "hashing:256")]
    assert cluster_embedder(pair, "a") == "hashing:384"
    assert cluster_embedder(pair, "b") == "hashing:256"
    assert cluster_embedder(pair, None) is None
    assert cluster_embedder(pair, "z") is None  # a leader outside the tie breaks nothing


def test_the_odd_node_refuses_with_the_variable_and_the_clusters_value() -> None:
    members = [m("a", "hashing:384"), m("b", "hashing:384"), m("c", "hashing:256")]
    message = refusal("c", "hashing:256", members, None)
    assert message is not None and "\n" not in message
    assert "DAKERA_EMBEDDER" in message and "'hashing:384'" in message and "'hashing:256'" in message
    assert refusal("a", "hashing:384", members, None) is None
    # alone, or only beside members announcing nothing: nothing to disagree with
    assert refusal("c", "hashing:256", [m("c", "hashing:256")], None) is None
    assert refusal("c", "hashing:256", [m("c", "hashing:256"), m("a", None)], None) is None
    # a tie waits for the lease holder (or more members)
    assert refusal("b", "hashing:256", [m("a", "hashing:384"), m("b", "hashing:256")], None) is None
    assert refusal("b", "hashing:256", [m("a", "hashing:384"), m("b", "hashing:256")], "a") is not None


def test_members_with_another_embedder_are_never_placed_on() -> None:
    assert mismatched([m("a", "hashing:384"), m("b", "hashing:384"), m("c", "hashing:256"), m("d", None)],
                      None) == {"c"}
    assert mismatched([m("a", "hashing:384"), m("b", "hashing:256")], None) == frozenset()  # undecided
    leader = MapLeader("a", shards=4, rf=2)
    leader.on_lease(View("a", 1, True), 0.0)
    effects = leader.on_members([m("a", "hashing:384"), m("b", "hashing:384"), m("c", "hashing:256")], 0.0)
    assert leader.eligible == ("a", "b") and leader.other_embedder == ("c",)
    assert Log("warning", "members_with_another_embedder",
               {"members": ["c"], "action": "no shard is placed on them"}) in effects
    # gone (it refused and left): nothing more to say
    leader.on_members([m("a", "hashing:384"), m("b", "hashing:384"), m("c", "hashing:256", MemberState.LEFT)], 1.0)
    assert leader.eligible == ("a", "b") and leader.other_embedder == ()
