"""The chaos run's checker: set semantics per agent, as Jepsen's set workload, over a History.

Each agent's memories are a set. A store adds a unique content string (so a store whose answer
never came still counts once its content shows up), a forget removes a memory by id, a read lists
the agent's set as one node saw it. After the run is healed and quiet, every node lists every
agent once more (the final reads). Pure: no I/O, no clock; ``python -m tests.chaos.checker
HISTORY.jsonl FINAL.json`` checks a dumped run again.

What it reports (each with the operations that show it):

- ``lost``: an acknowledged store missing from some node's final read, no forget of it invoked;
- ``undone_forgets``: an acknowledged forget whose memory is in a final read;
- ``never_written``: a content read (during the run or at the end) that no store of that agent
  invoked;
- ``refused_present``: a content read whose only store was refused (``fail``: the node said it did
  nothing, or the request never left the client);
- ``duplicates``: one content under two ids, or one id holding two contents (a store applied twice);
- ``stale_reads``: a read that began after a forget of X was acknowledged and still lists X; a
  complete read that began after a store was acknowledged and does not list it (unless a forget of
  it was invoked before the read ended); an acknowledged forget that found nothing to delete
  although the store of its memory was acknowledged before the forget began;
- ``final_disagreement``: nodes whose final reads of one agent differ.

:func:`check_tokens` checks the fencing tokens sampled from ``/admin/cluster/status``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .history import NEVER, History, Op

FinalReads = Mapping[str, Mapping[str, Sequence[tuple[str, str]]]]

#: the categories that fail a run whatever the consistency promised
HARD = ("lost", "undone_forgets", "never_written", "refused_present", "duplicates", "final_disagreement")


@attrs.frozen
class Anomaly:
    """One violation: its category, the agent, what it is about (a content or a memory id), a
    sentence saying what is wrong (with nodes where it matters), and the operations that show it."""

    kind: str
    agent: str
    subject: str
    detail: str
    ops: tuple[Op, ...] = ()


@attrs.frozen
class Report:
    lost: tuple[Anomaly, ...]
    undone_forgets: tuple[Anomaly, ...]
    never_written: tuple[Anomaly, ...]
    refused_present: tuple[Anomaly, ...]
    duplicates: tuple[Anomaly, ...]
    stale_reads: tuple[Anomaly, ...]
    final_disagreement: tuple[Anomaly, ...]
    #: (kind, outcome) -> operations
    counts: Mapping[tuple[str, str], int]
    #: indeterminate stores found in a final read (what Jepsen calls recovered)
    recovered: int = 0
    #: memories in the final reads (per node, summed over agents), and acknowledged stores checked
    final_memories: Mapping[str, int] = attrs.Factory(dict)
    stores_checked: int = 0

    def ok(self, stale_allowed: bool = False) -> bool:
        if any(getattr(self, kind) for kind in HARD):
            return False
        return stale_allowed or not self.stale_reads

    def anomalies(self) -> list[Anomaly]:
        return [a for kind in (*HARD, "stale_reads") for a in getattr(self, kind)]

    def render(self, max_items: int = 20) -> str:
        lines = ["ops: " + ", ".join(f"{kind} {outcome} {n}" for (kind, outcome), n in sorted(self.counts.items()))]
        lines.append(f"acknowledged stores checked {self.stores_checked}, indeterminate stores recovered "
                     f"{self.recovered}, final memories per node "
                     + (", ".join(f"{node} {n}" for node, n in sorted(self.final_memories.items())) or "none"))
        for kind in (*HARD, "stale_reads"):
            found: tuple[Anomaly, ...] = getattr(self, kind)
            lines.append(f"{kind}: {len(found)}")
            for anomaly in found[:max_items]:
                lines.append(f"  {anomaly.agent} {anomaly.subject}: {anomaly.detail}")
                lines.extend(f"    {op.describe()}" for op in anomaly.ops[:max_items])
                if len(anomaly.ops) > max_items:
                    lines.append(f"    ... and {len(anomaly.ops) - max_items} more operations")
            if len(found) > max_items:
                lines.append(f"  ... and {len(found) - max_items} more")
        return "\n".join(lines)


class _Agent:
    """What the history says about one agent."""

    def __init__(self) -> None:
        self.stores: dict[str, list[Op]] = defaultdict(list)  # content -> stores invoked with it
        self.forgets: dict[str, list[Op]] = defaultdict(list)  # memory id -> forgets invoked of it
        self.reads: list[Op] = []
        self.ids: dict[str, set[str]] = defaultdict(set)  # content -> ids it was stored or seen under
        self.contents: dict[str, set[str]] = defaultdict(set)  # id -> contents seen under it
        self.first: dict[str, str] = {}  # id -> the content it was first seen with

    def saw(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Learn ids and contents from a read. Pairs already known cost C-level dict work only
        (a long run reads the same memories thousands of times)."""
        listed = dict(pairs)
        if len(listed) == len(pairs) and listed.items() <= self.first.items():
            return
        for mid, content in pairs if len(listed) != len(pairs) else listed.items():
            if self.first.setdefault(mid, content) == content and mid in self.contents:
                continue
            self.ids[content].add(mid)
            self.contents[mid].add(content)

    def content_of(self, mid: str) -> str | None:
        contents = self.contents.get(mid)
        return next(iter(contents)) if contents and len(contents) == 1 else None

    def forgets_of(self, content: str) -> list[Op]:
        """Forgets invoked (not refused) of any id this content was stored or seen under."""
        return [f for mid in self.ids.get(content, ()) for f in self.forgets.get(mid, ()) if f.outcome != "fail"]

    def acked_store(self, content: str) -> Op | None:
        return next((s for s in self.stores.get(content, ()) if s.outcome == "ok"), None)


def _agents(ops: Iterable[Op], final_reads: FinalReads) -> dict[str, _Agent]:
    agents: dict[str, _Agent] = defaultdict(_Agent)
    for op in ops:
        agent = agents[op.agent]
        if op.kind == "store":
            assert op.value is not None, f"a store without its content: {op}"
            agent.stores[op.value].append(op)
            if op.outcome == "ok" and op.result is not None:
                agent.saw([(op.result, op.value)])
        elif op.kind == "forget":
            assert op.value is not None, f"a forget without its memory id: {op}"
            agent.forgets[op.value].append(op)
        elif op.kind == "read":
            agent.reads.append(op)
            if op.outcome == "ok" and op.result:
                agent.saw(op.result)
    for per_agent in final_reads.values():
        for name, pairs in per_agent.items():
            agents[name].saw(list(pairs))
    return agents


def check(ops: Sequence[Op], final_reads: FinalReads) -> Report:
    """Check a history and the final reads (node -> agent -> ``[(memory id, content), ...]``)."""
    agents = _agents(ops, final_reads)
    nodes = sorted(final_reads)
    out: dict[str, list[Anomaly]] = {kind: [] for kind in (*HARD, "stale_reads")}
    recovered = stores_checked = 0
    for name in sorted(agents):
        agent = agents[name]
        final = {node: {(mid, content) for mid, content in final_reads[node].get(name, ())} for node in nodes}
        _check_contents(name, agent, final, out)
        _check_duplicates(name, agent, out)
        _check_reads(name, agent, out)
        _check_forgets_found(name, agent, out)
        stores_checked += sum(1 for content in agent.stores if agent.acked_store(content) is not None)
        recovered += _check_final(name, agent, final, nodes, out)
    counts = Counter((op.kind, op.outcome) for op in ops)
    memories = {node: sum(len(pairs) for pairs in final_reads[node].values()) for node in nodes}
    return Report(**{kind: tuple(found) for kind, found in out.items()}, counts=dict(counts),
                  recovered=recovered, final_memories=memories, stores_checked=stores_checked)


def _check_contents(name: str, agent: _Agent, final: Mapping[str, set[tuple[str, str]]],
                    out: dict[str, list[Anomaly]]) -> None:
    """Contents read that no store of this agent invoked, or whose only stores were refused."""
    odd = {content for content in agent.ids
           if not (stores := agent.stores.get(content)) or all(s.outcome == "fail" for s in stores)}
    if not odd:
        return
    seen: dict[str, list[Op]] = defaultdict(list)  # odd content -> reads showing it
    for read in agent.reads:
        if read.outcome == "ok" and read.result:
            for content in {content for _mid, content in read.result} & odd:
                seen[content].append(read)
    finals: dict[str, list[str]] = defaultdict(list)  # odd content -> nodes whose final read has it
    for node, pairs in final.items():
        for content in {content for _mid, content in pairs} & odd:
            finals[content].append(node)
    for content in sorted(odd):
        if content not in seen and content not in finals:
            continue  # only an acknowledged store's answer named it (a refused store has no id)
        where = f"in {len(seen.get(content, ()))} reads during the run" + (
            f" and the final reads of {', '.join(sorted(finals[content]))}" if content in finals else "")
        stores = agent.stores.get(content, [])
        if not stores:
            out["never_written"].append(Anomaly("never_written", name, content,
                                                f"no store of this content for this agent; {where}",
                                                tuple(_unique(seen.get(content, [])))))
        else:
            out["refused_present"].append(Anomaly("refused_present", name, content,
                                                  f"its every store was refused; {where}",
                                                  tuple(_unique([*stores, *seen.get(content, [])]))))


def _check_duplicates(name: str, agent: _Agent, out: dict[str, list[Anomaly]]) -> None:
    for content, ids in sorted(agent.ids.items()):
        if len(ids) > 1:
            out["duplicates"].append(Anomaly("duplicates", name, content,
                                             f"one content under {len(ids)} ids: {', '.join(sorted(ids))}",
                                             tuple(agent.stores.get(content, ()))))
    for mid, contents in sorted(agent.contents.items()):
        if len(contents) > 1:
            out["duplicates"].append(Anomaly("duplicates", name, mid,
                                             f"one id holding {len(contents)} contents: {sorted(contents)}",
                                             tuple(s for c in sorted(contents) for s in agent.stores.get(c, ()))))
    for read in agent.reads:
        if read.outcome != "ok" or not read.result:
            continue
        if len(dict(read.result)) == len(read.result):
            continue
        mids = Counter(mid for mid, _ in read.result)
        twice = sorted(mid for mid, n in mids.items() if n > 1)
        if twice:
            out["duplicates"].append(Anomaly("duplicates", name, twice[0],
                                             f"one read lists ids more than once: {', '.join(twice)}", (read,)))


def _check_reads(name: str, agent: _Agent, out: dict[str, list[Anomaly]]) -> None:
    """Reads during the run against what was acknowledged before they began. One sweep over the
    reads in invocation order keeps, as sets of memory ids, what was forgotten (forget
    acknowledged) and what is live (store acknowledged, no forget invoked) when each read began, so
    a read costs C-level set work over what it lists, not a walk over the history."""
    # acknowledged forgets in acknowledgement order, each with every id its memory was seen under
    acked_forgets = sorted((f.completed, f.index, f, _ids_of(agent, mid))
                           for mid, forgets in agent.forgets.items() for f in forgets if f.outcome == "ok")
    # acknowledged stores in acknowledgement order, and the first forget invoked of each
    acked = sorted((store.completed, store.index, content, store) for content in agent.stores
                   if (store := agent.acked_store(content)) is not None)
    first_forget = {content: min((f.invoked for f in agent.forgets_of(content)), default=NEVER)
                    for _at, _i, content, _store in acked}
    forgets_in_order = sorted((at, content) for content, at in first_forget.items() if at != NEVER)
    forgotten: set[str] = set()
    forgotten_by: dict[str, Op] = {}
    live: dict[str, Op] = {}  # content -> its acknowledged store
    live_ids: set[str] = set()  # the ids of those stores (an acknowledged store answers its id)
    next_store = next_forget = next_ack = 0
    for read in sorted(agent.reads, key=lambda r: (r.invoked, r.index)):
        while next_ack < len(acked_forgets) and acked_forgets[next_ack][0] < read.invoked:
            _at, _i, forget, ids = acked_forgets[next_ack]
            for mid in ids - forgotten:
                forgotten_by[mid] = forget
            forgotten |= ids
            next_ack += 1
        while next_store < len(acked) and acked[next_store][0] < read.invoked:
            _at, _i, content, store = acked[next_store]
            if first_forget[content] >= read.invoked:
                live[content] = store
                if store.result is not None:
                    live_ids.add(store.result)
            next_store += 1
        while next_forget < len(forgets_in_order) and forgets_in_order[next_forget][0] < read.invoked:
            gone = live.pop(forgets_in_order[next_forget][1], None)
            if gone is not None:
                live_ids.discard(gone.result)
            next_forget += 1
        if read.outcome != "ok" or read.result is None:
            continue
        listed = dict(read.result)  # id -> content
        for mid in sorted(forgotten.intersection(listed)):
            forget = forgotten_by[mid]
            out["stale_reads"].append(Anomaly(
                "stale_reads", name, listed[mid],
                f"read via {read.node} lists {mid} {read.invoked - forget.completed:.3f}s after its forget "
                "was acknowledged", (forget, read)))
        if read.truncated:
            continue  # a full page: what it does not list may be on the next one
        if len(live_ids) == len(live) and not live_ids.difference(listed):
            continue  # the common case: it lists every live memory
        contents = set(listed.values())
        for content, store in live.items():
            if (store.result is not None and store.result in listed) or content in contents:
                continue  # listed (under its id, or under another one: a duplicate)
            if first_forget[content] < read.completed:
                continue  # a forget may have taken it away before the read answered
            out["stale_reads"].append(Anomaly(
                "stale_reads", name, content,
                f"read via {read.node} misses it {read.invoked - store.completed:.3f}s after its store was "
                "acknowledged", (store, read)))


def _ids_of(agent: _Agent, mid: str) -> set[str]:
    """Every id a memory was seen under: this one, and any its content was stored or read under."""
    return {mid} | {m for c in agent.contents.get(mid, ()) for m in agent.ids.get(c, ())}


def _check_forgets_found(name: str, agent: _Agent, out: dict[str, list[Anomaly]]) -> None:
    """An acknowledged forget whose memory's store was acknowledged before it began must have
    deleted it, unless another forget of it could have come first."""
    for mid, forgets in agent.forgets.items():
        content = agent.content_of(mid)
        store = agent.acked_store(content) if content is not None else None
        for forget in forgets:
            if forget.outcome != "ok" or not isinstance(forget.result, list) or mid in forget.result:
                continue
            if store is None or store.completed >= forget.invoked:
                continue
            if any(other is not forget and other.outcome != "fail" and other.invoked < forget.completed
                   for other in forgets):
                continue
            out["stale_reads"].append(Anomaly(
                "stale_reads", name, mid,
                f"forget via {forget.node} deleted nothing although the store was acknowledged "
                f"{forget.invoked - store.completed:.3f}s before it", (store, forget)))


def _check_final(name: str, agent: _Agent, final: Mapping[str, set[tuple[str, str]]], nodes: list[str],
                 out: dict[str, list[Anomaly]]) -> int:
    """Lost stores, undone forgets and disagreeing nodes in the final reads; returns how many
    indeterminate stores the final reads hold."""
    contents = {node: {content for _mid, content in pairs} for node, pairs in final.items()}
    ids = {node: {mid for mid, _content in pairs} for node, pairs in final.items()}
    recovered = 0
    for content, stores in sorted(agent.stores.items()):
        store = agent.acked_store(content)
        if store is None:
            if any(s.outcome == "info" for s in stores) and any(content in contents[n] for n in nodes):
                recovered += 1
            continue
        missing = [n for n in nodes if content not in contents[n]]
        if missing and not agent.forgets_of(content):
            out["lost"].append(Anomaly("lost", name, content,
                                       f"acknowledged (id {store.result}) but missing on {', '.join(missing)}",
                                       (store,)))
    for mid, forgets in sorted(agent.forgets.items()):
        acked = [f for f in forgets if f.outcome == "ok"]
        if not acked:
            continue
        known = agent.content_of(mid)
        present = [n for n in nodes if mid in ids[n] or (known is not None and known in contents[n])]
        if present:
            out["undone_forgets"].append(Anomaly(
                "undone_forgets", name, mid, f"forget acknowledged, memory still on {', '.join(present)}",
                tuple(_unique([*acked, *agent.stores.get(known or "", ())]))))
    if nodes:
        union = set().union(*final.values())
        differ = {n: (union - final[n]) for n in nodes if final[n] != union}
        if differ:
            detail = "; ".join(f"{n} lacks {len(lacks)} ({_sample(sorted(c for _m, c in lacks))})"
                               for n, lacks in sorted(differ.items()))
            out["final_disagreement"].append(Anomaly(
                "final_disagreement", name, f"{len(differ)} of {len(nodes)} nodes", detail,
                tuple(_unique(s for lacks in differ.values() for _m, c in sorted(lacks)
                              for s in agent.stores.get(c, ())))))
    return recovered


def _sample(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n else "")


def _unique(ops: Iterable[Op]) -> list[Op]:
    seen: dict[int, Op] = {}
    for op in ops:
        seen.setdefault(op.index, op)
    return [seen[i] for i in sorted(seen)]


# -- fencing tokens ----------------------------------------------------------------------

Sample = tuple[float, str, str | None, int]


def check_tokens(samples: Iterable[Sample]) -> list[str]:
    """Samples ``(t, node_id, leader_id, fencing_token)`` of every node's ``/admin/cluster/status``
    through the run. Violations: a node whose observed token goes down, and a token under which two
    different leaders were named (by any nodes). Samples naming no leader or token 0 are skipped."""
    violations: list[str] = []
    by_node: dict[str, list[Sample]] = defaultdict(list)
    leaders: dict[int, dict[str, Sample]] = defaultdict(dict)  # token -> leader -> first sample naming it
    for sample in samples:
        t, node, leader, token = sample
        if leader is None or not token:
            continue
        by_node[node].append(sample)
        leaders[token].setdefault(leader, sample)
    for node, seen in sorted(by_node.items()):
        seen.sort(key=lambda s: s[0])
        highest = seen[0]
        for sample in seen[1:]:
            if sample[3] < highest[3]:
                violations.append(f"{node}: fencing token went down from {highest[3]} (leader {highest[2]}, "
                                  f"t={highest[0]:.3f}) to {sample[3]} (leader {sample[2]}, t={sample[0]:.3f})")
            else:
                highest = sample
    for token, named in sorted(leaders.items()):
        if len(named) > 1:
            violations.append(f"fencing token {token} names {len(named)} leaders: " + ", ".join(
                f"{leader} (by {s[1]} at t={s[0]:.3f})" for leader, s in sorted(named.items())))
    return violations


# -- offline -----------------------------------------------------------------------------

def dump_final_reads(final_reads: FinalReads, path: str | Path) -> None:
    Path(path).write_text(json.dumps({node: {agent: [list(p) for p in pairs] for agent, pairs in per.items()}
                                      for node, per in final_reads.items()}, indent=1), encoding="utf-8")


def load_final_reads(path: str | Path) -> dict[str, dict[str, list[tuple[str, str]]]]:
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return {node: {agent: [(str(m), str(c)) for m, c in pairs] for agent, pairs in per.items()}
            for node, per in data.items()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="check a dumped chaos history and its final reads")
    parser.add_argument("history", help="JSON lines written by History.dump")
    parser.add_argument("final_reads", help="JSON written by dump_final_reads")
    parser.add_argument("--stale-allowed", action="store_true", help="stale reads do not fail the check")
    parser.add_argument("--max-items", type=int, default=20)
    args = parser.parse_args(argv)
    report = check(History.load(args.history).ops(), load_final_reads(args.final_reads))
    print(report.render(args.max_items))
    ok = report.ok(stale_allowed=args.stale_allowed)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
