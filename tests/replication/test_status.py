"""The cluster-wide replication report, pure: every primary's rows merged, only primaries believed."""

from __future__ import annotations

from dakera_actors.replication.status import ReplicaStatus, ShardStatus, cluster_report, primaries
from dakera_actors.sharding.shardmap import ShardMap


def test_the_report_merges_each_primarys_rows_and_names_who_did_not_answer() -> None:
    smap = ShardMap(token=1, version=4, rf=3, placement=[["a", "b", "c"], ["b", "a", "c"], ["c", "a", "b"], []],
                    down=["c"])
    assert primaries(smap) == ["a", "b", "c"] and primaries(smap, besides=["a"]) == ["b", "c"]
    rows = {
        "a": [ShardStatus(0, 120, 3, 2, 2, [ReplicaStatus("b", 3, True, 7, 120), ReplicaStatus("c", 0, True, 10, 0)]),
              ShardStatus(1, 9999, 99, 0, 2, [])],  # a is not shard 1's primary: ignored
        "b": [ShardStatus(1, 40, 1, 1, 2, []), ShardStatus(70, 1, 1, 1, 1, [])],  # 70: no such shard
        "c": None,  # did not answer
    }
    report = cluster_report(smap, "quorum", rows)
    assert report["replication_factor"] == 3 and report["write_ack"] == "quorum"
    assert report["unreachable_primaries"] == ["c"] and report["down"] == ["c"]
    assert report["healthy_replicas"] == 3 and report["lag_ms"] == 120
    assert report["under_replicated_shards"] == 3  # 1 has one healthy of two; 2 unheard; 3 unassigned
    by_id = {s["id"]: s for s in report["shards"]}
    assert by_id[0] == {"id": 0, "primary": "a", "replicas": ["b", "c"], "lag_ms": 120, "lag_records": 3,
                        "healthy_replicas": 2, "under_replicated": False}
    assert by_id[1]["lag_ms"] == 40 and by_id[1]["under_replicated"]
    assert by_id[2]["lag_ms"] is None and by_id[2]["healthy_replicas"] == 0 and by_id[2]["under_replicated"]
    assert by_id[3]["primary"] is None
