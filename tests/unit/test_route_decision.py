"""The serve / forward / refuse rule of routing, without I/O."""

from __future__ import annotations

from dakera_actors.routing.router import route_decision


def test_the_owner_or_no_owner_serves_here() -> None:
    assert route_decision("store", "me", "me", eventual=False, holds=False, hops=0) == "serve"
    assert route_decision("store", None, "me", eventual=False, holds=False, hops=1) == "serve"
    assert route_decision("local_agents", "other", "me", eventual=False, holds=False, hops=1) == "serve"


def test_an_eventual_read_is_served_by_a_node_holding_a_copy() -> None:
    assert route_decision("recall", "other", "me", eventual=True, holds=True, hops=0) == "serve"
    assert route_decision("recall", "other", "me", eventual=True, holds=False, hops=0) == "forward"
    assert route_decision("recall", "other", "me", eventual=False, holds=True, hops=0) == "forward"


def test_a_request_is_forwarded_once_then_refused() -> None:
    assert route_decision("store", "other", "me", eventual=False, holds=False, hops=0) == "forward"
    assert route_decision("store", "other", "me", eventual=False, holds=False, hops=1) == "refuse"
