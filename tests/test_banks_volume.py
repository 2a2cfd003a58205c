"""The volume bank: many series in one bank score exactly as each would alone."""

from __future__ import annotations

import pickle

import numpy as np

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


def alone(times: np.ndarray, xs: np.ndarray) -> np.ndarray:
    det = SeasonalCountDetector(bucket=B, warmup=DAY)
    out = np.empty(len(xs))
    for k, (t, x) in enumerate(zip(times, xs, strict=True)):
        out[k] = det.score_one(float(t), float(x))
        det.learn_one(float(t), float(x))
    return out


def test_a_bank_scores_each_series_as_it_would_alone():
    times, xs = streams(5, 3.5)
    bank = SeasonalCountDetector(bucket=B, warmup=DAY)
    slots = np.array([bank.add() for _ in range(len(xs))], np.intp)
    ones = np.ones(len(xs))
    together = np.empty_like(xs)
    for k, t in enumerate(times):
        together[:, k] = bank.score(float(t), slots, xs[:, k], ones)
        bank.learn(float(t), slots, xs[:, k], ones)
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


def test_pickled_bank_scores_on_identically_and_stays_small():
    times, xs = streams(4, 3.0, seed=2)
    bank = SeasonalCountDetector(bucket=B, warmup=DAY)
    slots = np.array([bank.add() for _ in range(len(xs))], np.intp)
    ones = np.ones(len(xs))
    half = len(times) // 2
    for k in range(half):
        bank.score(float(times[k]), slots, xs[:, k], ones)
        bank.learn(float(times[k]), slots, xs[:, k], ones)
    clone = pickle.loads(pickle.dumps(bank))
    for k in range(half, len(times)):
        a = bank.score(float(times[k]), slots, xs[:, k], ones)
        b = clone.score(float(times[k]), slots, xs[:, k], ones)
        np.testing.assert_array_equal(a, b)
        bank.learn(float(times[k]), slots, xs[:, k], ones)
        clone.learn(float(times[k]), slots, xs[:, k], ones)
    # bounded: five days of hourly maxima at two scales, the hold, the profile
    assert len(pickle.dumps(bank)) / len(xs) < 8_000
    assert clone.add() == len(xs)  # a restored bank keeps growing
