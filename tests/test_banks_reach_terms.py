"""Reach and term banks: a bank of many series gives each slot exactly what a bank of one gives.

The daemon ticks thousands of series through one bank; these tests pin that
sharing a bank changes nothing for a series (bit for bit), whatever the other
slots do, which slots a tick carries and in which order, and across a pickle.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Iterator

import numpy as np

from detectors.reach import ReachDetector
from detectors.terms import TermDetector, TermScore

DAY = 86400.0
B = 300.0
T0 = 1_700_006_400.0
SERIES = 4


def reach_stream(seed: int) -> Iterator[float]:
    """Largest negative audience per bucket: often none, Zipf-sized, a rare giant."""
    rng = np.random.default_rng(seed)
    while True:
        u = rng.random()
        if u < 0.3:
            yield 0.0
        elif u < 0.305:
            yield float(rng.choice([2e6, 8e6, 5e7]))
        else:
            yield float(np.floor(100 / rng.random() ** 0.9))


def term_stream(seed: int) -> Iterator[tuple[dict[str, int], int]]:
    """Bags of chatter with a long tail of new words, crisis words and a trending hashtag."""
    rng = random.Random(seed)
    vocab = [f"w{k}" for k in range(400)]
    k = 0
    while True:
        vol = rng.randint(0, 25)
        bag: dict[str, int] = {}
        for _ in range(vol * 3):
            w = (vocab[min(int(rng.paretovariate(0.8)) - 1, len(vocab) - 1)]
                 if rng.random() < 0.85 else f"new{rng.randint(0, 10**6)}")
            bag[w] = bag.get(w, 0) + 1
        if rng.random() < 0.03:
            bag[rng.choice(["recall", "data breach", "outage", "lawsuit"])] = rng.randint(1, 9)
        if rng.random() < 0.01:
            bag[f"#storm{k // 40}"] = rng.randint(5, 50)
        k += 1
        yield bag, vol


def schedule(seed: int, ticks: int) -> Iterator[tuple[float, list[int]]]:
    """Bucket times and the slots each one carries: staggered starts, gaps, shuffled order."""
    rng = random.Random(seed)
    starts = [0, 3, 40, 150]  # in buckets
    for k in range(ticks):
        slots = [s for s in range(SERIES) if k >= starts[s] and rng.random() < 0.9]
        rng.shuffle(slots)
        yield T0 + B * k, slots


def roundtrip(det):
    return pickle.loads(pickle.dumps(det))


def test_reach_bank_gives_each_slot_what_a_bank_of_one_gives():
    bank = ReachDetector(bucket=B, warmup=DAY / 2)
    alone = [ReachDetector(bucket=B, warmup=DAY / 2) for _ in range(SERIES)]
    for _ in range(SERIES):
        bank.add()
    streams = [reach_stream(s) for s in range(SERIES)]
    alerts = 0
    for k, (t, order) in enumerate(schedule(1, int(3 * DAY / B))):
        if not order:
            continue
        if k == 500:  # a snapshot and restore in the middle changes nothing
            bank = roundtrip(bank)
            alone = [roundtrip(d) for d in alone]
        slots = np.array(order, np.intp)
        x = np.array([next(streams[s]) for s in order])
        n = np.ones(len(order))
        got = bank.score(t, slots, x, n)
        bank.learn(t, slots, x, n)
        want = []
        for s, xs in zip(order, x.tolist(), strict=True):
            want.append(alone[s].score_one(t, xs))
            alone[s].learn_one(t, xs)
        assert got.tolist() == want
        alerts += int(np.sum(got >= 0.999))
    assert alerts > 0  # the giants were scored, not only the quiet buckets
    every = bank.bands(t, 1e-3, np.arange(SERIES)[::-1])  # all at once, in any order
    for s in range(SERIES):
        assert bank.band(t, 1e-3, slot=s) == alone[s].band(t, 1e-3) == every.at(SERIES - 1 - s)
        assert bool(bank.is_warm(np.array([s]))[0]) == alone[s].warm


def test_term_bank_gives_each_slot_what_a_bank_of_one_gives():
    # a short half-life moves the forward-decay landmark; a small capacity prunes often
    kw = {"bucket": B, "warmup": DAY / 2, "capacity": 24, "half_life": 600.0}
    bank = TermDetector(**kw)
    alone = [TermDetector(**kw) for _ in range(SERIES)]
    for _ in range(SERIES):
        bank.add()
    streams = [term_stream(s) for s in range(SERIES)]
    reported = 0
    for k, (t, order) in enumerate(schedule(2, int(2.5 * DAY / B))):
        if k == 400:
            bank = roundtrip(bank)
            alone = [roundtrip(d) for d in alone]
        slots = np.array(order, np.intp)
        items = [next(streams[s]) for s in order]
        bags = [bag for bag, _ in items]
        volumes = np.array([vol for _, vol in items], float)
        got = bank.score(t, slots, bags, volumes)
        # every third tick learn from a copy: learn must then evaluate afresh, same result
        bank.learn(t, slots, list(bags) if k % 3 == 0 else bags, volumes)
        for i, (s, (bag, vol)) in enumerate(zip(order, items, strict=True)):
            want = alone[s].score_terms(t, bag, vol)
            alone[s].learn_terms(t, bag, vol)
            assert got.get(i, []) == want, (k, s)
            reported += len(want)
    assert reported > 0
    assert bank._landmark is not None and alone[0]._landmark is not None
    for s in range(SERIES):
        assert bank.n_terms(s) == alone[s].n_terms()
        assert list(bank._tables[s]) == list(alone[s]._tables[0])  # same terms, same order
        assert [bank.share(w, s) for w in bank._tables[s]] == [  # bit for bit
            alone[s].share(w) for w in bank._tables[s]]


def test_term_scores_are_keyed_by_position_most_surprising_first():
    det = TermDetector(bucket=B, warmup=DAY)
    slots = np.array([det.add() for _ in range(3)])
    chatter = {"coffee": 12, "love": 8, "morning": 5}
    for i in range(300):
        det.learn(T0 + B * i, slots, [chatter] * 3, np.full(3, 40.0))
    t = T0 + B * 300
    order = slots[::-1]  # positions, not slots, key the answer
    bags = [chatter, {"recall": 9, "data breach": 4, "coffee": 11}, {"coffee": 11}]
    out = det.score(t, order, bags, np.full(3, 40.0))
    assert list(out) == [1]
    assert [ts.term for ts in out[1]] == ["recall", "data breach"]
    assert all(isinstance(ts, TermScore) and ts.score >= 0.99 for ts in out[1])
    assert out[1][0].score >= out[1][1].score


def test_term_bank_pickles_without_the_lexicon_and_keeps_scores():
    det = TermDetector(bucket=B, warmup=DAY / 4)
    slots = np.array([det.add() for _ in range(50)])
    streams = [term_stream(100 + s) for s in range(50)]
    for k in range(120):
        items = [next(st) for st in streams]
        bags = [bag for bag, _ in items]
        volumes = np.array([vol for _, vol in items], float)
        det.score(T0 + B * k, slots, bags, volumes)
        det.learn(T0 + B * k, slots, bags, volumes)
    blob = pickle.dumps(det)
    assert b"security" not in blob  # a lexicon category: the shipped lexicon is not stored
    clone = pickle.loads(blob)
    assert clone.lexicon is det.lexicon
    t = T0 + B * 120
    bags = [{"data breach": 5, "w0": 3, "w1": 40}] * 50
    volumes = np.full(50, 20.0)
    assert clone.score(t, slots, bags, volumes) == det.score(t, slots, bags, volumes)
    assert clone.score(t, slots, bags, volumes)  # and there is something to compare


def test_term_memory_is_bounded_per_series():
    det = TermDetector(bucket=B, warmup=DAY, capacity=64)
    slots = np.array([det.add() for _ in range(20)])
    sizes = []
    for k in range(200):  # every bucket, every series: 40 words never seen before
        bags = [{f"s{s}-{k}-{j}": 1 for j in range(40)} | {"coffee": 5} for s in range(20)]
        det.learn(T0 + B * k, slots, bags, np.full(20, 30.0))
        assert max(det.n_terms(s) for s in range(20)) <= det.limit
        if k % 50 == 49:
            sizes.append(len(pickle.dumps(det)) / 20)
    assert det.num.shape[1] <= det.limit
    assert max(sizes) < 1.1 * min(sizes)  # flat, not growing with the stream
    assert sizes[-1] < 8_000
    assert det.share("coffee", 7) > 0.1  # the frequent term survives every prune


def test_reach_memory_is_flat_and_small_per_series():
    det = ReachDetector(bucket=60.0)
    slots = np.array([det.add() for _ in range(100)])
    rng = np.random.default_rng(3)
    sizes = []
    for k in range(int(9 * DAY / 60)):
        x = np.where(rng.random(100) < 0.2, np.floor(100 / rng.random(100) ** 0.9), 0.0)
        det.learn(T0 + 60.0 * k, slots, x, np.ones(100))
        if k % int(DAY / 60) == 0:
            sizes.append(len(pickle.dumps(det)))
    assert max(sizes[2:]) == min(sizes[2:])  # a week of hourly records, then no growth
    assert sizes[-1] / 100 < 4_000
