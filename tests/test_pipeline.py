"""The pipeline's own behaviour: silence on a live source, duplicates."""

from __future__ import annotations

from daemon.clock import SimClock
from daemon.config import Config
from daemon.domain import Mention
from daemon.pipeline import Pipeline
from daemon.sources import Tick


def mention(i: int, ts: float) -> Mention:
    return Mention(id=f"m{i}", ts=ts, brand="acme", channel="x", text="hello", sentiment=0.1)


async def test_ticks_let_event_time_run_on_from_the_last_event_not_jump_to_the_wall():
    pipeline = Pipeline(Config(), SimClock())
    lagging = 1_000_000.0                      # the feed is days behind the wall clock
    await pipeline.feed([mention(1, lagging + 5)])
    wall = pipeline.stats.last_event_wall
    await pipeline.feed(Tick(wall + 10))       # a short pause: nothing closes
    assert pipeline.stats.buckets == 0
    await pipeline.feed([mention(2, lagging + 30)])
    assert pipeline.stats.late == 0            # not dropped as late after the pause
    await pipeline.feed(Tick(pipeline.stats.last_event_wall + 600))  # ten silent minutes
    assert pipeline.stats.buckets >= 7         # silence closes buckets, with volume 0
    pipeline.close()


async def test_a_tick_before_any_event_does_nothing():
    pipeline = Pipeline(Config(), SimClock())
    await pipeline.feed(Tick(1e9))
    assert pipeline.stats.buckets == 0 and pipeline.windows.series_count == 0
    pipeline.close()


async def test_live_a_fast_producer_clock_does_not_make_everyone_else_late():
    """Event time never runs past this host's clock: one producer ten minutes fast
    (within the skew the decoder lets through) would have closed every bucket of
    the last eight minutes, and the others' mentions would all have been dropped."""
    pipeline = Pipeline(Config(), SimClock())
    wall = 1_800_000_000.0
    pipeline.wall = lambda: wall
    await pipeline.feed([mention(1, wall + 600)])  # a producer ten minutes fast
    await pipeline.feed([mention(2, wall - 5), mention(3, wall - 70)])  # the others, on time
    assert pipeline.stats.late == 0
    pipeline.close()
