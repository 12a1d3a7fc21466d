"""Request validation: every refusal names its field; SDK-only extras warn instead of failing."""

from __future__ import annotations

from typing import Any

import pytest

from dakera_actors.store import validation
from dakera_actors.store.validation import Invalid


def refused(parse: Any, body: Any) -> str:
    with pytest.raises(Invalid) as info:
        parse(body)
    return info.value.field


def test_store_minimal_and_full() -> None:
    new, warnings = validation.parse_store({"agent_id": "a1", "content": "hello"})
    assert (new.memory_type, new.importance, new.tags, new.metadata, new.id) == ("episodic", 0.5, (), {}, None)
    assert warnings == []
    new, warnings = validation.parse_store({
        "agent_id": "a.b_c-1", "content": "x", "memory_type": "Semantic", "importance": 1, "tags": ["t", "t", "u"],
        "metadata": {"k": [1, 2]}, "session_id": "s1", "ttl_seconds": 60, "id": "mem-1", "lang": "en"})
    assert (new.memory_type, new.importance, new.tags, new.id) == ("semantic", 1.0, ("t", "u"), "mem-1")
    assert warnings == ["field 'lang' is not supported by this server and was ignored"]


@pytest.mark.parametrize("body,field", [
    ([], "body"),
    ({"content": "x"}, "agent_id"),
    ({"agent_id": "", "content": "x"}, "agent_id"),
    ({"agent_id": "-a", "content": "x"}, "agent_id"),
    ({"agent_id": "a b", "content": "x"}, "agent_id"),
    ({"agent_id": "a" * 242, "content": "x"}, "agent_id"),
    ({"agent_id": "_dakera_x", "content": "x"}, "agent_id"),
    ({"agent_id": 5, "content": "x"}, "agent_id"),
    ({"agent_id": "a"}, "content"),
    ({"agent_id": "a", "content": "   "}, "content"),
    ({"agent_id": "a", "content": 12}, "content"),
    ({"agent_id": "a", "content": "x" * 100_001}, "content"),
    ({"agent_id": "a", "content": "x", "importance": 1.5}, "importance"),
    ({"agent_id": "a", "content": "x", "importance": "high"}, "importance"),
    ({"agent_id": "a", "content": "x", "importance": True}, "importance"),
    ({"agent_id": "a", "content": "x", "memory_type": "dream"}, "memory_type"),
    ({"agent_id": "a", "content": "x", "tags": "t"}, "tags"),
    ({"agent_id": "a", "content": "x", "tags": ["ok", 3]}, "tags[1]"),
    ({"agent_id": "a", "content": "x", "metadata": [1]}, "metadata"),
    ({"agent_id": "a", "content": "x", "metadata": {"_dakera_x": 1}}, "metadata._dakera_x"),
    ({"agent_id": "a", "content": "x", "ttl_seconds": 0}, "ttl_seconds"),
    ({"agent_id": "a", "content": "x", "ttl_seconds": 1.5}, "ttl_seconds"),
    ({"agent_id": "a", "content": "x", "expires_at": -1}, "expires_at"),
    ({"agent_id": "a", "content": "x", "id": "bad id"}, "id"),
    ({"agent_id": "a", "content": "x", "colour": "red"}, "colour"),
])
def test_store_refusals_name_the_field(body: Any, field: str) -> None:
    assert refused(validation.parse_store, body) == field


def test_content_limit_is_in_characters() -> None:
    new, _ = validation.parse_store({"agent_id": "a", "content": "é" * 100_000})
    assert len(new.content) == 100_000


def test_expiry_prefers_expires_at_over_ttl() -> None:
    new, _ = validation.parse_store({"agent_id": "a", "content": "x", "ttl_seconds": 10, "expires_at": 2_000_000_000})
    assert new.expiry(1000.0) == 2_000_000_000
    new, _ = validation.parse_store({"agent_id": "a", "content": "x", "ttl_seconds": 10})
    assert new.expiry(1000.2) == 1011


def test_batch_store_limits_and_item_paths() -> None:
    items, _ = validation.parse_store_batch({"agent_id": "a", "memories": [{"content": "x"}] * 1000})
    assert len(items) == 1000
    assert refused(validation.parse_store_batch, {"agent_id": "a", "memories": []}) == "memories"
    assert refused(validation.parse_store_batch, {"agent_id": "a", "memories": [{"content": "x"}] * 1001}) == "memories"
    assert refused(validation.parse_store_batch, {"agent_id": "a", "memories": [{"content": "x"}, {"content": ""}]}) \
        == "memories[1].content"
    _, warnings = validation.parse_store_batch({"agent_id": "a", "memories": [{"content": "x", "lang": "en"}] * 3})
    assert warnings == ["field 'memories[].lang' is not supported by this server and was ignored"]


def test_recall_defaults_bounds_and_time_window() -> None:
    q, _ = validation.parse_recall({"agent_id": "a", "query": "q"})
    assert (q.top_k, q.routing, q.fusion, q.vector_weight, q.filter.empty) == (5, "hybrid", "minmax", 0.7, True)
    q, _ = validation.parse_recall({"agent_id": "a", "query": "q", "routing": "auto", "since": "2026-01-01T00:00:00Z",
                               "until": 1_900_000_000, "min_importance": 0.2, "memory_type": "semantic"})
    assert q.routing == "hybrid" and q.filter.created_after == 1767225600.0
    assert q.filter.created_before == 1_900_000_000 and q.filter.min_importance == 0.2
    for body, field in [({"agent_id": "a", "query": "q", "top_k": 0}, "top_k"),
                        ({"agent_id": "a", "query": "q", "top_k": 1001}, "top_k"),
                        ({"agent_id": "a", "query": "q", "routing": "psychic"}, "routing"),
                        ({"agent_id": "a", "query": "q", "fusion": "avg"}, "fusion"),
                        ({"agent_id": "a", "query": "q", "vector_weight": 2}, "vector_weight"),
                        ({"agent_id": "a", "query": "q", "since": "yesterday"}, "since"),
                        ({"agent_id": "a"}, "query")]:
        assert refused(validation.parse_recall, body) == field
    _, warnings = validation.parse_recall({"agent_id": "a", "query": "q", "rerank": False, "neighborhood": False})
    assert len(warnings) == 2


def test_update_needs_a_field() -> None:
    update, _ = validation.parse_update({"importance": 0.9, "tags": ["x"]})
    assert update.to_record() == {"importance": 0.9, "tags": ["x"]}
    assert refused(validation.parse_update, {}) == "body"
    assert refused(validation.parse_update, {"agent_id": "a"}) == "agent_id"  # the SDK sends it as a query arg


def test_forget_and_batch_forget() -> None:
    assert validation.parse_forget({"agent_id": "a", "memory_ids": ["m1", "m1", "m2"]}) == ("a", ("m1", "m2"))
    assert refused(validation.parse_forget, {"agent_id": "a", "memory_ids": []}) == "memory_ids"
    assert refused(validation.parse_forget, {"agent_id": "a", "memory_ids": ["ok", ""]}) == "memory_ids[1]"
    assert refused(validation.parse_batch_forget, {"agent_id": "a", "filter": {}}) == "filter"
    assert refused(validation.parse_batch_forget, {"agent_id": "a"}) == "filter"
    assert refused(validation.parse_batch_forget, {"agent_id": "a", "filter": {"colour": 1}}) == "filter.colour"
    agent, flt = validation.parse_batch_forget({"agent_id": "a", "filter": {"tags": ["x"], "created_before": 10}})
    assert flt.tags == ("x",) and flt.created_before == 10.0


def test_listing_args() -> None:
    assert validation.parse_listing({}) == (50, 0, None)
    assert validation.parse_listing({"limit": "5", "offset": "10", "memory_type": "working"}) == (5, 10, "working")
    for args, field in [({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"offset": "-1"}, "offset"),
                        ({"memory_type": "dream"}, "memory_type"),
                        # an empty value is no value of the type, not an absent parameter (make fuzz-api)
                        ({"limit": ""}, "limit"), ({"offset": ""}, "offset"), ({"memory_type": ""}, "memory_type")]:
        with pytest.raises(Invalid) as info:
            validation.parse_listing(args)
        assert info.value.field == field


@pytest.mark.parametrize("bad", ["a\n", "a\r\n", "a b", "a\n\n"])
def test_ids_are_matched_whole_not_up_to_a_trailing_newline(bad: str) -> None:
    # found while writing the OpenAPI schemas: "^...$" with re.match let "a\n" through as an agent id and a memory id
    assert refused(validation.parse_store, {"agent_id": bad, "content": "x"}) == "agent_id"
    assert refused(validation.parse_store, {"agent_id": "a", "content": "x", "id": bad}) == "id"
    assert refused(validation.parse_forget, {"agent_id": "a", "memory_ids": [bad]}) == "memory_ids[0]"


def test_a_whole_number_is_held_to_64_bits_however_it_is_written() -> None:
    # JSON Schema (and JavaScript) cannot tell 1e20 from 100000000000000000000; neither does the validator
    for big in (2**64, 1e20, -1e19 * 10, 1.5e300):  # every float that large is a whole number
        assert refused(validation.parse_store, {"agent_id": "a", "content": "x", "metadata": {"k": [big]}}) == "metadata.k[0]"
    new, _ = validation.parse_store({"agent_id": "a", "content": "x", "metadata": {"k": [1.5, 2.0**63, -(2.0**63), 0.25]}})
    assert new.metadata == {"k": [1.5, 2.0**63, -(2.0**63), 0.25]}
