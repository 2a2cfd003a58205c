"""The volume bank: many series in one bank score exactly as each would alone."""

from __future__ import annotations

import datetime as dt
import pickle

import numpy as np

from detectors import registry
from detectors.volume import SeasonalCountDetector

B = 300.0
DAY = 86400.0
T0 = 1_700_006_400.0


def streams(n_series: int, days: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal counts of different levels, with a storm in some series."""
    rng = np.random.default_rng(seed)
    times = T0 + B * np.arange(int(days * DAY / B))
    h = (times % DAY) / 3600.0
    base = rng.uniform(1.0, 80.0, n_series)
    means = base[:, None] * (1.0 + 0.7 * np.sin(2 * np.pi * (h - 9.0) / 24.0))[None, :] + 0.2
    xs = rng.poisson(rng.gamma(20.0, means / 20.0)).astype(float)
    storm = int(2.5 * DAY / B)
    xs[::3, storm:storm + 24] *= 6  # every third series has a two-hour storm
    return times, xs


def alone(times: np.ndarray, xs: np.ndarray, holidays: list[dt.date] | None = None) -> np.ndarray:
    det = SeasonalCountDetector(bucket=B, warmup=DAY, holidays=holidays or [])
    out = np.empty(len(xs))
    for k, (t, x) in enumerate(zip(times, xs, strict=True)):
        out[k] = det.score_one(float(t), float(x))
        det.learn_one(float(t), float(x))
    return out


def scored_together(bank: SeasonalCountDetector, slots: np.ndarray, times: np.ndarray,
                    xs: np.ndarray) -> np.ndarray:
    """The bank's score of every series' every bucket, learning each tick."""
    ones = np.ones(len(xs))
    scores = np.empty_like(xs)
    for k, t in enumerate(times):
        scores[:, k] = bank.score(float(t), slots, xs[:, k], ones)
        bank.learn(float(t), slots, xs[:, k], ones)
    return scores


def test_a_bank_scores_each_series_as_it_would_alone():
    times, xs = streams(5, 3.5)
    bank = SeasonalCountDetector(bucket=B, warmup=DAY)
    slots = np.array([bank.add() for _ in range(len(xs))], np.intp)
    together = scored_together(bank, slots, times, xs)
    for i in range(len(xs)):
        np.testing.assert_array_equal(together[i], alone(times, xs[i]))
    assert np.max(together[0]) >= 0.999  # the storms are caught in the bank too
    t = float(times[-1]) + B
    every = bank.bands(t, 1e-3, slots[::-1])  # the bands of all at once, in any order
    assert [every.at(i) for i in range(len(xs))][::-1] == [bank.band(t, 1e-3, s) for s in slots]
    assert len(set(every.expected.tolist())) == len(xs)  # each series its own expectation


def test_a_series_added_mid_stream_and_a_subset_tick():
    times, xs = streams(2, 3.0, seed=1)
    bank = SeasonalCountDetector(bucket=B, warmup=DAY)
    first = bank.add()
    late_start = int(DAY / B)
    scores = np.empty(len(times) - late_start)
    for k, t in enumerate(times):
        if k == late_start:
            second = bank.add()
        if k < late_start:  # a tick of only the first series
            bank.score(float(t), np.array([first]), xs[0, k:k + 1], np.ones(1))
            bank.learn(float(t), np.array([first]), xs[0, k:k + 1], np.ones(1))
            continue
        slots = np.array([second, first])  # any order
        sc = bank.score(float(t), slots, xs[::-1, k], np.ones(2))
        bank.learn(float(t), slots, xs[::-1, k], np.ones(2))
        scores[k - late_start] = sc[0]
    np.testing.assert_array_equal(scores, alone(times[late_start:], xs[1, late_start:]))


def halfway(times: np.ndarray, xs: np.ndarray) -> tuple[SeasonalCountDetector, np.ndarray, int]:
    """A bank of the series that has learnt the first half of their buckets; its slots."""
    bank = SeasonalCountDetector(bucket=B, warmup=DAY)
    slots = np.array([bank.add() for _ in range(len(xs))], np.intp)
    half = len(times) // 2
    for k in range(half):
        bank.score(float(times[k]), slots, xs[:, k], np.ones(len(xs)))
        bank.learn(float(times[k]), slots, xs[:, k], np.ones(len(xs)))
    return bank, slots, half


def go_on_alike(bank: SeasonalCountDetector, other: SeasonalCountDetector, times: np.ndarray,
                xs: np.ndarray, slots: np.ndarray, start: int) -> None:
    """Both banks score the rest of the buckets identically."""
    ones = np.ones(len(xs))
    for k in range(start, len(times)):
        a = bank.score(float(times[k]), slots, xs[:, k], ones)
        np.testing.assert_array_equal(other.score(float(times[k]), slots, xs[:, k], ones), a)
        bank.learn(float(times[k]), slots, xs[:, k], ones)
        other.learn(float(times[k]), slots, xs[:, k], ones)


def test_pickled_bank_scores_on_identically_and_stays_small():
    times, xs = streams(4, 3.0, seed=2)
    bank, slots, half = halfway(times, xs)
    clone = pickle.loads(pickle.dumps(bank))
    go_on_alike(bank, clone, times, xs, slots, half)
    # bounded: five days of hourly maxima at two scales, the hold, the profile
    assert len(pickle.dumps(bank)) / len(xs) < 8_000
    assert clone.add() == len(xs)  # a restored bank keeps growing


def test_a_snapshot_from_before_the_holidays_is_taken_over_warm():
    times, xs = streams(3, 3.0, seed=4)
    bank, slots, half = halfway(times, xs)
    old = pickle.loads(pickle.dumps(bank))
    for name in SeasonalCountDetector.ADDED:  # as a version without them pickled it
        delattr(old, name)
        del old._fills[name]
    later = dt.date(2030, 1, 1)  # a holiday the rest of the stream does not reach
    fresh = SeasonalCountDetector(bucket=B, warmup=DAY, holidays=[later])
    assert fresh.schema() == old.schema()
    fresh.take_state(old)
    assert np.isnan(fresh.hol[: fresh.size]).all() and fresh.warm
    go_on_alike(bank, fresh, times, xs, slots, half)
    assert fresh.add() == len(xs)


def test_a_holiday_in_the_calendar_is_a_day_of_its_own_not_a_fall():
    """A Thursday at 30 % of a Thursday's mentions, twice: without the calendar
    each is a fall, with it the first starts from the quietest weekday and the
    second from what the first taught, and the level is not dragged down."""
    rng = np.random.default_rng(3)
    times = T0 + B * np.arange(int(30 * DAY / B))
    dates = (times // DAY).astype(int)
    first, second = dates[0] + 15, dates[0] + 22  # two Thursdays (T0 is a Wednesday)
    assert ((np.array([first, second]) + 3) % 7 == 3).all()
    h = (times % DAY) / 3600.0
    mean = 30.0 * (1.0 + 0.7 * np.sin(2 * np.pi * (h - 9.0) / 24.0)) + 1.0
    mean *= np.where((dates + 3) % 7 >= 5, 0.6, 1.0)  # weekends
    holiday = (dates == first) | (dates == second)
    xs = rng.poisson(mean * np.where(holiday, 0.3, 1.0)).astype(float)
    calendar = [dt.date(1970, 1, 1) + dt.timedelta(days=int(d)) for d in (first, second)]
    threshold = registry.threshold_for("balanced")
    falls: dict[bool, list[int]] = {}
    noon: dict[bool, list[float]] = {}
    for known in (False, True):
        det = registry.make("volume", bucket=B, warmup=DAY, min_volume=20,
                            holidays=calendar if known else [])
        falls[known], noon[known] = [], []
        for t, d, x in zip(times, dates, xs, strict=True):
            t = float(t)
            if t % DAY == 12 * 3600 and d in (first - 7, first, first + 1, second):
                noon[known].append(det.expected(t))
            if det.score_one(t, x) >= threshold and x < det.expected(t) and d in (first, second):
                falls[known].append(d)
            det.learn_one(t, x)
    assert first in falls[False] and second in falls[False]
    assert second not in falls[True]
    weekday, hol1, after, hol2 = noon[True]
    assert 0.32 < hol1 / weekday < 0.55  # the first: from the weekend's 0.6 to its own 0.3
    assert 0.25 < hol2 / weekday < 0.4  # the second: what the first taught
    assert after / weekday > 0.85 > noon[False][2] / noon[False][0]  # the level kept


def test_series_of_other_markets_in_one_bank_score_as_alone_with_their_own_holidays():
    times, xs = streams(3, 9.0, seed=5)
    off = dt.date(1970, 1, 1) + dt.timedelta(days=int(times[0] // DAY) + 8)
    day8 = slice(int(8 * DAY / B), int(9 * DAY / B))
    xs[1:, day8] = np.floor(xs[1:, day8] / 3)  # the markets of series 1 and 2 are off on day 8
    bank = SeasonalCountDetector(bucket=B, warmup=DAY)
    slots = np.array([bank.add() for _ in range(len(xs))], np.intp)
    bank.use_holidays(slots[1:2], [off])  # series 2's market is not in the calendar
    scores = scored_together(bank, slots, times, xs)
    for i in range(len(xs)):
        np.testing.assert_array_equal(scores[i], alone(times, xs[i], [off] if i == 1 else None))
    assert bank.hol[1] < 0.5 and np.isnan(bank.hol[[0, 2]]).all()
