"""Score files in the layout NAB's scorer reads, for measuring detection quality.

``crisisd replay --scores DIR`` writes ``DIR/<signal>/<series>.csv`` with
``timestamp,value,anomaly_score,alert``: one row per closed bucket in time
order, the detector's calibrated score, and whether it alerted. A series fed
by upstream metrics (a CSV file's rows, metric objects) gets one row per
upstream point instead, at the point's own timestamp, so a CSV's scores line
up with its data row for row (NAB's scorer requires it): a bucket no point
came in (a gap in a sensor's file) has no row, and two points that shared a
bucket share its score, the alert on the first. A CSV series of values that
are not whole counts is replayed in a unit of its own
(``sources.replay.unit_of``); its ``value`` column is in the file's terms
again.
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

    def __init__(self, directory: Path, units: dict[str, float] | None = None) -> None:
        self.directory = directory
        self.units = {} if units is None else units  # read as the replay fills it in
        self._rows: dict[tuple[str, str], list[tuple[str, str, str, int]]] = defaultdict(list)

    def __call__(
        self, series: SeriesKey, signal: str, bucket: Bucket, value: float, score: float,
        alert: bool,
    ) -> None:
        """Record one scored bucket (the detect stage's score sink)."""
        slug = series.slug
        rows = self._rows[(signal, slug)]
        if signal == "volume" and slug in self.units:
            value *= self.units[slug]
        shown, said = f"{value:.6g}", f"{score:.6f}"
        if not bucket.aggregated:
            rows.append((_stamp(bucket.start), shown, said, int(alert)))
            return
        for i, ts in enumerate(bucket.stamps or ()):
            rows.append((_stamp(ts), shown, said, int(alert and i == 0)))

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
