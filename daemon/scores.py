"""Score files in the layout NAB's scorer reads, for measuring detection quality.

``crisisd replay --scores DIR`` writes ``DIR/<signal>/<series>.csv`` with
``timestamp,value,anomaly_score,alert``: one row per closed bucket in time
order, the detector's calibrated score, and whether it alerted.
"""

from __future__ import annotations

import csv
import functools
import time
from collections import defaultdict
from pathlib import Path

from daemon.domain import Bucket, SeriesKey

HEADER = ("timestamp", "value", "anomaly_score", "alert")


@functools.lru_cache(maxsize=4096)
def _stamp(ts: float) -> str:
    """NAB's timestamp format; cached, as every series of a tick shares its start."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


class ScoreWriter:
    """Collects every scored bucket and writes one CSV per series and signal."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._rows: dict[tuple[str, str], list[tuple[str, str, str, int]]] = defaultdict(list)

    def __call__(
        self, series: SeriesKey, signal: str, bucket: Bucket, value: float, score: float,
        alert: bool,
    ) -> None:
        """Record one scored bucket (the detect stage's score sink)."""
        stamp = _stamp(bucket.start)
        self._rows[(signal, series.slug)].append(
            (stamp, f"{value:.6g}", f"{score:.6f}", int(alert))
        )

    def close(self) -> list[Path]:
        """Write the files; the paths written."""
        written = []
        for (signal, slug), rows in sorted(self._rows.items()):
            folder = self.directory / signal
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{slug}.csv"
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(HEADER)
                writer.writerows(rows)
            written.append(path)
        return written
