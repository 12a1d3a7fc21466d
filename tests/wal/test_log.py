"""The segmented log: appends replay exactly, and recovery survives any torn or damaged tail."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dakera_actors.wal import (
    WalCorruptError,
    WalFailedError,
    WalRecord,
    WalRecoveryError,
    WriteAheadLog,
    encode_record,
)
from dakera_actors.wal import log as log_mod

SEGMENT = 256  # tiny segments: a few records each, so every test crosses rolls


def entry(i: int, size: int = 0) -> tuple[int, str, Any, float]:
    return (i % 4, "put" if i % 3 else "delete", {"k": f"key-{i}", "v": "é" * size, "i": i}, 1000.0 + i)


def fill(wal: WriteAheadLog, n: int, *, batch: int = 3, size: int = 10) -> list[WalRecord]:
    out: list[WalRecord] = []
    for start in range(0, n, batch):
        out += wal.append([entry(i, size) for i in range(start, min(n, start + batch))])
    wal.sync()
    return out


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def boundaries(records: list[WalRecord]) -> list[int]:
    """Byte offsets where each record of one segment ends, starting with 0."""
    ends = [0]
    for r in records:
        ends.append(ends[-1] + len(encode_record(r)))
    return ends


def fresh_dir() -> tempfile.TemporaryDirectory[str]:
    """A fresh directory per hypothesis example (tmp_path is per test, not per example)."""
    return tempfile.TemporaryDirectory()


# -- round trips ---------------------------------------------------------------------------------


def test_append_assigns_consecutive_lsns_and_replays_them(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "wal", segment_bytes=SEGMENT) as wal:
        assert wal.last_lsn == 0 and list(wal.replay()) == [] and wal.segments() == []
        written = fill(wal, 40)
        assert [r.lsn for r in written] == list(range(1, 41)) and wal.last_lsn == 40
        assert list(wal.replay()) == written
        assert len(wal.segments()) > 3 and wal.sealed_segments() == wal.segments()[:-1]


def test_bodies_survive_bytes_unicode_and_size(tmp_path: Path) -> None:
    bodies = [{"vector": bytes(range(256)) * 64}, "記憶 ✓ émoji 🧠", None, [1, 2.5, b"\x00"],
              {"big": b"\xab" * 200_000}]
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = wal.append([(7, "put", b, 1.5) for b in bodies])
        wal.sync()
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        replayed = list(wal.replay())
    assert replayed == written and [r.body for r in replayed] == bodies


def test_segments_are_named_by_first_lsn_and_roll_at_the_size(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        fill(wal, 30, batch=7)
        infos = wal.segments()
    assert [p.name for p in segment_files(tmp_path)] == [s.path.name for s in infos]
    for info, following in zip(infos, infos[1:], strict=False):
        assert info.path.name == f"{info.first_lsn:020d}.wal" and info.last_lsn == following.first_lsn - 1
        assert info.size == info.path.stat().st_size >= SEGMENT  # sealed only once full
        last_frame = len(encode_record(WalRecord(info.last_lsn, *entry(info.last_lsn - 1, 10))))
        assert info.size - last_frame < SEGMENT  # and not a record later
    assert infos[0].first_lsn == 1 and infos[-1].last_lsn == 30


def test_one_record_larger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        wal.append([entry(0), (0, "put", b"x" * 5000, 0.0), entry(2)])
        assert [(s.first_lsn, s.last_lsn) for s in wal.segments()] == [(1, 2), (3, 3)]


def test_reopen_continues_the_lsns(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        first = fill(wal, 25)
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        assert wal.recovery.clean and wal.recovery.records_recovered == 25 and wal.last_lsn == 25
        second = wal.append([entry(25)])
        assert second[0].lsn == 26 and list(wal.replay()) == first + second


def test_missing_directory_is_created(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "a" / "b" / "wal") as wal:
        assert wal.append([entry(0)])[0].lsn == 1
    assert segment_files(tmp_path / "a" / "b" / "wal")[0].name == "00000000000000000001.wal"


def test_replay_after_lsn_skips_whole_segments(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = fill(wal, 40)
        for after in (0, 1, 5, 17, 39, 40, 100):
            assert list(wal.replay(after_lsn=after)) == written[after:]
        # damage the first segment behind the log's back: only a replay that reads it notices
        first = wal.segments()[0]
        with open(first.path, "r+b") as f:
            f.write(b"\x00")
        with pytest.raises(WalCorruptError):
            list(wal.replay())
        assert list(wal.replay(after_lsn=first.last_lsn)) == written[first.last_lsn :]


def test_replay_stops_at_the_last_lsn_of_its_call(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = fill(wal, 5)
        replay = wal.replay()
        wal.append([entry(5)])
        assert list(replay) == written


def test_truncate_before_deletes_only_fully_covered_sealed_segments(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = fill(wal, 40)
        segs = wal.segments()
        assert wal.truncate_before(segs[1].first_lsn - 1) == 0  # the first still holds that lsn
        assert wal.truncate_before(segs[1].first_lsn) == 1
        assert wal.segments() == segs[1:] and not segs[0].path.exists()
        assert wal.truncate_before(segs[3].last_lsn) == 2  # segs[3] still holds its last lsn
        assert wal.truncate_before(10**9) == len(segs) - 4  # never the active segment
        assert wal.segments() == segs[-1:]
        assert list(wal.replay()) == written[segs[-1].first_lsn - 1 :]
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        assert wal.recovery.clean and wal.last_lsn == 40 and wal.append([entry(40)])[0].lsn == 41


def test_truncate_before_handles_segments_not_yet_synced(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        wal.append([entry(i) for i in range(30)])  # rolls several times, no sync
        assert wal.truncate_before(25) >= 2
        wal.sync()
        assert [r.lsn for r in wal.replay()][-1] == 30


def test_an_unencodable_entry_leaves_the_log_untouched(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        wal.append([entry(0)])
        with pytest.raises((TypeError, ValueError)):
            wal.append([entry(1), (0, "put", {(1, 2): "tuple key"}, 0.0)])
        with pytest.raises(TypeError):
            wal.append([(0, "put", object(), 0.0)])
        assert wal.last_lsn == 1 and wal.append([entry(1)])[0].lsn == 2
        assert [r.lsn for r in wal.replay()] == [1, 2]


def test_an_os_error_while_appending_fails_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wal = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT)
    fill(wal, 5)

    def disk_full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log_mod, "_write_all", disk_full)
    with pytest.raises(OSError):
        wal.append([entry(5, size=50)])
    monkeypatch.undo()
    for call in (lambda: wal.append([entry(5)]), wal.sync, lambda: list(wal.replay())):
        with pytest.raises(WalFailedError):
            call()
    wal.close()
    with pytest.raises(WalFailedError):
        wal.sync()
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as reopened:  # recovery cuts the half record
        assert reopened.last_lsn == 5 and reopened.recovery.reason == "torn"


def test_empty_append_is_a_no_op(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.append([]) == [] and wal.segments() == []


# -- recovery from torn tails --------------------------------------------------------------------


def check_cut(directory: Path, written: list[WalRecord], cut: int, *, append_after: bool) -> None:
    """Cut the last segment at ``cut`` bytes and check what a reopen recovers."""
    last = segment_files(directory)[-1]
    first_lsn = int(last.name[:20])
    tail = [r for r in written if r.lsn >= first_lsn]
    ends = boundaries(tail)
    whole = max(e for e in ends if e <= cut)
    os.truncate(last, cut)
    expected = written[: first_lsn - 1 + ends.index(whole)]
    with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
        report = wal.recovery
        assert list(wal.replay()) == expected
        assert wal.last_lsn == report.last_lsn == (expected[-1].lsn if expected else 0)
        assert report.bytes_truncated == cut - whole and last.stat().st_size == whole
        assert report.clean == (cut == whole) and report.reason == ("eof" if cut == whole else "torn")
        if append_after:
            more = wal.append([entry(1000), entry(1001, size=300)])
            assert [r.lsn for r in more] == [wal.last_lsn - 1, wal.last_lsn]
            expected = expected + more
    if append_after:
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
            assert wal.recovery.clean and list(wal.replay()) == expected


def test_a_cut_at_every_byte_of_the_last_segment_recovers_the_whole_records(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path / "src", segment_bytes=SEGMENT) as wal:
        written = fill(wal, 12)
    src = segment_files(tmp_path / "src")
    size = src[-1].stat().st_size
    for cut in range(size + 1):
        work = tmp_path / f"cut-{cut}"
        work.mkdir()
        for path in src:
            (work / path.name).write_bytes(path.read_bytes())
        check_cut(work, written, cut, append_after=False)


@settings(max_examples=40)
@given(n=st.integers(1, 30), size=st.integers(0, 60), cut_fraction=st.floats(0, 1), batch=st.integers(1, 8))
def test_any_torn_tail_recovers_and_the_log_goes_on(n: int, size: int, cut_fraction: float, batch: int) -> None:
    with fresh_dir() as d:
        directory = Path(d)
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
            written = fill(wal, n, batch=batch, size=size)
        cut = int(segment_files(directory)[-1].stat().st_size * cut_fraction)
        check_cut(directory, written, cut, append_after=True)


def test_a_torn_tail_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        fill(wal, 3)
    last = segment_files(tmp_path)[-1]
    os.truncate(last, last.stat().st_size - 2)
    with caplog.at_level(logging.WARNING, logger="dakera_actors.wal"):
        WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT).close()
    [line] = [r for r in caplog.records if r.getMessage() == "wal_tail_truncated"]
    assert vars(line)["segment"] == last.name and vars(line)["reason"] == "torn"
    assert vars(line)["offset"] == last.stat().st_size and vars(line)["bytes"] > 0


@pytest.mark.parametrize(("tail", "reason"), [
    (b"garbage after the last record", "corrupt"),
    (b"\x00" * 4096, "torn"),  # a preallocated, never written block
    (b"\xda\x00\x00\x00", "torn"),
])
def test_junk_after_the_last_record_is_cut(tmp_path: Path, tail: bytes, reason: str) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = fill(wal, 10)
    last = segment_files(tmp_path)[-1]
    with open(last, "ab") as f:
        f.write(tail)
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        assert wal.recovery.reason == reason and wal.recovery.bytes_truncated == len(tail)
        assert list(wal.replay()) == written and len(wal.recovery.problems) == 1
        written += wal.append([entry(10)])
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        assert wal.recovery.clean and list(wal.replay()) == written


def test_an_empty_last_segment_keeps_its_place_in_the_lsns(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = fill(wal, 10)
    (tmp_path / f"{11:020d}.wal").touch()  # a crash right after a roll
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        assert wal.recovery.clean and wal.last_lsn == 10
        written += wal.append([entry(10)])
        assert wal.segments()[-1].first_lsn == 11 and wal.segments()[-1].size > 0
        assert list(wal.replay()) == written


def test_a_lone_empty_segment_or_a_torn_first_record_keeps_the_next_lsn(tmp_path: Path) -> None:
    (tmp_path / f"{500:020d}.wal").touch()
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.last_lsn == 499 and wal.recovery.clean
        wal.append([entry(0, size=100)])
    path = segment_files(tmp_path)[0]
    os.truncate(path, 20)
    with WriteAheadLog.open(tmp_path) as wal:  # the only record is torn: lsn 500 is reissued, not 1
        assert wal.last_lsn == 499 and wal.recovery.reason == "torn"
        assert wal.append([entry(0)])[0].lsn == 500


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    for name in ("README", "1.wal", "00000000000000000000.wal", "00000000000000000001.wal.corrupt"):
        (tmp_path / name).write_bytes(b"not a segment")
    with WriteAheadLog.open(tmp_path) as wal:
        assert wal.recovery.clean and wal.last_lsn == 0


# -- recovery from damage ------------------------------------------------------------------------


def flip(path: Path, offset: int, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


@settings(max_examples=60)
@given(n=st.integers(1, 25), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_bit_flip_in_the_last_segment_stops_recovery_unless_it_is_the_last_record(
        n: int, where: float, bit: int) -> None:
    with fresh_dir() as d:
        directory = Path(d)
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
            written = fill(wal, n)
        last = segment_files(directory)[-1]
        first_lsn = int(last.name[:20])
        ends = boundaries([r for r in written if r.lsn >= first_lsn])
        offset = int(last.stat().st_size * where)
        flip(last, offset, bit)
        damaged = max(i for i, e in enumerate(ends) if e <= offset)  # index of the damaged record
        expected = written[: first_lsn - 1 + damaged]
        if damaged < len(ends) - 2:  # valid records follow: not a torn tail
            before = last.read_bytes()
            with pytest.raises(WalRecoveryError, match=f"{last.name} is damaged at offset {ends[damaged]}"):
                WriteAheadLog.open(directory, segment_bytes=SEGMENT)
            assert last.read_bytes() == before  # nothing cut
            copy = directory / f"{last.name}.at-{ends[damaged]}.corrupt"
            assert copy.read_bytes() == before[ends[damaged]:]
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT, recovery="truncate") as wal:
            assert list(wal.replay()) == expected
            assert wal.recovery.reason in ("torn", "corrupt") and len(wal.recovery.problems) == 1
            assert wal.recovery.bytes_truncated == ends[-1] - ends[damaged]
            assert wal.recovery.records_dropped == len(ends) - 2 - damaged
            assert (directory / f"{last.name}.tail.corrupt").stat().st_size == ends[-1] - ends[damaged]
            expected += wal.append([entry(99)])
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
            assert wal.recovery.clean and list(wal.replay()) == expected


@settings(max_examples=40)
@given(n=st.integers(12, 40), which=st.floats(0, 1, exclude_max=True),
       where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_bit_flip_in_a_sealed_segment_stops_recovery_or_quarantines_everything_after_it(
        n: int, which: float, where: float, bit: int) -> None:
    with fresh_dir() as d:
        directory = Path(d)
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
            written = fill(wal, n)
            sealed = wal.sealed_segments()
        assert len(sealed) >= 2
        target = sealed[int(len(sealed) * which)]
        later = [p for p in segment_files(directory) if p.name > target.path.name]
        ends = boundaries(written[target.first_lsn - 1 : target.last_lsn])
        offset = int(target.size * where)
        flip(target.path, offset, bit)
        damaged = max(i for i, e in enumerate(ends) if e <= offset)
        expected = written[: target.first_lsn - 1 + damaged]
        files = {p: p.read_bytes() for p in segment_files(directory)}
        with pytest.raises(WalRecoveryError, match=f"{target.path.name} is damaged at offset {ends[damaged]}"):
            WriteAheadLog.open(directory, segment_bytes=SEGMENT)
        assert {p: p.read_bytes() for p in segment_files(directory)} == files  # nothing cut or moved
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT, recovery="truncate") as wal:
            report = wal.recovery
            assert list(wal.replay()) == expected and wal.last_lsn == target.first_lsn - 1 + damaged
            assert report.reason in ("torn", "corrupt") and report.bytes_truncated == target.size - ends[damaged]
            assert report.records_dropped == len(written) - len(expected) - 1
            assert [p.name for p in report.quarantined] == [p.name + ".corrupt" for p in later]
            assert all(p.exists() for p in report.quarantined) and not any(p.exists() for p in later)
            assert (directory / (target.path.name + ".tail.corrupt")).stat().st_size == report.bytes_truncated
            assert len(report.problems) == 1 + len(later)
            expected += fill(wal, 10)
        with WriteAheadLog.open(directory, segment_bytes=SEGMENT) as wal:
            assert wal.recovery.clean and list(wal.replay()) == expected


def test_a_missing_middle_segment_stops_recovery_or_quarantines_the_rest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
        written = fill(wal, 30)
        segs = wal.segments()
    segs[1].path.unlink()
    with pytest.raises(WalRecoveryError, match=f"{segs[2].path.name} starts at lsn {segs[2].first_lsn} where "
                                               f"{segs[1].first_lsn} was due"):
        WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT)
    assert all(s.path.exists() for s in segs if s is not segs[1])
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="dakera_actors.wal"):
        wal = WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT, recovery="truncate")
    with wal:
        assert wal.recovery.reason == "gap" and list(wal.replay()) == written[: segs[0].last_lsn]
        assert len(wal.recovery.quarantined) == len(segs) - 2
    events = [r.getMessage() for r in caplog.records]
    assert events.count("wal_segment_gap") == 1 and events.count("wal_segment_quarantined") == len(segs) - 2


def test_quarantine_never_overwrites_earlier_evidence(tmp_path: Path) -> None:
    for _round in range(2):
        with WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT) as wal:
            wal.truncate_before(10**9)
            fill(wal, 20)
            segs = wal.segments()
        flip(segs[0].path, 3, 0)
        WriteAheadLog.open(tmp_path, segment_bytes=SEGMENT, recovery="truncate").close()
    assert len(list(tmp_path.glob("*.corrupt*"))) > len(segs)
