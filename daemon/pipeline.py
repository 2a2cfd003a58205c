"""The one pipeline that live and replay sources both feed.

    source → enrich (sentiment) → windows → detect → incidents → listeners

Each stage takes typed events and emits typed events; none reaches back up.
Time has two meanings and they are kept apart: windows close on the event-time
watermark; timers (escalations, updates) run on the ``Clock``. With a
``SimClock`` the pipeline moves the clock to each closed bucket's end before
handling it, so timers and detections interleave exactly as they would live;
and a replay sets ``settle`` so that what a bucket made the response queue is
delivered before the clock moves on, as it would be live within seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby

import structlog

from daemon.clock import Clock, SimClock
from daemon.config import Config
from daemon.detect import DetectStage, ScoreSink
from daemon.domain import Anomaly, Bucket, Event, IncidentEvent, Mention
from daemon.incidents import BrandRouter, IncidentManager, Router
from daemon.journal import Journal
from daemon.sentiment import SentimentScorer
from daemon.sources import Source, Tick
from daemon.timeline import anomaly_dict
from daemon.windows import Windows
from detectors.terms import extract_terms

log = structlog.get_logger("crisisd.pipeline")

Listener = Callable[[IncidentEvent], None]
BucketListener = Callable[[Bucket], None]


@dataclass(slots=True)
class PipelineStats:
    """What went through, for logs, metrics and tests."""

    mentions: int = 0
    metrics: int = 0
    late: int = 0
    buckets: int = 0
    anomalies: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # signal, tier, way
    last_event_wall: float = 0.0
    detect_seconds: float = 0.0


class Pipeline:
    """Wires the stages together and drives them from a source."""

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        *,
        router: Router | None = None,
        silenced: Callable[[Anomaly], object | None] | None = None,
        on_score: ScoreSink | None = None,
        listeners: Iterable[Listener] = (),
        bucket_listeners: Iterable[BucketListener] = (),
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.windows = Windows(cfg.windows.bucket, cfg.windows.lateness, extract_terms,
                               cfg.windows.samples, cfg.windows.max_series)
        self.detect = DetectStage(cfg.detection, cfg.windows.top_terms, on_score)
        self.incidents = IncidentManager(
            router or BrandRouter(cfg.incidents.quiet, cfg.incidents.cooldown), silenced
        )
        self.sentiment = SentimentScorer()
        self.listeners = list(listeners)
        self.bucket_listeners = list(bucket_listeners)
        self.journal: Journal | None = None  # live only: see daemon.journal
        # replay only: awaited after each tick (see feed)
        self.settle: Callable[[], Awaitable[object]] | None = None
        # live only: the wall clock event time never runs past (see _watermark)
        self.wall: Callable[[], float] | None = None
        self.stats = PipelineStats()

    async def run(self, source: Source) -> None:
        """Consume the source until it ends (replay) or is cancelled (live).

        ``aclosing`` closes the stream (and the broker connection) at once when
        the run is cancelled, not whenever the generator is collected.
        """
        async with contextlib.aclosing(source.stream()) as stream:
            async for item in stream:
                await self.feed(item)

    async def feed(self, item: list[Event] | Tick) -> None:
        """Take one batch (or a live tick) through every stage it reaches."""
        if isinstance(item, Tick):
            self._idle(item.at)
            return
        batch = await self.sentiment.enrich(item)
        if self.journal is not None:  # no await from here to the windows: see _save
            self.journal.append(batch)
        add = self.windows.add
        late = self.windows.stats.late  # the windows count what they drop, late or refused
        for event in batch:
            add(event)
        mentions = sum(1 for e in batch if isinstance(e, Mention))
        self.stats.mentions += mentions
        self.stats.metrics += len(batch) - mentions
        self.stats.late += self.windows.stats.late - late
        self.stats.last_event_wall = time.time()
        watermark = self._watermark(self.windows.max_event_time)
        if self.settle is None:
            self.advance(watermark)
            return
        # A replay runs a batch's ticks faster than real time, and the outbox
        # only runs when the pipeline awaits: without settling after each
        # tick, a post approved at 14:16 would be delivered (and time-stamped)
        # whenever the batch ended, hours of simulated time later.
        for _ in self._ticks(self.windows.advance(watermark)):
            await self.settle()

    def _idle(self, wall: float) -> None:
        """In silence, let event time run on at wall-clock speed from the last event.

        Extrapolating from the last event (rather than jumping to the wall
        clock) keeps a feed that lags real time by more than the lateness from
        having its next mentions dropped as late after every pause.
        """
        if not self.stats.last_event_wall:
            return
        now = self.windows.max_event_time + (wall - self.stats.last_event_wall)
        self.advance(self._watermark(now))

    def _watermark(self, event_time: float) -> float:
        """The watermark at ``event_time``: live, never past this host's clock.

        A producer whose clock runs a few minutes fast would otherwise move
        event time on for everyone, and every other producer's mentions would
        arrive late and be dropped (the decoder refuses anything further ahead).
        """
        if self.wall is not None:
            event_time = min(event_time, self.wall())
        return event_time - self.cfg.windows.lateness

    def meet_the_clock(self) -> None:
        """Live, after a restore: start the windows again if their event time is ahead of the clock.

        A snapshot saved before this host's clock was stepped back (or taken
        from another host) holds a watermark the clock has not reached:
        every mention stamped before it would be dropped as late until the
        clock caught up, for as long as the step. More than one bucket
        ahead, the windows start again at the clock and drop their open
        buckets (a bucket's worth of mentions at most); the detectors keep
        their baselines.
        """
        if self.wall is None:
            return
        ahead = self.windows.watermark + self.cfg.windows.lateness - self.wall()
        if ahead > self.cfg.windows.bucket:
            dropped = self.windows.restart()
            log.warning("restored event time is ahead of this host's clock; the windows start "
                        "again at the clock, the detectors keep their baselines",
                        ahead_s=round(ahead), open_buckets_dropped=dropped)

    def advance(self, watermark: float) -> None:
        """Close the buckets the watermark passed and run them downstream."""
        for _ in self._ticks(self.windows.advance(watermark)):
            pass

    def finish(self) -> None:
        """Close every open bucket (the end of a replay)."""
        for _ in self._ticks(self.windows.flush()):
            pass

    def _ticks(self, closed: list[Bucket]) -> Iterator[None]:
        """Run closed buckets (in time order) downstream, one tick per bucket end;
        yield after each, so a replay can settle the response between them."""
        for end, group in groupby(closed, key=lambda b: b.end):
            self._tick(end, list(group))
            yield

    def _tick(self, end: float, buckets: list[Bucket]) -> None:
        if isinstance(self.clock, SimClock):
            self.clock.advance(end)
        started = time.perf_counter()
        anomalies, elevated = self.detect.process(buckets, self.incidents.has_open)
        for brand in sorted(elevated):
            self.incidents.keep_alive(brand, end)
        for listener in self.bucket_listeners:
            for bucket in buckets:
                listener(bucket)
        self.stats.detect_seconds += time.perf_counter() - started
        self.stats.buckets += len(buckets)
        events: list[IncidentEvent] = []
        for anomaly in anomalies:
            way = "up" if anomaly.direction > 0 else "down"
            self.stats.anomalies[(anomaly.signal.split(":")[0], str(anomaly.severity), way)] += 1
            log.info("anomaly", **anomaly_dict(anomaly))
            if anomaly.signal == "volume" and anomaly.direction < 0:  # no crisis: say so here
                log.warning("mentions fell far below their usual: is the feed down?",
                            series=str(anomaly.series), observed=round(anomaly.observed, 1),
                            expected=round(anomaly.expected, 1), seconds=anomaly.window,
                            until=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(anomaly.end)))
            events.extend(self.incidents.observe(anomaly))
        events.extend(self.incidents.tick(end))
        for event in events:
            self.emit(event)

    def emit(self, event: IncidentEvent) -> None:
        """Hand an incident change to the log and every listener."""
        log.info(
            f"incident {event.change}",
            incident=event.incident.id,
            series=str(event.incident.origin),
            severity=str(event.incident.severity),
            playbook=event.incident.playbook,
        )
        for listener in self.listeners:
            listener(event)

    def close(self) -> None:
        """Release the stage resources (the sentiment worker)."""
        self.sentiment.close()
