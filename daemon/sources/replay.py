"""The replay source: files in, the same event batches the MQTT source yields.

Inputs are merged on event time, so several files replay as one stream as if
they had arrived live (a file after another would be all late). Two layouts:

* JSON lines: mention objects (``id``, ``ts``, ``text``, …) or metric objects
  (with ``volume``), each with ``brand`` and ``channel`` fields; validated by
  the same ``Decoder`` as MQTT payloads, so a bad line is counted and skipped.
* CSV with header ``timestamp,value`` (the Numenta Anomaly Benchmark layout):
  one series per file, named after the file; each row is one bucket whose
  length is the file's own spacing.
"""

from __future__ import annotations

import csv
import functools
import heapq
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

from daemon.decode import Decoder
from daemon.domain import Event, MetricPoint
from daemon.sources import SourceItem


class ReplayError(Exception):
    """A replay input that cannot be read at all (missing, unknown layout)."""


@functools.lru_cache(maxsize=65536)
def _csv_time(text: str) -> float:
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_csv(path: Path) -> Iterator[MetricPoint]:
    """Rows of a ``timestamp,value`` file as metric points of one series."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ["timestamp", "value"]:
            raise ReplayError(f"{path}: expected a 'timestamp,value' header, got {header}")
        rows = [(_csv_time(r[0]), float(r[1])) for r in reader if r]
    if not rows:
        return
    spacings = sorted(b[0] - a[0] for a, b in itertools.pairwise(rows[:1000]))
    interval = spacings[len(spacings) // 2] if spacings else 60.0
    brand = path.stem
    for ts, value in rows:
        yield MetricPoint(
            ts=ts, brand=brand, channel="", volume=max(0, round(value)), interval=interval
        )


def read_jsonl(path: Path, decoder: Decoder) -> Iterator[Event]:
    """Valid events of a JSON-lines file; invalid lines are counted by the decoder."""
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                event = decoder.decode_line(line)
                if event is not None:
                    yield event


class ReplaySource:
    """Replays files through the pipeline as fast as the CPU allows."""

    def __init__(self, paths: list[Path], decoder: Decoder, batch: int = 1000) -> None:
        for path in paths:
            if not path.is_file():
                raise ReplayError(f"{path}: no such file")
            if path.suffix.lower() not in (".csv", ".jsonl", ".json", ".ndjson"):
                raise ReplayError(f"{path}: expected a .csv or .jsonl file")
        self.paths = paths
        self.decoder = decoder
        self.batch = batch

    def _events(self) -> Iterator[Event]:
        streams = [
            read_csv(p) if p.suffix.lower() == ".csv" else read_jsonl(p, self.decoder)
            for p in self.paths
        ]
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda e: e.ts)

    async def stream(self) -> AsyncIterator[SourceItem]:
        """Yield the merged events in batches."""
        events = self._events()
        while batch := list(itertools.islice(events, self.batch)):
            yield batch
