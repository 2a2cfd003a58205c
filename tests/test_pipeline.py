"""The pipeline's own behaviour: silence on a live source, duplicates."""

from __future__ import annotations

import structlog.testing

from daemon import metrics, snapshots
from daemon.clock import SimClock
from daemon.config import Config, WindowConfig
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


async def test_live_a_snapshot_ahead_of_the_clock_does_not_make_every_mention_late(tmp_path):
    """The host's clock was stepped back a day after the snapshot was saved: the
    restored watermark would have dropped a day of mentions as late. The windows
    start again at the clock; the detectors keep what they learnt, and go on."""
    wall = 1_800_000_000.0
    before = Pipeline(Config(), SimClock())
    before.wall = lambda: wall
    await before.feed([mention(i, wall - 7200 + 30 * i) for i in range(240)])
    await before.feed(Tick(wall))
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, before.detect, before.windows)
    before.close()

    for stepped_back, meet, late in ((86400.0, True, 0), (86400.0, False, 240)):
        after = Pipeline(Config(), SimClock())
        assert snapshots.load(path, after.detect, after.windows)
        now = [wall - stepped_back]
        after.wall = lambda now=now: now[0]
        if meet:
            after.meet_the_clock()
        start = now[0]
        for i in range(240):  # two hours of mentions, as the clock goes on
            now[0] = start + 30 * i + 1
            await after.feed([mention(1000 + i, start + 30 * i)])
        assert after.stats.late == late
        assert after.detect.series_count == 1  # the baselines were kept
        assert (after.stats.buckets > 100) == meet  # two hours of buckets closed and scored
        after.close()

    small = Pipeline(Config(), SimClock())  # a step back within a bucket: nothing dropped
    assert snapshots.load(path, small.detect, small.windows)
    small.wall = lambda: wall - 30
    small.meet_the_clock()
    assert small.windows.watermark == before.windows.watermark
    small.close()


async def test_a_new_series_past_max_series_is_refused_counted_and_said_not_late():
    """A producer inventing topics cannot grow memory without end; the brands already
    watched go on, and the refused events are not mistaken for late ones."""
    pipeline = Pipeline(Config(windows=WindowConfig(max_series=2)), SimClock())
    t = 1_000_000.0
    brands = ["acme", "northwind"] + [f"typo{i}" for i in range(12)]
    with structlog.testing.capture_logs() as logs:
        for k, brand in enumerate(brands):
            await pipeline.feed([Mention(id=f"m{k}", ts=t + k, brand=brand, channel="x",
                                         text="hello", sentiment=0.1)])
        await pipeline.feed([mention(99, t + 30)])  # acme goes on
    assert pipeline.windows.series_count == 2
    assert pipeline.windows.stats.refused == 12 and pipeline.stats.late == 0
    said = [e for e in logs if e["event"].startswith("series limit reached")]
    assert [e["refused"] for e in said] == [1, 10]  # the first, then each tenfold
    assert said[0]["series"] == "typo0/x" and "windows.max_series" in said[0]["fix"]
    assert "crisisd_events_refused_total 12" in metrics.render(pipeline)
    await pipeline.feed(Tick(pipeline.stats.last_event_wall + 300))
    assert pipeline.stats.buckets > 0
    pipeline.close()


async def test_a_bucket_length_changed_across_a_restart_applies_to_the_series_restored(
        tmp_path):
    """``windows.bucket`` needs a restart, and after it every series is bucketed at the
    new length; the detectors of the old length, which nothing feeds any more, go."""
    t = 1_000_000.0
    before = Pipeline(Config(), SimClock())
    await before.feed([mention(i, t + 20 * i) for i in range(360)])  # two hours, 1-minute buckets
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, before.detect, before.windows)
    before.close()
    after = Pipeline(Config(windows=WindowConfig(bucket=300.0)), SimClock())
    with structlog.testing.capture_logs() as logs:
        assert snapshots.load(path, after.detect, after.windows)
    (said,) = [e for e in logs if e["event"].startswith("windows.bucket changed")]
    assert said["series"] == 1 and said["dropped_s"] == [60.0]
    assert list(after.detect.cadences) == []
    closed: list[float] = []
    after.bucket_listeners.append(lambda b: closed.append(b.end - b.start))
    await after.feed([mention(1000 + i, t + 7200 + 20 * i) for i in range(90)])
    assert closed and set(closed) == {300.0}
    assert list(after.detect.cadences) == [300.0] and after.detect.series_count == 1
    after.close()
