"""The admin and ops answers' pure pieces: the cluster-wide tally, the typed SDKs' names beside the
seed's (maintenance, replication lag per node, rebalance moves), and the rebalance body parser."""

from __future__ import annotations

import pytest

from dakera_actors.api.admin_views import maintenance_view, node_lags, planned_moves, rebalance_view
from dakera_actors.api.errors import ApiError
from dakera_actors.api.operations import parse_rebalance
from dakera_actors.operations.maintenance import MaintenanceStatus
from dakera_actors.operations.stats import tally
from dakera_actors.replication.rows import ReplicaStatus, ShardStatus
from dakera_actors.replication.status import merge
from dakera_actors.sharding.shardmap import ShardMap

PLACEMENT = [["a", "b"], ["b", "c"], ["c", "a"], ["a", "c"]]


def test_tally_counts_each_shard_once_at_its_primary() -> None:
    # replicas' counts are never added: b also holds shard 0 and would double it
    totals = tally(PLACEMENT, {"a": {0: (5, 2), 3: (1, 1)}, "b": {1: (7, 3), 0: (99, 99)}, "c": {2: (0, 0)}})
    assert (totals.memories, totals.agents, totals.counted, totals.partial) == (13, 6, 4, False)
    assert totals.per_shard == {0: (5, 2), 1: (7, 3), 2: (0, 0), 3: (1, 1)}
    assert "unavailable" not in totals.json() and totals.json()["partial"] is False


def test_tally_names_what_it_could_not_count() -> None:
    totals = tally(PLACEMENT, {"a": {0: (5, 2)}, "b": "did not answer: timeout", "c": {2: (4, 1)}})
    assert (totals.memories, totals.agents, totals.counted) == (9, 3, 2) and totals.partial
    assert totals.missing_shards == [1, 3]
    assert totals.unavailable == [
        {"node_id": "a", "reason": "did not count shard 3 (not held there, or still being taken over)"},
        {"node_id": "b", "reason": "did not answer: timeout"}]
    body = totals.json()
    assert body["partial"] is True and body["missing_shards"] == [1, 3] and len(body["unavailable"]) == 2


def test_tally_of_an_unplaced_shard_or_a_missing_answer_is_partial() -> None:
    assert tally([[], ["a"]], {"a": {1: (1, 1)}}).missing_shards == [0]
    assert tally([["a"]], {}).unavailable == [{"node_id": "a", "reason": "did not answer"}]


def status(node: str, on: bool, **kw: object) -> MaintenanceStatus:
    return MaintenanceStatus(node_id=node, maintenance=on, shards_remaining=3 if on else 5, primary_shards=[1],
                             replica_shards=[2], **kw)  # type: ignore[arg-type]


def test_maintenance_view_has_the_seed_and_the_sdk_names() -> None:
    off = maintenance_view([status("n1", False)], [])
    assert off["status"] == "active" and off["maintenance"] is False and off["shards_remaining"] == 5
    assert (off["enabled"], off["reason"], off["enabled_at"], off["since"], off["scheduled_end"]) == (
        False, None, None, None, None)
    assert off["nodes_in_maintenance"] == [] and off["rejecting_requests"] is False
    on = maintenance_view([status("n2", True, reason="patch", reject_requests=True, since=1000.7, until=2800.2,
                                  ends_in_seconds=1800)], ["n2"])
    assert on["status"] == "draining" and on["enabled"] is True and on["reason"] == "patch"
    assert (on["enabled_at"], on["since"], on["scheduled_end"]) == (1000, 1000, 2800)
    assert on["rejecting_requests"] is True and on["reject_requests"] is True and on["nodes_in_maintenance"] == ["n2"]
    both = maintenance_view([status("n1", False), status("n2", True, reason="patch", since=1000.0)], ["n2"])
    assert [v["node_id"] for v in both["nodes"]] == ["n1", "n2"]
    assert both["enabled"] is True and both["reason"] == "patch" and both["enabled_at"] == 1000
    assert both["scheduled_end"] is None and both["nodes_in_maintenance"] == ["n2"]


def replica(member: str, behind: int = 0, fresh: bool = True, lag_ms: int = 0) -> ReplicaStatus:
    return ReplicaStatus(member=member, behind=behind, fresh=fresh, acked=0, lag_ms=lag_ms)


def test_node_lags_one_entry_per_member_with_its_worst_copy() -> None:
    smap = ShardMap(token=1, version=3, rf=2, placement=[["a", "b"], ["b", "c"], ["c", "a"]], down=[])
    rows = {"a": [ShardStatus(0, 40, 2, 0, 1, [replica("b", behind=2, lag_ms=40)])],
            "b": [ShardStatus(1, 0, 0, 1, 1, [replica("c")])],
            "c": None}  # c did not answer: a's copy of shard 2 is unheard of
    lags = {e["node_id"]: e for e in node_lags(merge(smap, rows), {"a": True, "b": True, "c": True, "d": False})}
    assert set(lags) == {"a", "b", "c", "d"}
    assert (lags["b"]["lag_ms"], lags["b"]["status"], lags["b"]["lag_records"]) == (40, "lagging", 2)
    assert (lags["c"]["lag_ms"], lags["c"]["status"]) == (0, "healthy")
    assert lags["a"]["status"] == "unknown" and lags["d"]["status"] == "down"
    assert all(isinstance(e["lag_ms"], int) for e in lags.values())


def test_planned_moves_pair_what_leaves_with_what_arrives() -> None:
    plan = [{"shard": 3, "from": ["a", "b"], "to": ["a", "c"]},   # b's copy goes to c
            {"shard": 5, "from": ["a"], "to": ["a", "d"]},        # a new copy on d
            {"shard": 6, "from": ["a", "b"], "to": ["a"]},        # b's copy dropped
            {"shard": 7, "from": ["a", "b"], "to": ["b", "a"]}]   # the primary role moves
    assert planned_moves(plan) == [
        {"shard_id": "shard-3", "from_node": "b", "to_node": "c"},
        {"shard_id": "shard-5", "from_node": "", "to_node": "d"},
        {"shard_id": "shard-6", "from_node": "b", "to_node": ""},
        {"shard_id": "shard-7", "from_node": "a", "to_node": "b"}]
    answer = {"moved": 4, "dry_run": False, "shard_map_version": 9, "plan": plan}
    view = rebalance_view(answer, dry_run=False, shards=64, operation_id="rebalance-x")
    assert {k: view[k] for k in answer} == answer  # the seed's fields unchanged
    assert (view["initiated"], view["shards_affected"], view["total_shards"], view["estimated_seconds"]) == (
        True, 4, 64, None)
    dry = rebalance_view({**answer, "dry_run": True}, dry_run=True, shards=64, operation_id="r")
    assert dry["initiated"] is False and len(dry["planned_moves"]) == 4
    nothing = rebalance_view({"moved": 0, "plan": []}, dry_run=False, shards=64, operation_id="r")
    assert (nothing["initiated"], nothing["estimated_seconds"], nothing["planned_moves"]) == (False, 0, [])


@pytest.mark.parametrize("ids, expected", [([0, 3], [0, 3]), (["0", "3"], [0, 3]), (["shard-0", "shard-63"], [0, 63]),
                                           ([2.0, "shard-1"], [2, 1]), ([], [])])
def test_rebalance_takes_numbers_digit_strings_and_shard_ids(ids: list[object], expected: list[int]) -> None:
    assert parse_rebalance({"shard_ids": ids, "dry_run": True}, 64) == (True, expected)


@pytest.mark.parametrize("ids", [["shard-64"], [64], [-1], ["-1"], ["shard-x"], ["shard-"], ["x3"], [" 3"], ["3 "],
                                 ["shard-٣"], [True], [1.5], [None], [[1]], "shard-1", {"a": 1}])
def test_rebalance_refuses_bad_shard_ids_naming_the_field(ids: object) -> None:
    with pytest.raises(ApiError) as err:
        parse_rebalance({"shard_ids": ids}, 64)
    assert err.value.status == 400 and "shard_ids" in str(err.value) and err.value.extra.get("field") == "shard_ids"
