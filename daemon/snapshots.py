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
"""

from __future__ import annotations

import os
import pickle
import time
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


def save(path: Path, detect: DetectStage, windows: Windows) -> int:
    """Write the learnt state; the number of bytes written."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "saved_at": time.time(),
        "cadences": detect.cadences,
        "windows": windows.snapshot(),
    }
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(data)


def load(path: Path, detect: DetectStage, windows: Windows) -> bool:
    """Restore a snapshot into the stages; ``False`` (and a log line) when cold."""
    if not path.is_file():
        log.info("no detector snapshot; starting cold", path=str(path))
        return False
    try:
        payload = pickle.loads(path.read_bytes())  # our own state file
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
