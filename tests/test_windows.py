"""Event-time windows: closing on the watermark, lateness, silence, alignment."""

from __future__ import annotations

from daemon.domain import Mention, MetricPoint, SeriesKey
from daemon.windows import Windows


def mention(ts: float, text: str = "hello", *, channel: str = "x", followers: int = 0,
            sentiment: float | None = 0.0, id_: str | None = None) -> Mention:
    return Mention(id=id_ or f"m{ts}", ts=ts, brand="acme", channel=channel, text=text,
                   followers=followers, sentiment=sentiment)


def windows(lateness: float = 120.0, samples: int = 3) -> Windows:
    return Windows(bucket=60, lateness=lateness, extract_terms=str.split, samples=samples)


def test_bucket_closes_only_when_watermark_passes_its_end():
    w = windows(lateness=120)
    w.add(mention(10))
    w.add(mention(59))
    assert w.advance() == []                 # watermark 59 - 120
    w.add(mention(179))                      # watermark 59: bucket [0,60) still open
    assert w.advance() == []
    w.add(mention(181))                      # watermark 61 > 60
    closed = w.advance()
    assert [(b.start, b.volume) for b in closed] == [(0, 2)]


def test_out_of_order_within_lateness_is_counted_late_after_close():
    w = windows(lateness=120)
    for ts in (100, 50, 70, 30):             # out of order, all within lateness
        assert w.add(mention(ts))
    w.add(mention(300))
    closed = w.advance()                     # watermark 180: three buckets close
    assert [b.volume for b in closed] == [2, 2, 0]
    assert not w.add(mention(20))            # its bucket has closed: late
    assert w.stats.late == 1


def test_silence_is_emitted_as_zero_volume_buckets():
    w = windows(lateness=0)
    w.add(mention(5))
    w.add(mention(305))
    closed = w.advance()
    assert [b.volume for b in closed] == [1, 0, 0, 0, 0]
    assert [b.start for b in closed] == [0, 60, 120, 180, 240]


def test_tone_reach_terms_and_highest_reach_samples():
    w = windows(lateness=0, samples=2)
    w.add(mention(1, "recall now", followers=10, sentiment=-0.6, id_="a"))
    w.add(mention(2, "recall soon", followers=500, sentiment=-0.2, id_="b"))
    w.add(mention(3, "love it", followers=50, sentiment=0.7, id_="c"))
    w.add(mention(4, "meh", followers=1, sentiment=None, id_="d"))
    [b] = w.advance(60)
    assert (b.volume, b.negative, b.positive, b.sentiment_n) == (4, 2, 1, 3)
    assert b.reach == 561 and b.max_negative_followers == 500
    assert b.terms["recall"] == 2
    assert [s.id for s in b.samples] == ["b", "c"]
    assert abs(b.mean_sentiment - (-0.1 / 3)) < 1e-9


def test_series_are_separate_and_closed_in_time_order():
    w = windows(lateness=0)
    w.add(mention(5, channel="x"))
    w.add(mention(65, channel="y"))
    closed = w.advance(120)
    assert [(str(b.series), b.start) for b in closed] == [
        ("acme/x", 0), ("acme/x", 60), ("acme/y", 60)]


def test_metric_series_with_own_spacing_keep_their_timestamps():
    w = windows(lateness=0)
    for i in range(3):
        w.add(MetricPoint(ts=1000 + 300 * i + 13, brand="T", channel="", volume=i,
                          interval=300))
    closed = w.advance() + w.flush()
    assert [b.start for b in closed] == [1013, 1313, 1613]
    assert all(b.aggregated and not b.negative_known for b in closed)
    assert closed[0].series == SeriesKey("T", "")


def test_live_metric_points_add_up_in_epoch_buckets_and_mark_them_aggregated():
    """Metrics from the broker (no spacing of their own) are aggregated series too:
    the detect stage runs no negative, reach or term signal they cannot carry."""
    w = windows(lateness=0)
    for ts, v in ((61, 4), (90, 6), (150, 5)):  # two publishers in the first minute
        w.add(MetricPoint(ts=ts, brand="T", channel="x", volume=v))
    closed = w.advance() + w.flush()
    assert [(b.start, b.volume) for b in closed] == [(60, 10), (120, 5)]
    assert all(b.aggregated and not b.negative_known for b in closed)


def test_rows_of_own_spacing_go_to_the_nearest_bucket_and_repeats_are_averaged():
    w = windows(lateness=0)
    rows = [(1000, 4), (1300, 6), (1480, 8),  # three minutes after the last: the next bucket's
            (1900, 10), (1900, 20),  # a repeated timestamp: one bucket, the mean
            (2500, 5)]  # no row at 2200: a bucket without one
    for ts, v in rows:
        w.add(MetricPoint(ts=ts, brand="T", channel="", volume=v, interval=300))
    closed = w.advance() + w.flush()
    assert [b.start for b in closed] == [1000, 1300, 1600, 1900, 2200, 2500]
    assert [b.stamps for b in closed] == [[1000], [1300], [1480], [1900, 1900], None, [2500]]
    assert [b.volume for b in closed] == [4, 6, 8, 15, 0, 5]


def test_a_file_is_over_after_its_last_row_not_quiet_while_the_others_go_on():
    """Files of different years replay together (NAB's span 2011 to 2015): the
    early one's buckets stop at its last row; a gap between rows is still zeros."""
    w = windows(lateness=0)
    early = [0, 300, 900]  # no row at 600: a bucket of 0, as silence is data
    later = [10_000_000 + 300 * i for i in range(3)]
    for ts in early:
        w.add(MetricPoint(ts=ts, brand="A", channel="", volume=5, interval=300))
    for ts in later:
        w.add(MetricPoint(ts=ts, brand="B", channel="", volume=5, interval=300))
    closed = w.advance() + w.flush()
    assert [(b.series.brand, b.start, b.volume) for b in closed if b.series.brand == "A"] == [
        ("A", 0, 5), ("A", 300, 5), ("A", 600, 0), ("A", 900, 5)]
    assert len(closed) == 7


def test_redelivered_mentions_count_once():
    w = windows(lateness=0)
    for _ in range(3):
        w.add(mention(10, id_="same"))
    w.add(mention(20, id_="other"))
    [b] = w.advance(60)
    assert b.volume == 2 and w.stats.duplicates == 2


def test_files_of_one_spacing_share_bucket_ends_and_keep_their_rows_timestamps():
    """Rows seconds apart across files close together (one tick for all of them,
    not one per file); each bucket still carries its own row's timestamp."""
    w = windows(lateness=0)
    for i in range(3):
        for brand, skew in (("A", 0), ("B", 17), ("C", 160)):
            w.add(MetricPoint(ts=1000 + 300 * i + skew, brand=brand, channel="", volume=i,
                              interval=300))
        w.add(MetricPoint(ts=5 + 600 * i, brand="D", channel="", volume=i, interval=600))
    closed = w.advance() + w.flush()
    by = {k: [b for b in closed if b.series.brand == k] for k in "ABCD"}
    assert [b.end for b in by["A"]] == [b.end for b in by["B"]] == [1300, 1600, 1900]
    assert [b.stamps for b in by["B"]] == [[1017], [1317], [1617]]
    assert [b.end for b in by["C"]] == [1600, 1900, 2200]  # nearer the next bucket's start
    assert [b.stamps for b in by["C"]] == [[1160], [1460], [1760]]
    assert [b.end for b in by["D"]] == [605, 1205, 1805]  # another spacing: its own grid
    restarted = windows(lateness=0)
    restarted.restore(w.snapshot())
    restarted.add(MetricPoint(ts=2213, brand="E", channel="", volume=1, interval=300))
    assert [b.end for b in restarted.flush()] == [2500]
