"""`make mutate`: break the README's central guarantees on purpose and check that a test notices.

Each mutation names the promise it breaks, one exact piece of source text and what it becomes,
and the tests meant to catch it. For each one, in turn, the tracked tree is copied to a scratch
folder, the text is replaced (it must occur exactly once, or the mutation is reported STALE: the
list must follow the code), and the named tests run against the copy (``PYTHONPATH`` points there,
so real-process tests start the mutated node too). A mutation is caught when those tests fail.
A baseline run of every named test on the unmutated copy comes first: a test that fails without
any mutation proves nothing.

    .venv/bin/python tests/mutate.py               # every mutation, a table at the end
    .venv/bin/python tests/mutate.py fsync fence   # only those whose name contains a word given

Exit code 0 only when every mutation is caught. Add the mutation of each new guarantee here when
the guarantee lands, and record the table in bench/RESULTS.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...] = field(default_factory=tuple)


MUTATIONS: list[Mutation] = [
    Mutation(
        "fsync-before-ack",
        "a write is acknowledged only once fsynced in the primary's WAL",
        "dakera_actors/wal/actor.py",
        "        self.log.sync()\n        return records, time.perf_counter() - started",
        "        return records, time.perf_counter() - started",
        ("tests/wal/test_ack_after_datasync.py", "tests/sim/test_crash.py", "tests/wal", "tests/store"),
    ),
    Mutation(
        "lost-copies-vouch",
        "copies lost with their disks make no takeover quorum of their own",
        "dakera_actors/replication/core.py",
        "                    if shard not in lost:",
        "                    if True:",
        ("tests/replication/test_core.py", "tests/sim/test_empty_disk.py"),
    ),
    Mutation(
        "shard-map-fence",
        "a shard map from a leader with a lower token than one known is refused",
        "dakera_actors/sharding/actor.py",
        "        if not await self.fence(offered.token):",
        "        if False:",
        ("tests/sim/test_fencing.py", "tests/sim/test_shard_map.py"),
    ),
    Mutation(
        "voter-regrants-equal-token",
        "a voter never grants a fresh lease at or below a token it has seen",
        "dakera_actors/lease/core.py",
        "        elif req.token <= max(self.highest, self.fence_floor):",
        "        elif req.token < max(self.highest, self.fence_floor):",
        ("tests/lease",),
    ),
    Mutation(
        "restart-quiet-period",
        "a restarted voter grants nothing for TTL + margin (it may have promised before dying)",
        "dakera_actors/lease/core.py",
        "        if now < self._quiet_until and candidate != self.self_id:",
        "        if False:",
        ("tests/lease",),
    ),
    Mutation(
        "prevote-skipped",
        "a candidate binds no voter before it has heard a quorum (a deaf node cannot stall elections)",
        "dakera_actors/lease/core.py",
        "                effects.extend(self._prevote(now))",
        "                effects.extend(self._campaign(now))",
        ("tests/lease", "tests/sim/test_lease.py"),
    ),
    Mutation(
        "leader-stickiness",
        "a voter that hears a live leader backs no other candidate (a healed node cannot unseat it)",
        "dakera_actors/lease/core.py",
        "        if leader is not None and leader != candidate:",
        "        if False:",
        ("tests/lease", "tests/sim/test_lease.py"),
    ),
    Mutation(
        "token-bound",
        "a token no election could produce (a jump, or past 2^31) is refused",
        "dakera_actors/lease/core.py",
        "        if 0 <= token <= MAX_TOKEN and token <= known + self.cfg.max_token_jump + self.cfg.token_rate * away:",
        "        if True:",
        ("tests/lease", "tests/sim/test_lease.py"),
    ),
    Mutation(
        "announce-fence",
        "an announcement from a leader older than one known is ignored",
        "dakera_actors/lease/core.py",
        "        effects = self._fence_persist(ann.token, now)\n        if effects is None:",
        "        effects = []\n        if effects is None:",
        ("tests/sim/test_fencing.py", "tests/lease"),
    ),
    Mutation(
        "config-commit-fence",
        "a voter-set change from a leader older than one known is refused",
        "dakera_actors/lease/core.py",
        "        effects = self._fence_persist(msg.token, now)\n        if effects is None:",
        "        effects = []\n        if effects is None:",
        ("tests/lease/test_core.py",),
    ),
    Mutation(
        "quorum-moved-shard",
        "a primary whose shard the map moved away never counts itself as a copy of a quorum write",
        "dakera_actors/replication/core.py",
        "        if shard not in self.live or self.me not in live:",
        "        if False:",
        ("tests/replication/test_core.py", "tests/sim/test_replication_history.py"),
    ),
    Mutation(
        "takeover-read-quorum",
        "a new primary goes live only after hearing from enough copies to meet every acknowledging quorum",
        "dakera_actors/replication/core.py",
        "            if any(group and len(heard[shard] & group) < takeover_quorum(mode, len(group)) for group in groups):",
        "            if False:",
        ("tests/replication/test_core.py", "tests/replication/test_sim.py"),
    ),
    Mutation(
        "ack-mode-ignored",
        "quorum/all writes wait for that many copies",
        "dakera_actors/replication/actor.py",
        "        mode = self.config.write_ack",
        '        mode = "primary"',
        ("tests/sim/test_replication_history.py",),
    ),
    Mutation(
        "mid-log-damage-cut",
        "recovery stops on damage that valid records follow instead of cutting acknowledged writes",
        "dakera_actors/wal/log.py",
        """        if self.mode != "strict":
            return
        kept_in = self._copy_aside(path, buf[offset:], f".at-{offset}" + QUARANTINE_SUFFIX, reuse=True)""",
        """        if True:
            return
        kept_in = self._copy_aside(path, buf[offset:], f".at-{offset}" + QUARANTINE_SUFFIX, reuse=True)""",
        ("tests/wal",),
    ),
    Mutation(
        "wal-crc-unchecked",
        "a WAL record whose checksum does not match is never replayed",
        "dakera_actors/wal/record.py",
        "        if crc32c(payload) != crc:\n            return _stop(records, pos, \"corrupt\", \"crc mismatch\")",
        "        if False:\n            return _stop(records, pos, \"corrupt\", \"crc mismatch\")",
        ("tests/wal",),
    ),
    Mutation(
        "snapshot-gap-accepted",
        "replay refuses a gap between the snapshot it starts from and the log",
        "dakera_actors/store/engine.py",
        "    if gaps and mode == \"strict\":",
        "    if False:",
        ("tests/wal", "tests/store"),
    ),
    Mutation(
        "replicated-record-unchecked",
        "a replicated record is validated before it is durable on the replica",
        "dakera_actors/replication/actor.py",
        "                check_replicated(record.op, record.body, dim)",
        "                pass",
        ("tests/sim/test_replication_hostile.py", "tests/store"),
    ),
    Mutation(
        "epoch-unbounded",
        "a shard-map epoch can never overflow 64 bits",
        "dakera_actors/wirebounds.py",
        "    if not (0 <= token <= TOKEN_MAX and 0 <= version <= VERSION_MAX):",
        "    if False:",
        ("tests/unit/test_wirebounds.py",),
    ),
    Mutation(
        "handler-error-kills-node",
        "one peer's frame that fails to handle closes only its own stream",
        "dakera_actors/endpoint.py",
        """                except Exception as exc:  # only this stream ends; Cancelled/KeyboardInterrupt go on
                    self._handler_failed(exc, first.tag, first.sender, raw.peer)
                    return""",
        """                except ZeroDivisionError as exc:
                    self._handler_failed(exc, first.tag, first.sender, raw.peer)
                    return""",
        ("tests/transports/test_endpoint_isolation.py",),
    ),
    Mutation(
        "unsealed-frames-accepted",
        "with a gossip key, a plain (unsealed) frame is refused",
        "dakera_actors/wire.py",
        '        raise FrameRejected("unsealed", "plain frame but a gossip key is required")',
        "        pass",
        ("tests/unit/test_wire.py", "tests/real/test_gossip_security.py"),
    ),
    Mutation(
        "replay-accepted",
        "an exact replay of a sealed frame is refused, even by a restarted receiver",
        "dakera_actors/wire.py",
        "        if nonce in self._seen:",
        "        if False:",
        ("tests/unit/test_wire.py", "tests/real/test_gossip_security.py"),
    ),
    Mutation(
        "sender-not-bound",
        "a sealed frame cannot be re-attributed to another sender",
        "dakera_actors/wire.py",
        "    if sealed is not None and sender != sealed.sender:",
        "    if False:",
        ("tests/unit/test_wire.py", "tests/real/test_gossip_security.py"),
    ),
    Mutation(
        "restore-newest-term",
        "a restore from the bucket takes the newest term's chain: a cut-off primary's uploads never win",
        "dakera_actors/cold/chain.py",
        "    for chain, members in sorted(_chains(objs).items(), reverse=True):",
        "    for chain, members in sorted(_chains(objs).items(), key=lambda kv: max(o.last for o in kv[1]), reverse=True):",
        ("tests/cold/test_cluster_sim.py", "tests/cold/test_format_chain.py"),
    ),
    Mutation(
        "restore-token-floor",
        "a cluster restored from the bucket elects above every token the archived one used",
        "dakera_actors/node.py",
        "        if floor > max(state.highest_token, state.leader_token, state.proposed_token):",
        "        if False:",
        ("tests/cold/test_cluster_sim.py",),
    ),
    Mutation(
        "restore-before-serving-empty",
        "a new primary whose copies are all empty restores the shard from the archive before serving it",
        "dakera_actors/node.py",
        "        replicator.seeder = self.seeder",
        "        replicator.seeder = None",
        ("tests/cold/test_cluster_sim.py",),
    ),
    Mutation(
        "archive-retention-keeps-reach",
        "retention never deletes what a restore still needs",
        "dakera_actors/cold/chain.py",
        "    kept = set(snapshots[:KEEP_SNAPSHOTS])",
        "    kept = set(snapshots[1:KEEP_SNAPSHOTS])",
        ("tests/cold/test_format_chain.py", "tests/cold/test_core.py"),
    ),
    Mutation(
        "pitr-window-kept",
        "retention keeps every second of the history window restorable",
        "dakera_actors/cold/chain.py",
        "            older_chains_go = False",
        "            older_chains_go = True",
        ("tests/cold/test_point_in_time.py",),
    ),
    Mutation(
        "pitr-stops-at-the-point",
        "a point-in-time restore applies no record committed after the point",
        "dakera_actors/cold/restore.py",
        "if r.ts > until), None)",
        "if r.ts > until + 3600), None)",
        ("tests/cold/test_point_in_time.py", "tests/http/test_backups.py"),
    ),
    Mutation(
        "session-through-wal",
        "a session is written through the WAL: replicated, and kept across a crash and a failover",
        "dakera_actors/store/service.py",
        '        started: Session = (await self.commit_records(shard, [(shard, "session_start", {"s": session.to_record()})], now))[0]',
        '        started: Session = self.shards.apply(0, shard, "session_start", {"s": session.to_record()})',
        ("tests/http/test_sessions_importance.py", "tests/sim/test_replication.py"),
    ),
    Mutation(
        "session-in-shard-copy",
        "a whole-shard copy carries the shard's sessions",
        "dakera_actors/store/owner.py",
        "for part, _size in cut_by_bytes(msg.sessions, budget) if part)",
        "for part, _size in cut_by_bytes(msg.sessions, budget) if part and False)",
        ("tests/sim/test_replication.py::test_a_replica_beyond_the_tail_gets_a_whole_copy_then_the_log",),
    ),
]


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():
            continue  # deleted in the work tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _pytest(tree: Path, tests: tuple[str, ...], log: Path) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc.returncode, time.monotonic() - started


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or any(word in m.name for word in argv)]
    logs = Path(tempfile.mkdtemp(prefix="dakera-mutate-logs-"))
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="dakera-mutate-") as scratch:
        tree = Path(scratch) / "tree"
        _copy_tree(tree)
        all_tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, seconds = _pytest(tree, all_tests, logs / "baseline.log")
        print(f"baseline: {'pass' if code == 0 else 'FAIL'} in {seconds:.0f}s ({len(all_tests)} test paths)", flush=True)
        if code != 0:
            print(f"the named tests fail without any mutation: see {logs / 'baseline.log'}")
            return 1
        for m in chosen:
            target = tree / m.path
            original = target.read_text()
            count = original.count(m.old)
            if count != 1:
                rows.append((m.name, m.promise, f"STALE ({count} matches)", "-"))
                print(f"{m.name}: STALE, the text occurs {count} times in {m.path}", flush=True)
                continue
            target.write_text(original.replace(m.old, m.new))
            try:
                code, seconds = _pytest(tree, m.tests, logs / f"{m.name}.log")
            finally:
                target.write_text(original)
            # pytest exit codes: 1 = tests failed (caught); 0 = all passed (missed); others = broken run
            verdict = {0: "MISSED", 1: "caught"}.get(code, f"ERROR (pytest exit {code})")
            rows.append((m.name, m.promise, verdict, f"{seconds:.0f}s"))
            print(f"{m.name}: {verdict} in {seconds:.0f}s", flush=True)
    print()
    print("| mutation | promise broken | result | time |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nlogs: {logs}")
    return 0 if all(r[2] == "caught" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
