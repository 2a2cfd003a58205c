"""Replay files through the live pipeline on a simulated clock.

This is what ``crisisd replay`` and ``crisisd demo`` run: the same stages as
``crisisd run``, fed by the replay source instead of the broker, with timers
on a ``SimClock`` that follows event time. It is therefore a faithful
backtest: the incidents it prints are the incidents the daemon would open.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from daemon.clock import SimClock
from daemon.config import Config
from daemon.decode import Decoder
from daemon.domain import IncidentChange, IncidentEvent
from daemon.pipeline import Listener, Pipeline, PipelineStats
from daemon.scores import ScoreWriter
from daemon.sources.replay import ReplaySource


@dataclass(slots=True)
class ReplayResult:
    """What a replay did: counts, incidents and how long it took."""

    stats: PipelineStats
    invalid: Counter[str]
    events: list[IncidentEvent] = field(default_factory=list)
    seconds: float = 0.0
    score_files: list[Path] = field(default_factory=list)

    @property
    def opened(self) -> list[IncidentEvent]:
        """The incidents that opened, in order."""
        return [e for e in self.events if e.change == IncidentChange.OPENED]

    def summary(self) -> str:
        """One paragraph for the end of a replay."""
        s = self.stats
        resolved = sum(1 for e in self.events if e.change == IncidentChange.RESOLVED)
        rate = (s.mentions + s.metrics) / self.seconds if self.seconds else 0.0
        invalid = sum(self.invalid.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.invalid.items()))
        return (
            f"replayed {s.mentions:,} mentions and {s.metrics:,} metric points "
            f"in {self.seconds:.2f} s ({rate:,.0f}/s): {s.buckets:,} buckets, "
            f"{sum(s.anomalies.values()):,} anomalies, {len(self.opened)} incidents opened, "
            f"{resolved} resolved; {s.late:,} late, {invalid:,} invalid"
            + (f" ({reasons})" if reasons else "")
        )


async def replay(
    paths: list[Path],
    cfg: Config,
    *,
    scores: Path | None = None,
    listeners: list[Listener] | None = None,
) -> ReplayResult:
    """Run the pipeline over ``paths`` to the end and report what happened."""
    decoder = Decoder(prefix=cfg.mqtt.prefix, max_payload=cfg.mqtt.max_payload)
    source = ReplaySource(paths, decoder)
    writer = ScoreWriter(scores) if scores is not None else None
    result = ReplayResult(PipelineStats(), decoder.invalid)
    pipeline = Pipeline(
        cfg,
        SimClock(),
        on_score=writer,
        listeners=[result.events.append, *(listeners or [])],
    )
    result.stats = pipeline.stats
    started = time.perf_counter()
    try:
        await pipeline.run(source)
        pipeline.finish()
    finally:
        pipeline.close()
    result.seconds = time.perf_counter() - started
    if writer is not None:
        result.score_files = writer.close()
    return result
