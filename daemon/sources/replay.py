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
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import structlog

from daemon.decode import (
    BAD_TIMESTAMP,
    MISSING_FIELD,
    OUT_OF_RANGE,
    WRONG_TYPE,
    Decoder,
    is_series_name,
)
from daemon.domain import Event, MetricPoint
from daemon.sources import SourceItem

log = structlog.get_logger(__name__)


class ReplayError(Exception):
    """A replay input that cannot be read at all (missing, unknown layout)."""


@functools.lru_cache(maxsize=65536)
def _csv_time(text: str) -> float:
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_csv(path: Path, decoder: Decoder,
             units: dict[str, float] | None = None) -> Iterator[MetricPoint]:
    """Rows of a ``timestamp,value`` file as metric points of one series.

    A value is a count of mentions: a row whose timestamp does not parse, or
    whose value is not a finite number, is counted and logged by the decoder
    (as a JSON line would be) and skipped. A file of numbers that are not
    whole counts (a cost per click of 0.05 to 0.2, a CPU's load) is replayed
    in a unit of its own, :func:`unit_of`, recorded in ``units`` under the
    series' name and logged: rounded to whole counts as they were, such
    values were all zeros and the series was dead to the detector. Negative
    values count as 0, and are logged too. Rows out of time order are
    sorted (and that is logged): merged into the stream as they stood, an
    earlier row after a later one was dropped as late.

    The file's name is the series': ``acme@twitter.csv`` is brand ``acme``
    on channel ``twitter`` (the name its score file gets back), so a backtest
    of exported counts runs the playbooks that match that channel and posts
    where they would; ``Twitter_volume_AAPL.csv`` is a brand of no channel.
    """
    brand, at, channel = path.stem.partition("@")
    if not is_series_name(brand) or "@" in channel or (at and not is_series_name(channel)):
        raise ReplayError(f"{path}: a CSV is named after its series, 'brand.csv' or "
                          f"'brand@channel.csv', without '+' or '#'")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ["timestamp", "value"]:
            raise ReplayError(f"{path}: expected a 'timestamp,value' header, got {header}")
        rows = [row for row in (_csv_row(path, line, r, decoder)
                                for line, r in enumerate(reader, start=2) if r) if row]
    if not rows:
        return
    if any(b[0] < a[0] for a, b in itertools.pairwise(rows)):
        rows.sort(key=lambda row: row[0])  # stable: rows of one timestamp keep their order
        log.warning("replay_rows_sorted", file=str(path),
                    why="rows out of time order are replayed in time order")
    spacings = sorted(b[0] - a[0] for a, b in itertools.pairwise(rows[:1000]))
    interval = spacings[len(spacings) // 2] if spacings else 60.0
    unit = 1.0
    if any(not v.is_integer() for _, v, _ in rows):
        unit = unit_of([v for _, v, _ in rows[:UNIT_ROWS]])
        if units is not None:
            units[path.stem] = unit  # the series' slug
        log.warning("replay_values_scaled", file=str(path), unit=unit,
                    why="the values are not whole counts: replayed as multiples of the unit")
    below = next(((line, v) for _, v, line in rows if v < 0.0), None)
    if below is not None:
        log.warning("replay_values_clipped", file=str(path), line=below[0], value=below[1],
                    why="a value is a count of mentions: a negative one is replayed as 0")
    for ts, value, _ in rows:
        yield MetricPoint(ts=ts, brand=brand, channel=channel, volume=max(0, round(value / unit)),
                          interval=interval)


#: Rows a file's unit is chosen on (as its spacing is): the start of the file, not its end.
UNIT_ROWS = 1000


def unit_of(values: list[float]) -> float:
    """The power of ten that puts the median of the positive ``values`` at 1,000 to 9,999.

    Why: the count detector's noise is a negative binomial, Poisson at low
    counts and proportional to the level (a learnt coefficient of variation
    of at least 14 %) at high ones. A measurement has no Poisson part: in
    thousandths of its usual magnitude its counts are high enough for the
    proportional part to rule, and three significant digits are kept. The
    unit is chosen on the file's first rows only, as a live series would
    have to.

    >>> unit_of([0.0812, 0.0990, 0.0653])
    1e-05
    >>> unit_of([0.0, 0.0])
    1.0
    """
    positive = sorted(v for v in values if v > 0.0)
    if not positive:
        return 1.0
    return 10.0 ** (math.floor(math.log10(positive[len(positive) // 2])) - 3)


def _csv_row(path: Path, line: int, row: list[str],
             decoder: Decoder) -> tuple[float, float, int] | None:
    """(time, value, line) of one CSV row, or None after counting why it is bad."""
    where = f"{path.name}:{line}"
    if len(row) < 2:
        decoder.count_row(MISSING_FIELD, f"{where}: expected timestamp,value", _raw(row))
        return None
    try:
        ts = _csv_time(row[0])
    except ValueError:
        decoder.count_row(BAD_TIMESTAMP, f"{where}: {row[0]!r} is not a timestamp", _raw(row))
        return None
    try:
        value = float(row[1])
    except ValueError:
        decoder.count_row(WRONG_TYPE, f"{where}: {row[1]!r} is not a number", _raw(row))
        return None
    if not math.isfinite(value):
        decoder.count_row(OUT_OF_RANGE, f"{where}: {row[1]!r} is not a count", _raw(row))
        return None
    decoder.count_row(None)
    return ts, value, line


def _raw(row: list[str]) -> bytes:
    return ",".join(row).encode()


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
        #: per CSV series of values that are not whole counts, the unit they replay in
        self.units: dict[str, float] = {}

    def _events(self) -> Iterator[Event]:
        streams = [
            read_csv(p, self.decoder, self.units) if p.suffix.lower() == ".csv"
            else read_jsonl(p, self.decoder)
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
