"""Share and sentiment banks: each slot is scored exactly as a bank of one series would be.

Why: a bank's slots must not leak into each other — not through the subsets
evaluated (cold, under the floor, in the tail), not through the records or
the hold, not through slots added later — and a restored snapshot must go on
scoring as if the daemon had never stopped.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from detectors.sentiment import SentimentDetector
from detectors.share import ShareDetector

DAY = 86400.0
B = 300.0
T0 = 1_700_006_400.0
TICKS = int(3 * DAY / B)
KINDS = {"share": ShareDetector, "sentiment": SentimentDetector}


def streams(kind: str, series: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, n), each ticks × series: busy, quiet (around the floor), gappy and stormy series."""
    rng = np.random.default_rng(seed)
    h = ((T0 + B * np.arange(TICKS)) % DAY) / 3600.0
    day = 1.0 + 0.8 * np.sin(2 * np.pi * (h - 9.0) / 24.0)
    vol = np.resize([60.0, 25.0, 8.0, 40.0, 30.0], series)
    n = rng.poisson(np.outer(day, vol) + 0.5).astype(float)
    n[rng.random(n.shape) < 0.05] = 0.0  # buckets without a mention
    storm = slice(int(2.5 * DAY / B), int(2.5 * DAY / B) + 24)  # two hours of the last series
    if kind == "share":
        q = np.tile(np.linspace(0.05, 0.3, series), (TICKS, 1))
        q[storm, -1] = 0.7
        return rng.binomial(n.astype(int), q).astype(float), n
    m = np.tile(np.linspace(-0.1, 0.3, series), (TICKS, 1))
    m[storm, -1] -= 0.5
    x = np.where(n > 0, rng.normal(m, 0.4 / np.sqrt(np.maximum(n, 1.0))), 0.0)
    return x, n


def make(kind: str):
    return KINDS[kind](bucket=B, warmup=DAY, min_volume=20, windows=(900.0, 3600.0))


def one_series(kind: str, xs: np.ndarray, ns: np.ndarray, start: int = 0) -> np.ndarray:
    """Scores of one series fed alone (river-style), from tick ``start`` on."""
    det = make(kind)
    out = np.zeros(len(xs))
    for k in range(start, len(xs)):
        t = T0 + B * k
        out[k] = det.score_one(t, xs[k], ns[k])
        det.learn_one(t, xs[k], ns[k])
    return out


def feed(det, slots: np.ndarray, xs: np.ndarray, ns: np.ndarray, ticks: range,
         rng: np.random.Generator) -> np.ndarray:
    """Scores of the bank's slots, each tick's slots in a new order (ticks × len(slots))."""
    out = np.zeros((len(xs), len(slots)))
    for k in ticks:
        order = rng.permutation(len(slots))
        s, x, n = slots[order], xs[k, order], ns[k, order]
        out[k, order] = det.score(T0 + B * k, s, x, n)
        det.learn(T0 + B * k, s, x, n)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_each_slot_scores_as_its_own_bank(kind):
    xs, ns = streams(kind)
    det = make(kind)
    slots = np.array([det.add() for _ in range(xs.shape[1])], dtype=np.intp)
    bank = feed(det, slots, xs, ns, range(TICKS), np.random.default_rng(1))
    for j in range(xs.shape[1]):
        assert np.array_equal(bank[:, j], one_series(kind, xs[:, j], ns[:, j])), j
    assert np.max(bank[:, -1]) > 0.999  # the storm was scored, through the tail and records
    assert np.any((bank > 0.0) & (bank < 0.5))  # and normal traffic too
    t = T0 + B * TICKS
    every = det.bands(t, 1e-3, slots[::-1])  # the bands of all at once, in any order
    assert [every.at(i) for i in range(len(slots))][::-1] == [det.band(t, 1e-3, s) for s in slots]
    assert np.all(every.low < every.expected) and np.all(every.expected < every.high)


@pytest.mark.parametrize("kind", KINDS)
def test_pickled_bank_scores_on_unchanged(kind):
    xs, ns = streams(kind, seed=2)
    det = make(kind)
    slots = np.array([det.add() for _ in range(xs.shape[1])], dtype=np.intp)
    half = TICKS // 2
    feed(det, slots, xs, ns, range(half), np.random.default_rng(3))
    clone = pickle.loads(pickle.dumps(det))
    rest = range(half, TICKS)
    assert np.array_equal(feed(det, slots, xs, ns, rest, np.random.default_rng(4)),
                          feed(clone, slots, xs, ns, rest, np.random.default_rng(4)))


@pytest.mark.parametrize("kind", KINDS)
def test_slots_added_mid_stream(kind):
    xs, ns = streams(kind, series=12, seed=5)
    det = make(kind)
    early = np.array([det.add() for _ in range(8)], dtype=np.intp)  # the bank is full
    late_start = TICKS // 3
    out = np.zeros_like(xs)
    rng = np.random.default_rng(6)
    out[:, :8] = feed(det, early, xs[:, :8], ns[:, :8], range(late_start), rng)
    # four more series appear (the bank grows) and tick with the first ones from then on
    late = np.array([det.add() for _ in range(4)], dtype=np.intp)
    slots = np.r_[early, late]
    out[late_start:] = feed(det, slots, xs, ns, range(late_start, TICKS), rng)[late_start:]
    for j in range(12):
        start = 0 if j < 8 else late_start
        assert np.array_equal(out[:, j], one_series(kind, xs[:, j], ns[:, j], start)), j
    assert det.is_warm(late).all()  # two days after they appeared
