"""The chaos checker on hand-built histories: each anomaly it promises is caught and names the
offending operations, a clean history passes, indeterminate operations count as the Jepsen set
workload counts them; the fencing-token checker; a history survives dump and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .checker import check, check_tokens, dump_final_reads, load_final_reads, main
from .history import NEVER, History, Op, load_ops

NODES = ("n1", "n2", "n3")


class Build:
    """A history written as a script: each call adds one op, times given explicitly."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def _add(self, kind: str, agent: str, value: str | None, t: tuple[float, float], outcome: str,
             result: Any = None, node: str = "n1", truncated: bool = False) -> Op:
        op = Op(len(self.ops), 0, kind, agent, value, node, t[0], t[1], outcome, result,
                None if outcome == "ok" else "boom", truncated)
        self.ops.append(op)
        return op

    def store(self, content: str, mid: str | None, t: tuple[float, float], outcome: str = "ok",
              agent: str = "a") -> Op:
        return self._add("store", agent, content, t, outcome, mid if outcome == "ok" else None)

    def forget(self, mid: str, t: tuple[float, float], outcome: str = "ok", deleted: list[str] | None = None,
               agent: str = "a") -> Op:
        result = (deleted if deleted is not None else [mid]) if outcome == "ok" else None
        return self._add("forget", agent, mid, t, outcome, result)

    def read(self, pairs: list[tuple[str, str]], t: tuple[float, float], outcome: str = "ok", agent: str = "a",
             node: str = "n1", truncated: bool = False) -> Op:
        return self._add("read", agent, None, t, outcome, pairs if outcome == "ok" else None, node, truncated)


def everywhere(pairs: list[tuple[str, str]], agent: str = "a") -> dict[str, dict[str, list[tuple[str, str]]]]:
    return {node: {agent: list(pairs)} for node in NODES}


def clean() -> tuple[Build, dict[str, dict[str, list[tuple[str, str]]]]]:
    """Two stores, a forget of one, reads that see exactly what was acknowledged."""
    h = Build()
    h.store("c0-0", "m1", (0, 1))
    h.store("c0-1", "m2", (2, 3))
    h.read([("m2", "c0-1"), ("m1", "c0-0")], (4, 5))
    h.forget("m1", (6, 7))
    h.read([("m2", "c0-1")], (8, 9), node="n2")
    return h, everywhere([("m2", "c0-1")])


def test_a_clean_history_passes_and_counts_its_ops() -> None:
    h, final = clean()
    report = check(h.ops, final)
    assert report.ok(), report.render()
    assert report.anomalies() == []
    assert report.counts == {("store", "ok"): 2, ("forget", "ok"): 1, ("read", "ok"): 2}
    assert report.stores_checked == 2
    assert report.final_memories == {"n1": 1, "n2": 1, "n3": 1}
    assert "lost: 0" in report.render()


def test_an_acknowledged_store_missing_from_a_final_read_is_lost_naming_the_nodes() -> None:
    h, final = clean()
    final["n3"]["a"] = []
    report = check(h.ops, final)
    assert not report.ok(stale_allowed=True)
    assert [(a.subject, a.ops[0].index) for a in report.lost] == [("c0-1", 1)]
    assert "missing on n3" in report.lost[0].detail
    assert report.final_disagreement, "n3 also disagrees with the others"
    text = report.render()
    assert "lost: 1" in text and "#1 p0 store a c0-1 via n1 [2.000 .. 3.000] ok -> id m2" in text


def test_a_store_whose_forget_was_invoked_may_be_gone_even_if_the_forget_is_indeterminate() -> None:
    h = Build()
    h.store("c0-0", "m1", (0, 1))
    h.forget("m1", (2, 3), outcome="info")
    assert check(h.ops, everywhere([])).ok()
    assert check(h.ops, everywhere([("m1", "c0-0")])).ok()


def test_a_refused_forget_does_not_excuse_a_missing_store() -> None:
    h = Build()
    h.store("c0-0", "m1", (0, 1))
    h.forget("m1", (2, 3), outcome="fail")
    report = check(h.ops, everywhere([]))
    assert [a.subject for a in report.lost] == ["c0-0"]


def test_an_acknowledged_forget_whose_memory_comes_back_is_undone() -> None:
    h, final = clean()
    final["n2"]["a"] = [("m2", "c0-1"), ("m1", "c0-0")]
    report = check(h.ops, final)
    assert not report.ok(stale_allowed=True)
    assert [(a.subject, [op.index for op in a.ops]) for a in report.undone_forgets] == [("m1", [0, 3])]
    assert "still on n2" in report.undone_forgets[0].detail


def test_a_forget_undone_under_the_same_content_but_a_new_id_is_caught_by_content() -> None:
    h, final = clean()
    for node in NODES:
        final[node]["a"] = [("m2", "c0-1"), ("m9", "c0-0")]
    report = check(h.ops, final)
    assert [a.subject for a in report.undone_forgets] == ["m1"]
    assert report.duplicates, "one content under two ids"


def test_a_content_no_store_invoked_is_never_written_in_run_reads_and_final_reads() -> None:
    h, final = clean()
    h.read([("m2", "c0-1"), ("mx", "c7-7")], (10, 11))
    final["n1"]["a"].append(("my", "c8-8"))
    report = check(h.ops, final)
    assert not report.ok(stale_allowed=True)
    assert sorted(a.subject for a in report.never_written) == ["c7-7", "c8-8"]
    assert [op.index for op in report.never_written[0].ops] == [5]


def test_a_memory_listed_under_another_agent_is_never_written_there() -> None:
    h = Build()
    h.store("c0-0", "m1", (0, 1), agent="a")
    final = {node: {"a": [("m1", "c0-0")], "b": [("m1", "c0-0")]} for node in NODES}
    report = check(h.ops, final)
    assert [(a.agent, a.subject) for a in report.never_written] == [("b", "c0-0")]


def test_a_refused_store_that_shows_up_is_reported() -> None:
    h = Build()
    h.store("c0-0", None, (0, 1), outcome="fail")
    report = check(h.ops, everywhere([("m1", "c0-0")]))
    assert not report.ok(stale_allowed=True)
    assert [a.subject for a in report.refused_present] == ["c0-0"]


def test_indeterminate_stores_may_be_present_or_absent_and_count_as_recovered() -> None:
    h = Build()
    h.store("c0-0", None, (0, 1), outcome="info")
    h.store("c0-1", None, (2, NEVER), outcome="info")
    h.read([("m1", "c0-0")], (3, 4))
    report = check(h.ops, everywhere([("m1", "c0-0")]))
    assert report.ok(), report.render()
    assert report.recovered == 1 and report.stores_checked == 0
    # an indeterminate store's id, learned from a read, lets its forget be checked too
    h.forget("m1", (5, 6))
    report = check(h.ops, everywhere([("m1", "c0-0")]))
    assert [a.subject for a in report.undone_forgets] == ["m1"]


def test_a_store_applied_twice_is_a_duplicate() -> None:
    h = Build()
    h.store("c0-0", None, (0, 1), outcome="info")
    report = check(h.ops, everywhere([("m1", "c0-0"), ("m2", "c0-0")]))
    [duplicate] = report.duplicates
    assert duplicate.subject == "c0-0" and "one content under 2 ids: m1, m2" in duplicate.detail
    h.read([("m1", "c0-0"), ("m1", "c0-0")], (2, 3))
    report = check(h.ops, everywhere([("m1", "c0-0")]))
    assert [a.detail for a in report.duplicates] == ["one read lists ids more than once: m1"]


def test_a_read_listing_a_memory_after_its_forget_was_acknowledged_is_stale() -> None:
    h, final = clean()
    stale = h.read([("m2", "c0-1"), ("m1", "c0-0")], (7.5, 8), node="n3")
    report = check(h.ops, final)
    assert report.ok(stale_allowed=True) and not report.ok()
    assert [(a.subject, [op.index for op in a.ops]) for a in report.stale_reads] == [("c0-0", [3, stale.index])]
    assert "via n3" in report.stale_reads[0].detail


def test_a_read_overlapping_the_forget_may_still_list_the_memory() -> None:
    h, final = clean()
    h.read([("m2", "c0-1"), ("m1", "c0-0")], (6.5, 7.5))  # began before the forget's ack
    assert check(h.ops, final).ok()


def test_a_read_missing_an_acknowledged_store_is_stale_unless_a_forget_raced_it() -> None:
    h, final = clean()
    missing = h.read([("m1", "c0-0")], (3.5, 3.6), node="n2")  # began after c0-1 was acknowledged
    report = check(h.ops, final)
    assert [(a.subject, [op.index for op in a.ops]) for a in report.stale_reads] == [("c0-1", [1, missing.index])]
    assert "misses it 0.500s after" in report.stale_reads[0].detail
    # a read that began before the store's acknowledgement may miss it
    h2, final2 = clean()
    h2.read([("m1", "c0-0")], (2.5, 3.5))
    assert check(h2.ops, final2).ok()
    # a read overlapping a forget of the memory may miss it; after the forget was invoked too
    h3, final3 = clean()
    h3.read([("m2", "c0-1")], (5.5, 6.5))  # forget of m1 invoked at 6, before this read ended
    h3.read([("m2", "c0-1")], (6.2, 6.3))
    assert check(h3.ops, final3).ok()


def test_a_full_page_is_not_held_to_listing_everything() -> None:
    h, final = clean()
    h.read([("m1", "c0-0")], (3.5, 3.6), truncated=True)
    assert check(h.ops, final).ok()
    h.read([("m1", "c0-0")], (7.5, 7.6), truncated=True)  # still: a forgotten memory listed is stale
    assert [a.subject for a in check(h.ops, final).stale_reads] == ["c0-0"]


def test_failed_reads_are_not_checked() -> None:
    h, final = clean()
    h.read([], (3.5, 3.6), outcome="fail")
    report = check(h.ops, final)
    assert report.ok() and report.counts[("read", "fail")] == 1


def test_an_acknowledged_forget_that_deleted_nothing_after_the_store_was_acknowledged_is_stale() -> None:
    h = Build()
    h.store("c0-0", "m1", (0, 1))
    forget = h.forget("m1", (2, 3), deleted=[])
    report = check(h.ops, everywhere([]))
    assert [(a.subject, [op.index for op in a.ops]) for a in report.stale_reads] == [("m1", [0, forget.index])]
    assert report.ok(stale_allowed=True)


def test_final_reads_that_disagree_are_reported_with_what_each_node_lacks() -> None:
    h = Build()
    h.store("c0-0", None, (0, 1), outcome="info")
    final = everywhere([("m1", "c0-0")])
    final["n2"]["a"] = []
    report = check(h.ops, final)
    assert not report.lost, "an indeterminate store is not lost"
    assert not report.ok(stale_allowed=True)
    [disagreement] = report.final_disagreement
    assert disagreement.detail == "n2 lacks 1 (c0-0)" and disagreement.ops[0].index == 0


def test_a_node_that_does_not_list_the_agent_at_all_is_missing_its_memories() -> None:
    h = Build()
    h.store("c0-0", "m1", (0, 1))
    final = everywhere([("m1", "c0-0")])
    del final["n1"]["a"]
    assert [a.detail for a in check(h.ops, final).lost] == ["acknowledged (id m1) but missing on n1"]


def test_render_bounds_its_output_and_names_each_category() -> None:
    h = Build()
    for i in range(30):
        h.store(f"c0-{i}", f"m{i}", (i, i + 0.5))
    text = check(h.ops, everywhere([])).render(max_items=3)
    assert "lost: 30" in text and "... and 27 more" in text
    for kind in ("undone_forgets", "never_written", "refused_present", "duplicates", "stale_reads",
                 "final_disagreement"):
        assert f"{kind}: 0" in text


# -- fencing tokens ----------------------------------------------------------------------

def test_tokens_rising_and_agreeing_pass() -> None:
    samples = [(0.0, "n1", "n1", 1), (0.1, "n2", "n1", 1), (1.0, "n1", "n2", 2), (1.1, "n2", "n2", 2),
               (1.2, "n3", None, 0), (1.3, "n3", "n2", 2)]
    assert check_tokens(samples) == []


def test_a_token_going_down_on_one_node_is_a_violation() -> None:
    samples = [(1.0, "n2", "n1", 3), (0.0, "n2", "n1", 1), (2.0, "n2", "n3", 2), (3.0, "n2", None, 0)]
    [violation] = check_tokens(samples)
    assert violation.startswith("n2: fencing token went down from 3") and "to 2 (leader n3, t=2.000)" in violation


def test_one_token_naming_two_leaders_is_a_violation() -> None:
    samples = [(0.0, "n1", "n1", 4), (0.5, "n3", "n3", 4), (0.7, "n2", "n1", 4)]
    [violation] = check_tokens(samples)
    assert violation.startswith("fencing token 4 names 2 leaders: n1 (by n1") and "n3 (by n3 at t=0.500)" in violation


# -- dump and load -----------------------------------------------------------------------

def test_a_history_round_trips_through_json_lines_and_checks_the_same_offline(tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    ticks = iter(range(100))
    history = History(clock=lambda: float(next(ticks)))
    i = history.invoke(0, "store", "a", "c0-0", "n1")
    j = history.invoke(1, "read", "a", None, "n2")
    history.complete(i, "ok", "m1")
    history.complete(j, "ok", history.intern([("m1", "c0-0")]), truncated=False)
    k = history.invoke(0, "forget", "a", "m1", "n3")
    history.complete(k, "ok", ["m1"])
    history.invoke(2, "store", "a", "c2-0", "n1")  # never completed: indeterminate
    ops = history.ops()
    assert [(op.kind, op.outcome) for op in ops] == [("store", "ok"), ("read", "ok"), ("forget", "ok"),
                                                     ("store", "info")]
    assert ops[3].completed == NEVER and ops[1].result == [("m1", "c0-0")]
    history.dump(tmp_path / "h.jsonl")
    assert load_ops(tmp_path / "h.jsonl") == ops
    assert History.load(tmp_path / "h.jsonl").ops() == ops
    # a pair listed by many reads is held once
    again = history.intern([("m1", "c0-0")])
    assert again[0] is ops[1].result[0]
    final = everywhere([("m1", "c0-0")])
    dump_final_reads(final, tmp_path / "final.json")
    assert load_final_reads(tmp_path / "final.json") == final
    # offline: the forget acknowledged, the memory still there
    assert main([str(tmp_path / "h.jsonl"), str(tmp_path / "final.json")]) == 1
    printed = capsys.readouterr().out
    assert "undone_forgets: 1" in printed and printed.rstrip().endswith("FAILED")


def test_history_refuses_unknown_kinds_and_outcomes() -> None:
    history = History()
    with pytest.raises(ValueError):
        history.invoke(0, "update", "a", None, "n1")
    i = history.invoke(0, "read", "a", None, "n1")
    with pytest.raises(ValueError):
        history.complete(i, "maybe")
