"""Every signal on one simulated brand: each crisis kind fires its detector, a launch does not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import registry
from detectors.terms import TermDetector

DAY = 86400.0
B = 60.0
T0 = 1_700_006_400.0
BALANCED = registry.threshold_for("balanced")
EVENT = int(3 * DAY / B) + 14 * 60  # day 4, 14:00
HOURS = 3


def simulate(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = EVENT + int(6 * 3600 / B)
    times = T0 + B * np.arange(n)
    h = (times % DAY) / 3600.0
    mean = 8.0 * (1.0 + 0.8 * np.sin(2 * math.pi * (h - 9.0) / 24.0)) + 0.5
    q = np.full(n, 0.15)  # share of negative mentions
    m = np.full(n, 0.1)  # mean sentiment of a mention
    ev = slice(EVENT, EVENT + int(HOURS * 3600 / B))
    if kind == "storm":  # a negative storm: 6× mentions, half of them negative
        mean[ev] *= 6
        q[ev], m[ev] = 0.5, -0.3
    elif kind == "share":  # the conversation turns at normal volume
        q[ev], m[ev] = 0.45, -0.15
    elif kind == "burn":  # slow burn: sentiment drifts down over the hours
        ramp = np.linspace(0, 1, ev.stop - ev.start)
        m[ev] = 0.1 - 0.25 * ramp
        q[ev] = 0.15 + 0.12 * ramp
    elif kind == "launch":  # benign: 8× mentions, happier than usual
        mean[ev] *= 8
        q[ev], m[ev] = 0.07, 0.5
    lam = rng.gamma(10.0, mean / 10.0)
    vol = rng.poisson(lam).astype(float)
    neg = rng.binomial(vol.astype(int), q).astype(float)
    sent = np.where(vol > 0, rng.normal(m, 0.45 / np.sqrt(np.maximum(vol, 1))), 0.0)
    reach = np.array([np.max(np.floor(100 / rng.random(int(k)) ** 0.7)) if k else 0.0
                      for k in neg])
    if kind == "reach":
        reach[EVENT] = 10_000_000.0  # a celebrity account
    return {"t": times, "volume": vol, "negative_volume": neg, "sentiment": sent,
            "reach": reach}


def run(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    vol, neg = data["volume"], data["negative_volume"]
    feeds = {"volume": (vol, np.ones_like(vol)), "negative_volume": (neg, vol),
             "negative_share": (neg, vol), "sentiment": (data["sentiment"], vol),
             "reach": (data["reach"], np.maximum(neg, 1))}
    out = {}
    for signal, (xs, ns) in feeds.items():
        det = registry.make(signal, bucket=B, warmup=DAY, min_volume=20)
        sc = np.empty(len(xs))
        for k, (t, x, n) in enumerate(zip(data["t"], xs, ns, strict=True)):
            sc[k] = det.score_one(float(t), float(x), float(n))
            det.learn_one(float(t), float(x), float(n))
        out[signal] = sc
    return out


def alerts(scores: dict[str, np.ndarray]) -> tuple[set[str], set[str]]:
    """(signals alerting during the event, signals alerting before it)."""
    during = {s for s, sc in scores.items() if np.any(sc[EVENT:] >= BALANCED)}
    before = {s for s, sc in scores.items() if np.any(sc[:EVENT] >= BALANCED)}
    return during, before


@pytest.mark.parametrize(("kind", "expected"), [
    ("storm", {"volume", "negative_volume", "negative_share"}),
    ("share", {"negative_share"}),
    ("burn", {"sentiment"}),
    ("reach", {"reach"}),
])
def test_each_crisis_kind_fires_its_detector(kind, expected):
    during, before = alerts(run(simulate(kind)))
    assert not before, before  # three quiet days first: nothing pages
    assert expected <= during, during


def test_a_benign_launch_pages_only_volume():
    during, before = alerts(run(simulate("launch")))
    assert not before
    assert during == {"volume"}  # the anomaly is real, but nothing negative is


def test_crisis_terms_in_a_simulated_stream():
    rng = np.random.default_rng(5)
    det = TermDetector(bucket=B, warmup=DAY)
    words = ["order", "love", "store", "app", "price", "thanks"]
    hits = []
    for k in range(int(1.5 * DAY / B)):
        t = T0 + B * k
        vol = int(rng.poisson(6))
        bag: dict[str, int] = {}
        for w in rng.choice(words, size=vol * 2):
            bag[str(w)] = bag.get(str(w), 0) + 1
        if k >= int(1.2 * DAY / B) and k % 7 == 0:  # a few recall mentions, low volume
            bag["recall"] = 3
        hits += det.score_terms(t, bag, vol)
        det.learn_terms(t, bag, vol)
    assert hits and {s.term for s in hits} == {"recall"}
    assert hits[0].category == "safety"
