"""Snapshots written by a forked child: the event loop goes on, and a crash still loses nothing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from test_detect_stage import DAY, A, B, M, N, cfg, counts, run

from daemon import metrics, service, snapshots
from daemon.clock import SimClock
from daemon.config import Config
from daemon.detect import DetectStage
from daemon.domain import Mention
from daemon.journal import Journal
from daemon.pipeline import Pipeline
from daemon.windows import Windows


def windows() -> Windows:
    return Windows(60.0, 0.0, str.split)


async def test_the_snapshot_holds_the_state_at_the_fork_not_what_came_after(tmp_path: Path):
    n = int(2 * DAY / B)
    x = {A: counts(n, 4, storm_at=int(1.7 * DAY / B)), N: counts(n, 5), M: counts(n, 6)}
    half = int(1.2 * DAY / B)
    stage, twin = DetectStage(cfg()), DetectStage(cfg())
    run(stage, [A, N], range(half), x)
    run(twin, [A, N], range(half), x)
    path = tmp_path / "detectors.snapshot"
    saving = asyncio.create_task(snapshots.save_aside(path, stage, windows(), timeout=60))
    await asyncio.sleep(0)  # the task has forked: from here the parent's state moves on
    run(stage, [A, N], range(half, half + 12), x)
    size = await saving
    assert size == path.stat().st_size > 0
    restored = DetectStage(cfg())
    assert snapshots.load(path, restored, windows())
    # the restored stage is the twin that stopped at the fork, bucket for bucket
    assert run(restored, [A, N], range(half, n), x) == run(twin, [A, N], range(half, n), x)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


async def test_a_child_that_cannot_write_reports_why_and_the_old_snapshot_stays(tmp_path: Path):
    stage = DetectStage(cfg())
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory should be")
    with pytest.raises(snapshots.SnapshotFailed, match="not-a-dir"):
        await snapshots.save_aside(blocked / "detectors.snapshot", stage, windows(), timeout=60)
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, stage, windows())
    before = path.read_bytes()
    (tmp_path / f"detectors.{os.getpid()}.tmp").mkdir()  # where its temporary file goes
    with pytest.raises(snapshots.SnapshotFailed, match="IsADirectoryError"):
        await snapshots.save_aside(path, stage, windows(), timeout=60)
    assert path.read_bytes() == before


def _stalled_save(pid_file: Path):
    """A ``snapshots.save`` that hangs (a full disk, a stuck NFS mount) after saying who it is."""

    def save(*_args: object, **_kwargs: object) -> int:
        pid_file.write_text(str(os.getpid()))
        time.sleep(120)
        return 0

    return save


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_writer_past_its_time_is_killed_and_leaves_nothing(tmp_path: Path, monkeypatch):
    pid_file = tmp_path / "writer.pid"
    monkeypatch.setattr(snapshots, "save", _stalled_save(pid_file))
    path = tmp_path / "detectors.snapshot"
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await snapshots.save_aside(path, DetectStage(cfg()), windows(), timeout=1.0)
    assert time.monotonic() - start < 10
    assert _gone(int(pid_file.read_text()))  # killed and reaped, no zombie
    assert sorted(p.name for p in tmp_path.iterdir()) == ["writer.pid"]


async def test_stopping_the_daemon_mid_snapshot_kills_the_writer(tmp_path: Path, monkeypatch):
    pid_file = tmp_path / "writer.pid"
    monkeypatch.setattr(snapshots, "save", _stalled_save(pid_file))
    saving = asyncio.create_task(
        snapshots.save_aside(tmp_path / "detectors.snapshot", DetectStage(cfg()), windows(),
                             timeout=60))
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    saving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await saving
    assert _gone(int(pid_file.read_text()))


def _mention(i: int) -> Mention:
    return Mention(f"m{i}", 1_767_225_600.0 + i, "acme", "twitter", "order late", sentiment=-0.4)


async def test_the_journal_keeps_what_arrived_while_the_child_wrote(tmp_path: Path):
    pipeline = Pipeline(Config(), SimClock())
    pipeline.journal = Journal(tmp_path / "journal.bin")
    await pipeline.feed([_mention(0), _mention(1)])
    path = tmp_path / "detectors.snapshot"
    saver = service.Snapshotter(pipeline, path)
    saving = asyncio.create_task(saver.save_aside(timeout=60))
    await asyncio.sleep(0)  # forked
    await pipeline.feed([_mention(2)])  # not in the snapshot: the journal must keep it
    await saving
    assert (saver.stats.count, saver.stats.failed) == (1, 0)
    assert saver.stats.last_bytes == path.stat().st_size
    text = metrics.render(pipeline, snapshots=saver.stats)
    assert 'crisisd_snapshots_total{outcome="saved"} 1' in text
    assert f"crisisd_journal_bytes {pipeline.journal.size}" in text
    assert "crisisd_snapshot_last_success_timestamp_seconds" in text
    assert list(pipeline.journal.replay()) == [[_mention(2)]]
    await pipeline.feed([_mention(3)])  # appends go on after the kept record
    assert list(pipeline.journal.replay()) == [[_mention(2)], [_mention(3)]]
    pipeline.close()


async def test_a_failed_snapshot_leaves_the_journal_whole(tmp_path: Path):
    pipeline = Pipeline(Config(), SimClock())
    pipeline.journal = Journal(tmp_path / "journal.bin")
    await pipeline.feed([_mention(0)])
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    saver = service.Snapshotter(pipeline, blocked / "detectors.snapshot")
    await saver.save_aside(timeout=60)
    assert list(pipeline.journal.replay()) == [[_mention(0)]]
    text = metrics.render(pipeline, snapshots=saver.stats)
    assert 'crisisd_snapshots_total{outcome="failed"} 1' in text
    assert "crisisd_snapshot_last_success_timestamp_seconds" not in text  # none yet
    pipeline.close()


async def test_a_state_pickle_refuses_fails_the_snapshot_not_the_daemon(tmp_path: Path):
    """In place (at shutdown, after a recovery) as from the child: counted, logged, no file
    left half written, and the journal keeps what the snapshot would have held."""
    pipeline = Pipeline(Config(), SimClock())
    pipeline.journal = Journal(tmp_path / "journal.bin")
    await pipeline.feed([_mention(0)])
    pipeline.detect.cadences[-1.0] = (i for i in ())  # type: ignore[assignment]  # TypeError
    saver = service.Snapshotter(pipeline, tmp_path / "detectors.snapshot")
    saver.save()
    await saver.save_aside(timeout=60)
    assert (saver.stats.count, saver.stats.failed) == (0, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.bin"]
    assert list(pipeline.journal.replay()) == [[_mention(0)]]
    pipeline.close()


async def test_a_journal_holding_only_a_torn_record_is_emptied_at_start(tmp_path: Path):
    """Batches recorded after a torn record would never be replayed: replay stops there."""
    (tmp_path / "journal.bin").write_bytes(b"\x10\x00\x00\x00partial")
    journal = Journal(tmp_path / "journal.bin")
    pipeline = Pipeline(Config(), SimClock())
    await service._recover(pipeline, journal,
                           service.Snapshotter(pipeline, tmp_path / "detectors.snapshot"))
    assert journal.size == 0 == (tmp_path / "journal.bin").stat().st_size
    await pipeline.feed([_mention(0)])
    assert list(journal.replay()) == [[_mention(0)]]
    pipeline.close()


def test_a_writer_that_will_not_die_is_left_to_a_thread_not_the_event_loop():
    """After SIGKILL a process stuck on a hung disk lingers; the loop waits a tenth of a second."""
    pid = os.fork()
    if pid == 0:  # stands in for the stuck writer: it goes only when it is ready
        time.sleep(1.0)
        os._exit(0)
    start = time.monotonic()
    assert snapshots._reap(pid) is None
    assert time.monotonic() - start < 0.5
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:  # the reaper thread collects it
        time.sleep(0.05)
    assert _gone(pid)
