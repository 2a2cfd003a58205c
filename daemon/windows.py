"""Event-time windows: mentions and metric points into closed per-series buckets.

A bucket closes when the watermark — the latest event time seen minus the
allowed lateness — passes its end; never on the wall clock, so replay and
live produce the same buckets. An event whose bucket has already closed is
late: counted and dropped; a redelivered duplicate is counted and ignored.
Silence is data: every bucket between a series'
first event and the watermark is emitted, with volume 0 when nothing came
(a series of its own spacing, a file, up to its last row only: a file that
ends before the others of its replay is over, not quiet for as long as they
go on; NAB's files span 2011 to 2015).

Buckets are aligned to the epoch for mention series. A metric series that
states its own spacing (a CSV file) is aligned to the first timestamp of the
first such series of that spacing instead, and a point goes to the bucket
whose start is nearest its timestamp, so each upstream point is one bucket
even when the timestamps jitter (a sensor's row three minutes after the last,
in a file of five-minute rows, is the next bucket's, not a second value in
the last one's); the bucket keeps the point's own timestamp in ``stamps``.
Files of one spacing thus share bucket ends, and their buckets are scored
together as one tick: with a grid of its own each, every file ticked alone,
and ten files whose rows were seconds apart replayed five times slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from daemon.domain import Bucket, Mention, MetricPoint, Sample, SeriesKey

log = structlog.get_logger("crisisd.windows")

NEGATIVE = -0.05
POSITIVE = 0.05
"""VADER's convention: compound ≤ −0.05 is negative, ≥ 0.05 positive."""


@dataclass(slots=True)
class _Series:
    key: SeriesKey
    length: float
    offset: float
    next_start: float
    open: dict[float, Bucket] = field(default_factory=dict)
    ids: dict[float, set[str]] = field(default_factory=dict)
    aggregated: bool = False  # fed by metric points, not mentions
    own_spacing: bool = False  # a file's series: a row per bucket, at its own timestamps
    negative_known: bool = True
    emitted: bool = False
    last_end: float = -math.inf  # end of the latest point's bucket (metric series)


@dataclass(slots=True)
class WindowStats:
    """Counters the metrics endpoint and the tests read."""

    late: int = 0
    closed: int = 0
    duplicates: int = 0
    refused: int = 0  # events of a new series past max_series


class Windows:
    """Buckets events per series on event time and closes them on the watermark.

    >>> w = Windows(bucket=60, lateness=0, extract_terms=str.split)
    >>> m = Mention(id="1", ts=30.0, brand="acme", channel="x", text="recall now")
    >>> w.add(m)
    True
    >>> [b.volume for b in w.advance(125.0)]
    [1, 0]
    """

    def __init__(
        self,
        bucket: float,
        lateness: float,
        extract_terms: Callable[[str], list[str]],
        samples: int = 3,
        max_series: int | None = None,
    ) -> None:
        self.bucket = bucket
        self.lateness = lateness
        self.samples = samples
        self.max_series = max_series
        self._extract = extract_terms
        self._series: dict[SeriesKey, _Series] = {}
        self._phases: dict[float, float] = {}  # own spacing -> the offset its series share
        self.max_event_time = -math.inf
        self.watermark = -math.inf
        self.stats = WindowStats()

    @property
    def series_count(self) -> int:
        """Number of series seen so far."""
        return len(self._series)

    def _state(self, key: SeriesKey, ts: float, interval: float | None,
               aggregated: bool) -> _Series | None:
        """The series' state, made on its first event; None (refused) past ``max_series``."""
        state = self._series.get(key)
        if state is None:
            if self.max_series is not None and len(self._series) >= self.max_series:
                self._refuse(key)
                return None
            length = interval or self.bucket
            if interval:  # the nearest bucket of the spacing's grid, as _bucket takes it
                offset = self._phases.setdefault(length, ts % length)
                start = offset + round((ts - offset) / length) * length
            else:
                offset = 0.0
                start = math.floor(ts / length) * length
            state = _Series(key, length, offset, start, aggregated=aggregated,
                            own_spacing=interval is not None)
            self._series[key] = state
        return state

    def _refuse(self, key: SeriesKey) -> None:
        """Count an event of a series past ``max_series``; say so at the 1st, 10th, 100th…

        Every series costs memory for the daemon's life (its silence is
        data), so a producer publishing to made-up topics must not add
        them without end; the series already watched go on.
        """
        self.stats.refused += 1
        n = self.stats.refused
        if n == 10 ** (len(str(n)) - 1):
            log.warning("series limit reached: events of new series are dropped",
                        series=str(key), refused=n, max_series=self.max_series,
                        fix="raise windows.max_series, or fix the producer's topics")

    def _bucket(self, state: _Series, ts: float) -> Bucket | None:
        at = (ts - state.offset) / state.length
        start = state.offset + (round(at) if state.own_spacing else math.floor(at)) * state.length
        if start < state.next_start:
            if state.emitted or start + state.length <= self.watermark:
                self.stats.late += 1
                return None
            state.next_start = start  # an early straggler of a brand-new series
        bucket = state.open.get(start)
        if bucket is None:
            bucket = Bucket(state.key, start, start + state.length)
            state.open[start] = bucket
        if ts > self.max_event_time:
            self.max_event_time = ts
        return bucket

    def add(self, event: Mention | MetricPoint) -> bool:
        """Put one event in its bucket; ``False`` when it is dropped (late, or refused)."""
        if isinstance(event, Mention):
            return self.add_mention(event)
        return self.add_metric(event)

    def add_mention(self, m: Mention) -> bool:
        """Count a mention: volume, tone, reach, terms and evidence samples.

        A mention already counted (same id in its bucket) is ignored: QoS 1
        redelivers after a broken connection, and a mention's bucket follows
        from its own timestamp, so its duplicate always lands in the same one.
        """
        key = SeriesKey(m.brand, m.channel)
        state = self._state(key, m.ts, None, aggregated=False)
        if state is None:
            return False
        bucket = self._bucket(state, m.ts)
        if bucket is None:
            return False
        seen = state.ids.setdefault(bucket.start, set())
        if m.id in seen:
            self.stats.duplicates += 1
            return True
        seen.add(m.id)
        bucket.volume += 1
        s = m.sentiment
        if s is not None:
            bucket.sentiment_sum += s
            bucket.sentiment_n += 1
            if s <= NEGATIVE:
                bucket.negative += 1
                if m.followers > bucket.max_negative_followers:
                    bucket.max_negative_followers = m.followers
            elif s >= POSITIVE:
                bucket.positive += 1
        bucket.reach += m.followers
        bucket.terms.update(self._extract(m.text))
        if self.samples:
            samples = bucket.samples
            if len(samples) < self.samples or m.followers > samples[-1].followers:
                sample = Sample(
                    m.id, m.ts, m.author, m.followers, m.text, s or 0.0, m.url
                )
                samples.append(sample)
                samples.sort(key=lambda x: -x.followers)
                del samples[self.samples :]
        return True

    def add_metric(self, p: MetricPoint) -> bool:
        """Merge an upstream aggregate into its bucket.

        Points of one bucket add up, except in a series of its own spacing:
        there each row is a whole bucket, so rows that share one (a repeated
        timestamp, as in one of NAB's ad-exchange files) are averaged when it
        closes. Added up, a duplicated row was a spike of twice the level.
        """
        key = SeriesKey(p.brand, p.channel)
        state = self._state(key, p.ts, p.interval, aggregated=True)
        if state is None:
            return False
        bucket = self._bucket(state, p.ts)
        if bucket is None:
            return False
        bucket.volume += p.volume
        state.last_end = max(state.last_end, bucket.end)
        if bucket.stamps is None:
            bucket.stamps = [p.ts]
        else:
            bucket.stamps.append(p.ts)
        if p.negative is None:
            state.negative_known = False
        else:
            bucket.negative += p.negative
        if p.sentiment is not None:
            bucket.sentiment_sum += p.sentiment * p.volume
            bucket.sentiment_n += p.volume
        return True

    def advance(self, watermark: float | None = None) -> list[Bucket]:
        """Close every bucket whose end the watermark has passed, in time order.

        ``watermark`` defaults to the latest event time minus the lateness;
        a live source passes the wall clock minus the lateness when idle.
        """
        if watermark is None:
            watermark = self.max_event_time - self.lateness
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        closed: list[Bucket] = []
        for state in self._series.values():
            # a file is over after its last row, not quiet until the other files end
            until = min(watermark, state.last_end) if state.own_spacing else watermark
            while state.next_start + state.length <= until:
                start = state.next_start
                bucket = state.open.pop(start, None)
                state.ids.pop(start, None)
                if bucket is None:
                    bucket = Bucket(state.key, start, start + state.length)
                bucket.aggregated = state.aggregated
                bucket.negative_known = state.negative_known
                if state.own_spacing and bucket.stamps and len(bucket.stamps) > 1:
                    rows = len(bucket.stamps)  # rows of a series of its own spacing: averaged
                    bucket.volume = round(bucket.volume / rows)
                    bucket.negative = round(bucket.negative / rows)
                closed.append(bucket)
                state.next_start = start + state.length
                state.emitted = True
        self.stats.closed += len(closed)
        if len(self._series) > 1:
            closed.sort(key=lambda b: b.end)
        return closed

    def flush(self) -> list[Bucket]:
        """Close everything up to the latest event (end of a replay or drain)."""
        last = max(
            (start + s.length for s in self._series.values() for start in s.open),
            default=self.watermark,
        )
        return self.advance(last)

    def restart(self) -> int:
        """Forget event time and the open buckets; the number of open buckets dropped.

        Each series starts again with its next event (the detectors keep
        their own state, by series). For a snapshot whose event time this
        host's clock has not reached (see ``Pipeline.meet_the_clock``).
        """
        dropped = sum(len(s.open) for s in self._series.values())
        self._series = {}
        self._phases = {}
        self.max_event_time = -math.inf
        self.watermark = -math.inf
        return dropped

    def snapshot(self) -> dict[str, object]:
        """The open windows and watermark, picklable (for detector snapshots)."""
        return {
            "series": self._series,
            "max_event_time": self.max_event_time,
            "watermark": self.watermark,
        }

    def restore(self, state: dict[str, object]) -> list[float]:
        """Resume from ``snapshot()`` output; the old lengths of the series rebucketed.

        A series bucketed by ``windows.bucket`` that was saved at another
        length starts again at the configured one with its next event (its
        open buckets are dropped, and its detectors relearn at the new
        length): the setting applies after a restart, as every setting
        does. A file's series keeps its own spacing.
        """
        series: dict[SeriesKey, _Series] = state["series"]  # type: ignore[assignment]
        changed = [k for k, s in series.items() if not s.own_spacing and s.length != self.bucket]
        old = [series.pop(key).length for key in changed]
        self._series = series
        self._phases = {}
        for s in series.values():
            if s.own_spacing:
                self._phases.setdefault(s.length, s.offset)
        self.max_event_time = state["max_event_time"]  # type: ignore[assignment]
        self.watermark = state["watermark"]  # type: ignore[assignment]
        return old

    def lengths(self) -> set[float]:
        """The bucket lengths of the series known, and the configured one."""
        return {s.length for s in self._series.values()} | {self.bucket}
