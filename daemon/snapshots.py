"""Detector snapshots: a restart resumes warm instead of relearning for a day.

A cold start would mean a day of warm-up silence (no alerts) followed by
baselines learnt from scratch; a snapshot of the detectors and the open
windows, saved periodically and at shutdown, avoids both. The file is written
atomically (temporary file, fsync, rename), so a crash mid-save leaves the
previous snapshot intact. An unreadable or incompatible snapshot is logged
and ignored: the daemon starts cold rather than not at all. Within a good
one, a detector that an upgrade changed starts cold alone, and every
detector takes the settings of the configuration it starts with
(:meth:`daemon.detect.DetectStage.restore`).

The periodic save runs in a forked child (:func:`save_aside`), as Redis's
``BGSAVE`` does: at 10,000 series the snapshot is 350 MiB, and writing it
held the event loop for 1.3 to 1.5 s, during which no bucket closed and no
alert went out. The fork takes about 10 ms; the child sees the state as
it was at that instant, copy-on-write, and writes it on the other core
while the parent goes on. The save at shutdown, with nothing left to
serve, is written in place (:func:`save`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.detect import DetectStage
from daemon.windows import Windows

log = structlog.get_logger("crisisd.snapshots")

#: The snapshot's layout: the windows, and how the detectors are grouped. A change
#: within one detector bumps that detector's ``VERSION`` instead (only it starts cold).
FORMAT = 10  # 2: detector banks per cadence; 3: severity escalation, the terms' lexicon window;
# 4: share and sentiment at three scales, records in standard deviations; 5: the hold keeps
# what an excursion said while it lasts (share and sentiment escalate by tier too); 6: share
# and sentiment learn each scale's tail rate; 7: counts tell a gap in the feed from quiet;
# 8: counts remember the level changes they adopted within the record window; 9: open
# buckets of metric series keep their rows' timestamps; 10: volume watches for falls
FILENAME = "detectors.snapshot"


def path_in(state_dir: Path) -> Path:
    """Where the snapshot lives in a state directory."""
    return state_dir / FILENAME


@dataclass
class SnapshotStats:
    """How the snapshots went since the start (``/metrics``)."""

    count: int = 0
    failed: int = 0
    last_at: float = 0.0  # wall clock of the last one saved; 0: none yet
    last_seconds: float = 0.0
    last_bytes: int = 0

    def saved(self, size: int, seconds: float) -> None:
        """Count a snapshot that reached the disk."""
        self.count += 1
        self.last_at = time.time()
        self.last_seconds = seconds
        self.last_bytes = size


class SnapshotFailed(Exception):
    """A snapshot written in the background did not reach the disk; the message says why."""


def save(path: Path, detect: DetectStage, windows: Windows, tmp: Path | None = None) -> int:
    """Write the learnt state (through ``tmp``, then renamed); the number of bytes written."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "saved_at": time.time(),
        "cadences": detect.cadences,
        "windows": windows.snapshot(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or path.with_suffix(".tmp")
    try:
        with tmp.open("wb") as fh:
            # Streamed to the file, not built as one bytes object first: at 10,000 series
            # that object was a second 350 MiB, and the save took 2.05 s against 1.3-1.5 s.
            pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            size = fh.tell()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a disk that filled up must not stay filled by the half written
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return size


async def save_aside(path: Path, detect: DetectStage, windows: Windows, timeout: float) -> int:
    """Write the learnt state from a forked child; the number of bytes written.

    The caller's state is the child's as it was at the fork: what the
    pipeline does meanwhile is not in the snapshot (the journal keeps it:
    see :meth:`daemon.journal.Journal.forget_before`). Raises
    :class:`SnapshotFailed` when the child could not write it,
    ``TimeoutError`` when it ran past ``timeout`` seconds (it is killed),
    ``OSError`` when there is no memory or process to fork; cancelling
    kills the child too. Its temporary file never replaces a good snapshot
    unless it is complete.
    """
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        raise
    if pid == 0:  # the child: write, report, and leave without running the parent's cleanup
        os.close(read)
        _write_and_exit(write, path, detect, windows, tmp)
    os.close(write)
    reader = asyncio.StreamReader()
    pipe = os.fdopen(read, "rb", 0)
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            report = (await asyncio.wait_for(reader.read(), timeout)).decode()
        finally:
            transport.close()
    except BaseException:  # a timeout, or the daemon stopping
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    finally:
        pipe.close()
        code = _reap(pid)
        if code != 0:
            with contextlib.suppress(OSError):  # (none, or where no file can be)
                tmp.unlink(missing_ok=True)
    if code != 0 or not report.isdigit():
        raise SnapshotFailed(report or f"the snapshot writer ended with exit code {code}")
    return int(report)


def _reap(pid: int) -> int | None:
    """The exit code of a child that has ended or been killed; None if it has not yet.

    Killed in the middle of a write to a hung disk, a process can take any
    time to go: after a tenth of a second a thread waits for it instead, so
    the event loop never does.
    """
    for _ in range(20):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    threading.Thread(target=os.waitpid, args=(pid, 0), name="snapshot-reaper",
                     daemon=True).start()
    return None


def _write_and_exit(report: int, path: Path, detect: DetectStage, windows: Windows,
                    tmp: Path) -> None:
    """The forked child's whole life: save, say how it went on ``report``, exit.

    The parent's signal handlers are the parent's: a stop sent to the
    service's whole cgroup ends the child at once (the parent unlinks its
    temporary file) instead of waking the parent's event loop a second time.
    """
    code, message = 1, ""
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        message = str(save(path, detect, windows, tmp))
        code = 0
    except BaseException as exc:  # everything is reported, nothing re-raised
        message = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            os.write(report, message.encode()[:4096])
        os._exit(code)


def load(path: Path, detect: DetectStage, windows: Windows) -> bool:
    """Restore a snapshot into the stages; ``False`` (and a log line) when cold."""
    if not path.is_file():
        log.info("no detector snapshot; starting cold", path=str(path))
        return False
    try:
        with path.open("rb") as fh:  # our own state file
            payload = pickle.load(fh)
        if payload.get("format") != FORMAT:
            raise ValueError(f"snapshot format {payload.get('format')}, expected {FORMAT}")
        cadences = payload["cadences"]
        rebucketed = windows.restore(payload["windows"])
        dropped = sorted(set(rebucketed) - windows.lengths())
        for length in dropped:  # no series is bucketed at that length any more
            cadences.pop(length, None)
        cold = detect.restore(cadences)
    except Exception as exc:  # a bad snapshot must never keep the daemon down
        detect.cadences.clear()
        log.warning("detector snapshot unusable; starting cold", path=str(path), error=str(exc))
        return False
    if cold:
        log.warning("detectors changed since the snapshot; these start cold", banks=cold,
                    warmup_s=detect.cfg.warmup)
    if rebucketed:
        log.warning("windows.bucket changed since the snapshot: these series start again at "
                    "the new length, and their detectors relearn", series=len(rebucketed),
                    bucket_s=windows.bucket, dropped_s=dropped, warmup_s=detect.cfg.warmup)
    log.info(
        "detectors restored warm",
        series=detect.series_count,
        age_s=round(time.time() - payload["saved_at"], 1),
    )
    return True
