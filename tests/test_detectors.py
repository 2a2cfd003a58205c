"""Detectors: baselines, spikes, storms not absorbed, floors, calibration, pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from detectors import registry
from detectors._window import TailRate
from detectors.base import Band, Detector
from detectors.reach import ReachDetector
from detectors.sentiment import SentimentDetector
from detectors.share import ShareDetector
from detectors.volume import SeasonalCountDetector

DAY = 86400.0
B = 300.0  # 5-minute buckets
T0 = 1_700_006_400.0  # a Wednesday, midnight UTC
BALANCED = registry.threshold_for("balanced")


def daily_mean(t: float, base: float = 30.0) -> float:
    """A day profile: quiet at night (~base/6), busy mid-afternoon (~base·1.8)."""
    h = (t % DAY) / 3600.0
    return base * (1.0 + 0.8 * math.sin(2 * math.pi * (h - 9.0) / 24.0)) + 1.0


def nb_counts(rng: np.random.Generator, means: np.ndarray, phi: float = 0.05) -> np.ndarray:
    """Negative binomial counts with Var = μ + φμ² (a gamma–Poisson mixture)."""
    lam = rng.gamma(1.0 / phi, phi * means)
    return rng.poisson(lam).astype(float)


def feed(det, times, xs, ns=None) -> np.ndarray:
    out = np.empty(len(xs))
    ns = np.ones(len(xs)) if ns is None else ns
    for k, (t, x, n) in enumerate(zip(times, xs, ns, strict=True)):
        out[k] = det.score_one(float(t), float(x), float(n))
        det.learn_one(float(t), float(x), float(n))
    return out


def feed_falls(det, times, xs, ns=None) -> tuple[np.ndarray, np.ndarray]:
    """Scores, and where a fall decided the score (its evidence is an hour short of its
    expectation): falls are anomalies that page nobody."""
    out, fell = np.empty(len(xs)), np.zeros(len(xs), bool)
    ns = np.ones(len(xs)) if ns is None else ns
    for k, (t, x, n) in enumerate(zip(times, xs, ns, strict=True)):
        out[k] = det.score_one(float(t), float(x), float(n))
        band = det.evidence(float(t), 1.0 - BALANCED)
        fell[k] = band.observed is not None and band.observed < band.expected
        det.learn_one(float(t), float(x), float(n))
    return out, fell


def seasonal_stream(days: float, seed: int = 0, base: float = 30.0, phi: float = 0.05):
    rng = np.random.default_rng(seed)
    times = T0 + B * np.arange(int(days * DAY / B))
    means = np.array([daily_mean(t, base) for t in times])
    return times, means, nb_counts(rng, means, phi)


def wandering_stream(days: float, seed: int, base: float, wander: float = 0.3,
                     hours: float = 3.0):
    """A seasonal stream whose rate also strays for hours, as real mention streams do:
    the log of the rate an Ornstein–Uhlenbeck drift of standard deviation ``wander``."""
    rng = np.random.default_rng(seed)
    times = T0 + B * np.arange(int(days * DAY / B))
    keep = math.exp(-B / (hours * 3600.0))
    drift, d = np.empty(len(times)), 0.0
    for k in range(len(times)):
        d = keep * d + math.sqrt(1.0 - keep * keep) * rng.normal(0.0, wander)
        drift[k] = d
    means = np.array([daily_mean(t, base) for t in times]) * np.exp(drift - wander**2 / 2)
    return times, means, nb_counts(rng, means)


# -- registry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("signal", registry.SIGNALS)
def test_registry_builds_protocol_detectors(signal):
    det = registry.make(signal, bucket=60, warmup=DAY, min_volume=20)
    assert isinstance(det, Detector)
    assert not det.warm
    assert det.score_one(T0, 1.0, 1.0) == 0.0  # cold: never alerts
    assert isinstance(det.band(T0, 1e-3), Band)


def test_registry_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown signal"):
        registry.make("mood", bucket=60, warmup=DAY, min_volume=20)
    with pytest.raises(ValueError, match="unknown sensitivity"):
        registry.threshold_for("paranoid")


def test_thresholds_and_severity_tiers():
    fewer, bal, more = (registry.threshold_for(s) for s in ("fewer", "balanced", "more"))
    assert fewer > bal > more
    assert registry.severity_for(bal - 1e-6, bal) is None
    assert registry.severity_for(bal, bal) == "low"
    assert registry.severity_for(1 - (1 - bal) / 10, bal) == "high"
    assert registry.severity_for(1 - (1 - bal) / 1000, bal) == "critical"
    assert registry.severity_for(1.0, bal) == "critical"


# -- volume -----------------------------------------------------------------------------------

def make_volume() -> SeasonalCountDetector:
    det = registry.make("volume", bucket=B, warmup=DAY, min_volume=20)
    assert isinstance(det, SeasonalCountDetector)
    return det


def test_volume_warmup_then_warm():
    times, _, xs = seasonal_stream(1.5)
    det = make_volume()
    scores = feed(det, times, xs)
    first_day = int(DAY / B) - 1
    assert np.all(scores[:first_day] == 0.0)
    assert det.warm


def test_volume_learns_the_daily_profile():
    times, _means, xs = seasonal_stream(10)
    det = make_volume()
    feed(det, times, xs)
    t_next = times[-1] + B
    for h in (3, 9, 15, 21):  # night, morning, afternoon peak, evening
        t = t_next - (t_next % DAY) + DAY + h * 3600
        assert det.expected(t) == pytest.approx(daily_mean(t), rel=0.25), h


def test_volume_spike_scores_high_and_is_not_absorbed():
    times, means, xs = seasonal_stream(8, seed=1)
    det = make_volume()
    # a two-hour storm at five times the afternoon peak on day 7
    start = int((6 * DAY + 15 * 3600) / B)
    storm = slice(start, start + int(2 * 3600 / B))
    xs = xs.copy()
    xs[storm] = means[storm] * 5
    scores = feed(det, times, xs)
    assert scores[start] >= BALANCED  # paged at once
    assert np.sum(scores[storm] >= BALANCED) <= 2  # once per storm, not every bucket
    after = slice(storm.stop + int(2 * 3600 / B), None)  # from two hours after the storm
    assert np.all(scores[after] < BALANCED)
    # the storm did not become the baseline: tomorrow's afternoon is still ~normal
    t = times[start] + DAY
    assert det.expected(t) == pytest.approx(daily_mean(t), rel=0.3)


def test_volume_storm_alerts_again_only_ten_times_worse_then_a_new_storm_alerts_again():
    times, means, xs = seasonal_stream(9, seed=1)
    det = make_volume()
    start = int((6 * DAY + 15 * 3600) / B)
    storm = slice(start, start + int(3 * 3600 / B))
    xs = xs.copy()
    xs[storm] = means[storm] * 5
    xs[start + 12:storm.stop] *= 4  # from the second hour four times worse: the same storm
    nxt = start + int(DAY / B)  # the next afternoon, after the twelve-hour hold: a bigger storm
    xs[nxt:nxt + 24] = means[nxt:nxt + 24] * 40
    scores = feed(det, times, xs)
    assert scores[start] >= BALANCED
    told = scores[storm][scores[storm] >= BALANCED]
    # growing 4× is heard once more (p ten times smaller than at the alert), not every bucket
    assert len(told) == 2 and (1 - told[1]) * 10 <= 1 - told[0]
    assert np.max(scores[nxt:nxt + 24]) >= BALANCED


def test_volume_storm_first_seen_low_alerts_again_when_it_reaches_high():
    times, means, xs = seasonal_stream(8, seed=1)
    det = make_volume()
    start = int((6 * DAY + 15 * 3600) / B)
    ramp = slice(start, start + 24)  # two hours climbing from 1.6× to 8× the afternoon
    xs = xs.copy()
    xs[ramp] = np.round(means[ramp] * np.linspace(1.6, 8.0, 24))
    scores = feed(det, times, xs)
    alerts = [registry.severity_for(s, BALANCED) for s in scores[ramp] if s >= BALANCED]
    assert alerts[0] == "low"  # noticed early, when it is merely unusual
    assert "high" in alerts or "critical" in alerts  # and heard again as it becomes a storm
    assert len(alerts) <= 4  # a tier at a time, not every bucket


def test_volume_learns_a_permanent_level_shift_within_a_day():
    times, means, xs = seasonal_stream(9, seed=2)
    det = make_volume()
    shift = int(6 * DAY / B)
    rng = np.random.default_rng(9)
    xs = xs.copy()
    xs[shift:] = nb_counts(rng, means[shift:] * 3)
    scores = feed(det, times, xs)
    # the change is news once (it climbed past its own first buckets unseen: each
    # raised the records the next was judged by)
    day_after = slice(shift + int(DAY / B), None)
    assert 1 <= np.sum(scores[shift:day_after.start] >= BALANCED) <= 2
    # a day after the shift the model expects the new level and stays quiet (the
    # records are carried over to it: held at twice the old ones during the change,
    # they made the next afternoon news again)
    assert np.sum(scores[day_after] >= BALANCED) == 0
    t = times[-1] + B
    assert det.expected(t) == pytest.approx(3 * daily_mean(t), rel=0.35)


def test_volume_calibration_on_stationary_traffic():
    times, _means, xs = seasonal_stream(30, seed=3)
    det = make_volume()
    scores = feed(det, times, xs)
    warm = scores[int(2 * DAY / B):]
    for p in (0.1, 0.03):
        rate = float(np.mean(warm >= 1 - p))
        assert 0.6 * p <= rate <= 1.4 * p, (p, rate)
    # and no page in four weeks of normal traffic
    assert np.sum(warm >= BALANCED) <= 1


@pytest.mark.parametrize(("base", "phi"), [(300.0, 1e-9), (5000.0, 1e-4)])
def test_volume_calibration_holds_where_the_noise_is_small(base, phi):
    """A big brand's near-Poisson counts (about 300 mentions per five minutes at
    its busiest hour) and a measurement with 2 % noise (a CSV of CPU loads or
    temperatures in its own unit): calibrated by the noise the series has, not
    by a floor of 14 % that made them 25 times too quiet and blind to a rise of
    a quarter."""
    times, means, xs = seasonal_stream(12, seed=3, base=base, phi=phi)
    peak = int(10 * DAY / B) + int(15 * 3600 / B)  # the tenth day's busiest hour
    xs[peak] = round(1.25 * means[peak])
    det = make_volume()
    scores = feed(det, times, xs)
    warm = np.delete(scores, peak)[int(2 * DAY / B):]
    for p in (0.1, 0.03):
        rate = float(np.mean(warm >= 1 - p))
        assert 0.5 * p <= rate <= 1.4 * p, (p, rate)
    assert np.sum(warm >= BALANCED) <= 1
    assert scores[peak] >= BALANCED


@pytest.mark.parametrize(("base", "phi"), [(300.0, 0.01), (5000.0, 1e-4)])
def test_volume_a_fall_is_news_once_over_the_hour_and_a_hiccup_is_not(base, phi):
    """A bucket the feed delivers half of is a hiccup; a day at a third of the usual
    mentions is a fall, reported within the hour, once, with the hour as evidence.
    Negative volume does not watch for falls (fewer complaints is no news)."""
    times, means, xs = seasonal_stream(12, seed=5, base=base, phi=phi)
    hiccup = int(8 * DAY / B) + int(14 * 3600 / B)
    at = int(9 * DAY / B) + int(13 * 3600 / B)
    xs[hiccup] = round(xs[hiccup] / 2)
    xs[at:at + int(DAY / B)] = np.round(xs[at:at + int(DAY / B)] / 3)
    det = make_volume()
    scores, fell = feed_falls(det, times, xs)
    alerts = np.flatnonzero(scores >= BALANCED)
    assert len(alerts) == 1 and fell[alerts[0]]
    assert 0 <= alerts[0] - at < int(3600 / B)
    # the evidence: the hour's count against the hour's band
    det = make_volume()
    feed(det, times[:alerts[0]], xs[:alerts[0]])
    t = float(times[alerts[0]])
    det.score_one(t, float(xs[alerts[0]]))
    band = det.evidence(t, 1.0 - BALANCED)
    assert band.window == 3600.0 and band.observed < band.low < band.expected < band.high
    assert band.expected == pytest.approx(sum(means[alerts[0] - 11:alerts[0] + 1]), rel=0.15)
    neg = registry.make("negative_volume", bucket=B, warmup=DAY, min_volume=20)
    assert det.falls and isinstance(neg, SeasonalCountDetector) and not neg.falls


def test_volume_a_feed_thinned_to_a_tenth_is_news_on_a_wandering_stream():
    """Where the rate strays for hours, an hour's spread grows with its mean; a day
    at a tenth of the mentions is still a fall, reported within the hour, once."""
    times, _means, xs = wandering_stream(12, seed=0, base=100.0)
    at = int(9 * DAY / B) + int(13 * 3600 / B)
    xs[at:at + int(DAY / B)] = np.round(xs[at:at + int(DAY / B)] / 10)
    scores, fell = feed_falls(make_volume(), times, xs)
    falls = np.flatnonzero((scores >= BALANCED) & fell)
    assert len(falls) == 1 and 0 <= falls[0] - at < int(3600 / B)


def test_volume_low_counts_at_night_do_not_page():
    times, _means, xs = seasonal_stream(10, seed=4, base=2.0, phi=0.3)
    det = make_volume()
    scores = feed(det, times, xs)
    assert np.sum(scores >= BALANCED) <= 1


def test_volume_pickle_round_trip_keeps_scores():
    times, _, xs = seasonal_stream(3, seed=5)
    det = make_volume()
    half = len(xs) // 2
    feed(det, times[:half], xs[:half])
    clone = pickle.loads(pickle.dumps(det))
    a = feed(det, times[half:], xs[half:])
    b = feed(clone, times[half:], xs[half:])
    assert np.array_equal(a, b)
    assert len(pickle.dumps(det)) < 16_000


def test_negative_volume_floor():
    det = registry.make("negative_volume", bucket=B, warmup=DAY, min_volume=20)
    times = T0 + B * np.arange(int(2 * DAY / B))
    feed(det, times, np.zeros(len(times)))  # no negatives at all for two days
    t = times[-1] + B
    assert det.score_one(t, 3.0) == 0.0  # three angry mentions: under the floor
    assert det.score_one(t, 40.0) >= BALANCED


# -- negative share ---------------------------------------------------------------------------

def share_stream(days: float, seed: int, q: float = 0.15, vol: float = 60.0):
    rng = np.random.default_rng(seed)
    times = T0 + B * np.arange(int(days * DAY / B))
    ns = rng.poisson(vol, len(times)).astype(float)
    xs = rng.binomial(ns.astype(int), q).astype(float)
    return times, xs, ns


def test_share_spike_high_and_not_absorbed():
    times, xs, ns = share_stream(4, seed=6)
    det = registry.make("negative_share", bucket=B, warmup=DAY, min_volume=20)
    start = int(3 * DAY / B)
    storm = slice(start, start + 24)
    xs = xs.copy()
    xs[storm] = np.round(ns[storm] * 0.6)
    scores = feed(det, times, xs, ns)
    assert scores[start] >= BALANCED
    assert isinstance(det, ShareDetector)
    assert det.share[0] == pytest.approx(0.15, abs=0.03)  # the storm is not the new normal
    assert np.all(scores[storm.stop + 40:] < BALANCED)



def test_share_turn_at_a_day_and_night_brand_is_caught_within_the_hour():
    """A turn at near-normal volume, at a brand whose nights are a tenth of its days.

    The half-hour window sees it first; its record is in standard deviations,
    so a night window's noisy share (high, of few mentions) does not hide an
    afternoon's of many.
    """
    rng = np.random.default_rng(21)
    b = 60.0
    times = T0 + b * np.arange(int(6 * DAY / b))
    hour = (times % DAY) / 3600.0
    rate = 8.0 * np.where((hour > 7) & (hour < 23), 1.0, 0.1)
    ns = rng.poisson(rate).astype(float)
    xs = rng.binomial(ns.astype(int), 0.4).astype(float)
    start = int((5 * DAY + 14 * 3600) / b)  # the sixth afternoon
    turn = np.arange(start, start + 120)
    extra = rng.poisson(4.0 * np.minimum((turn - start + 1) / 30.0, 1.0)).astype(float)
    ns[turn] += extra  # complaints: half again the usual volume, all negative
    xs[turn] += extra
    det = registry.make("negative_share", bucket=b, warmup=DAY, min_volume=20)
    before = feed(det, times[:start], xs[:start], ns[:start])
    assert np.all(before[int(DAY / b):] < BALANCED)  # five normal days page nobody
    for k in range(start, start + 60):
        score = det.score_one(times[k], xs[k], ns[k])
        if score >= BALANCED:
            break
        det.learn_one(times[k], xs[k], ns[k])
    assert score >= BALANCED, "not caught within the hour"
    # explained by the window that decided: its share, beyond the band for as many mentions
    why = det.evidence(times[k], 1.0 - BALANCED)
    assert why.window == 1800.0 and why.observed is not None
    assert why.observed > why.high > why.expected == pytest.approx(0.4, abs=0.03)


def test_tail_rate_learns_light_and_heavy_tails_a_day_late():
    """The rate beyond the threshold is 1 / mean excess: about 2.3 for a normal
    level, 1 for a Laplace one; a storm's excesses count only a day later, so
    they cannot lower the bar the storm itself is judged by."""
    rng = np.random.default_rng(2)
    hour = 3600.0
    normal, laplace = TailRate(u=1.5, half_life=1e6), TailRate(u=1.5, half_life=1e6)
    s = np.array([normal.add()])
    laplace.add()
    for i, (z, y) in enumerate(zip(rng.standard_normal(60_000), rng.laplace(size=60_000),
                                   strict=True)):
        normal.push(s, 60.0 * i, np.array([z]))
        laplace.push(s, 60.0 * i, np.array([y]))
    assert 2.0 < normal.rate(s)[0] < 2.6
    assert 0.85 < laplace.rate(s)[0] < 1.15
    t = 60.0 * 60_000
    before = normal.rate(s)[0]
    for k in range(600):  # ten hours of a storm, far out
        normal.push(s, t + 60.0 * k, np.array([8.0]))
    assert normal.rate(s)[0] == pytest.approx(before, rel=0.01)  # only last day's hours
    for h in range(11, 36):  # calm hours after it: a day on, the storm is learnt
        normal.push(s, t + h * hour, np.array([0.0]))
    assert normal.rate(s)[0] < 0.5 * before


def small_brand(days: float, seed: int, q: float = 0.3):
    """A brand of about a mention a minute at its afternoon peak, few at night:
    (times, negatives, mentions) at one-minute buckets."""
    rng = np.random.default_rng(seed)
    times = T0 + 60.0 * np.arange(int(days * DAY / 60.0))
    ns = rng.poisson([daily_mean(t, 0.5) - 0.9 for t in times]).astype(float)
    return times, rng.binomial(ns.astype(int), q).astype(float), ns


def test_share_turn_at_a_brand_of_a_mention_a_minute_reaches_high():
    """Complaints at 0.3 a minute for three hours, at a brand of about one at its
    peak: no bucket and no half hour holds enough mentions to say so, the three
    hours do. Their own tail, learnt from the normal days, takes the turn to
    ``high`` (what the shipped playbooks open an incident at) within two and a
    half hours; at the fixed unit rate it never got there."""
    times, xs, ns = small_brand(6.5, seed=7)
    start = int((5 * DAY + 14 * 3600) / 60.0)  # the sixth afternoon
    turn = np.arange(start, start + 180)
    extra = np.random.default_rng(4).poisson(0.3, len(turn)).astype(float)
    xs[turn] += extra
    ns[turn] += extra
    det = registry.make("negative_share", bucket=60, warmup=DAY, min_volume=20)
    scores = feed(det, times, xs, ns)
    assert np.all(scores[int(DAY / 60):start] < BALANCED)  # five normal days: no alert
    high = [registry.severity_for(s, BALANCED) in ("high", "critical")
            for s in scores[start:start + 150]]
    assert any(high), 1.0 - scores[start:start + 150].max()
    rates = [tail.rate(np.array([0]))[0] for tail in det.tails if tail is not None]
    assert len(rates) == 1 and rates[0] > 1.5  # the three hours' tail is lighter than rate 1


def test_share_launch_does_not_lower_the_baseline():
    """Two hours of ten times the mentions, nearly all happy: the share learnt stays
    where it was (the days after would otherwise read as a turn)."""
    times, xs, ns = share_stream(5, seed=9, q=0.2, vol=20.0)
    start = int(4 * DAY / B)
    launch = slice(start, start + int(2 * 3600 / B))
    ns[launch] *= 10.0
    xs[launch] = np.random.default_rng(10).binomial(ns[launch].astype(int), 0.02)
    det = registry.make("negative_share", bucket=B, warmup=DAY, min_volume=20)
    feed(det, times[:start], xs[:start], ns[:start])
    before = float(det.share[0])
    scores = feed(det, times[start:], xs[start:], ns[start:])
    assert before == pytest.approx(0.2, abs=0.02)
    assert float(det.share[0]) == pytest.approx(before, abs=0.02)
    assert np.all(scores < BALANCED)


def test_share_storm_alerts_once_per_severity_tier_however_long_it_lasts():
    """A conversation that turns and stays turned for nine hours: the pooled
    levels make a new peak at almost every bucket, and the storm outlasts the
    six-hour hold. It is announced once, then again only at each higher tier,
    never again at a tier already said (a tier is news once per excursion)."""
    rng = np.random.default_rng(5)
    b = 60.0
    times = T0 + b * np.arange(int(6.5 * DAY / b))
    ns = rng.poisson(20.0, len(times)).astype(float)
    xs = rng.binomial(ns.astype(int), 0.2).astype(float)
    start = int((5 * DAY + 10 * 3600) / b)
    storm = np.arange(start, start + int(9 * 3600 / b))
    ramp = np.minimum((storm - start + 1) / 60.0, 1.0)
    xs[storm] = rng.binomial(ns[storm].astype(int), 0.2 + 0.25 * ramp).astype(float)
    det = registry.make("negative_share", bucket=b, warmup=DAY, min_volume=20)
    scores = feed(det, times, xs, ns)
    assert np.all(scores[int(DAY / b):start] < BALANCED)
    said = scores[start:storm[-1] + 1]
    said = said[said >= BALANCED]
    tiers = [registry.severity_for(float(x), BALANCED) for x in said]
    assert tiers[0] is not None and len(said) <= 3, tiers
    assert tiers == sorted(set(tiers), key=["low", "high", "critical"].index), tiers


def turn_at_a_million_mentions(signal: str) -> np.ndarray:
    """Scores of ``signal`` over three days at a million mentions a bucket, 15 % of them
    negative, the last hour a turn that keeps growing (20 % to 35 %)."""
    rng = np.random.default_rng(6)
    times = T0 + B * np.arange(int(3 * DAY / B))
    ns = rng.poisson(1e6, len(times)).astype(float)
    share = np.full(len(times), 0.15)
    share[-12:] = np.linspace(0.2, 0.35, 12)
    xs = rng.binomial(ns.astype(np.int64), share).astype(float)
    det = registry.make(signal, bucket=B, warmup=DAY, min_volume=20)
    return feed(det, times, xs, ns)


def test_a_storm_past_what_a_score_can_say_alerts_once_at_the_largest_brands():
    """At a million mentions a bucket a turn is hundreds of standard deviations out, its
    ``p`` far below the floor a score can say (1e-15) and smaller at every bucket: each
    bucket alerted anew (12 of 12) as a thousand times "worse" than the last."""
    scores = turn_at_a_million_mentions("negative_share")
    assert np.sum(scores[:-12] >= BALANCED) == 0
    assert np.sum(scores[-12:] >= BALANCED) == 1, scores[-12:]


def test_a_storm_is_judged_against_the_records_from_before_its_first_bucket():
    """The negatives of a turn at a million mentions a bucket, doubling in an hour.

    Its first bucket (a third over normal) is unremarkable to the seasonal
    model at the dispersion floor, but a new record; it entered the records
    whole, and as the storm had not alerted, every bucket after it was
    judged against the records its own buckets set: the count reached 2.3
    times normal at p 1.9e-3 and never alerted.
    """
    scores = turn_at_a_million_mentions("negative_volume")
    assert np.sum(scores[:-12] >= BALANCED) == 0
    assert np.sum(scores[-12:] >= BALANCED) == 1
    assert np.argmax(scores[-12:] >= BALANCED) <= 6  # by 1.8 times normal


def test_share_floor_at_low_volume():
    times, xs, ns = share_stream(2, seed=7, vol=3.0)  # a quiet series: 3 mentions a bucket
    det = registry.make("negative_share", bucket=60, warmup=DAY, min_volume=20)
    scores = feed(det, times, xs, ns)
    assert np.all(scores < BALANCED)
    assert det.score_one(times[-1] + 60, 3.0, 3.0) < BALANCED  # 3 of 3 negative at night


def test_share_calibration():
    times, xs, ns = share_stream(20, seed=8)
    det = registry.make("negative_share", bucket=B, warmup=DAY, min_volume=20)
    scores = feed(det, times, xs, ns)[int(DAY / B):]
    for p in (0.1, 0.03):
        rate = float(np.mean(scores >= 1 - p))
        assert 0.5 * p <= rate <= 1.4 * p, (p, rate)


def test_share_pickle_round_trip():
    times, xs, ns = share_stream(2, seed=9)
    det = registry.make("negative_share", bucket=B, warmup=DAY, min_volume=20)
    h = len(xs) // 2
    feed(det, times[:h], xs[:h], ns[:h])
    clone = pickle.loads(pickle.dumps(det))
    assert np.array_equal(feed(det, times[h:], xs[h:], ns[h:]),
                          feed(clone, times[h:], xs[h:], ns[h:]))


# -- sentiment --------------------------------------------------------------------------------

def sentiment_stream(days: float, seed: int, vol: float = 40.0, m: float = 0.1, sd: float = 0.4):
    rng = np.random.default_rng(seed)
    times = T0 + B * np.arange(int(days * DAY / B))
    ns = np.maximum(rng.poisson(vol, len(times)), 1).astype(float)
    xs = rng.normal(m, sd / np.sqrt(ns)) + rng.normal(0, 0.01, len(times))
    return times, xs, ns


def test_sentiment_slow_burn_and_sharp_turn():
    times, xs, ns = sentiment_stream(4, seed=10)
    det = registry.make("sentiment", bucket=B, warmup=DAY, min_volume=20)
    assert isinstance(det, SentimentDetector)
    start = int(3 * DAY / B)
    burn = slice(start, start + 36)  # three hours drifting 0.12 more negative
    xs = xs.copy()
    xs[burn] -= 0.12
    scores = feed(det, times, xs, ns)
    assert np.max(scores[burn]) >= BALANCED  # the pooled window catches the burn
    assert np.all(scores[:start] < BALANCED)
    assert det.m[0] == pytest.approx(0.1, abs=0.03)  # not absorbed
    assert det.score_one(times[-1] + B, -0.5, 40) >= BALANCED


def test_sentiment_floor_and_positive_swings():
    times, xs, ns = sentiment_stream(2, seed=11)
    det = registry.make("sentiment", bucket=B, warmup=DAY, min_volume=20)
    feed(det, times, xs, ns)
    t = times[-1] + B
    assert det.score_one(t, -1.0, 3) < BALANCED  # three furious mentions: under the floor
    assert det.score_one(t, 0.9, 40) < 0.5  # a launch is not a crisis


def test_sentiment_calibration_and_pickle():
    times, xs, ns = sentiment_stream(15, seed=12)
    det = registry.make("sentiment", bucket=B, warmup=DAY, min_volume=20)
    h = len(xs) // 2
    s1 = feed(det, times[:h], xs[:h], ns[:h])
    clone = pickle.loads(pickle.dumps(det))
    s2 = feed(det, times[h:], xs[h:], ns[h:])
    assert np.array_equal(s2, feed(clone, times[h:], xs[h:], ns[h:]))
    scores = np.r_[s1, s2][int(DAY / B):]
    for p in (0.1, 0.03):
        rate = float(np.mean(scores >= 1 - p))
        assert 0.5 * p <= rate <= 1.5 * p, (p, rate)


# -- reach ------------------------------------------------------------------------------------

def test_reach_big_account_alerts_small_ones_do_not():
    rng = np.random.default_rng(13)
    times = T0 + B * np.arange(int(3 * DAY / B))
    xs = np.where(rng.random(len(times)) < 0.7,
                  np.floor(100 / rng.random(len(times)) ** 0.9), 0.0)
    det = registry.make("reach", bucket=B, warmup=DAY, min_volume=20)
    assert isinstance(det, ReachDetector)
    scores = feed(det, times, xs)
    assert np.sum(scores >= BALANCED) <= 2
    t = times[-1] + B
    assert det.score_one(t, 5_000_000) >= BALANCED
    assert det.score_one(t, 40_000) == 0.0  # under the absolute floor
    clone = pickle.loads(pickle.dumps(det))
    assert clone.score_one(t, 5_000_000) == det.score_one(t, 5_000_000)


def biggest_negative_posters(rng: np.random.Generator, zipf: bool, minutes: int) -> np.ndarray:
    """The largest follower count among each minute's negative mentions (0: none), about
    one negative mention a minute: Zipf-like (index 1) or log-normal followers."""
    x = np.zeros(minutes)
    for i, n in enumerate(rng.poisson(1.2, minutes)):
        if n:
            f = 100.0 / rng.random(n) if zipf else np.exp(rng.normal(5.0, 1.6, n))
            x[i] = np.floor(f.max())
    return x


def test_reach_learns_how_heavy_its_channels_follower_tail_is():
    """An account nine times the week's biggest negative poster is news where the biggest
    posters are close together (log-normal followers), not on a Zipf-like network.

    At the fixed index 1 it was not news on either (p about 1.3e-3 at the
    brand of 40 mentions a minute of the scenario bench).
    """
    found = {}
    for zipf in (True, False):
        times = T0 + 60.0 * np.arange(int(5 * DAY / 60.0))
        xs = biggest_negative_posters(np.random.default_rng(21), zipf, len(times))
        det = registry.make("reach", bucket=60.0, warmup=DAY, min_volume=20)
        assert isinstance(det, ReachDetector)
        assert np.sum(feed(det, times, xs) >= BALANCED) <= 1
        s = np.array([0])
        t = float(times[-1]) + 60.0
        det.rec.roll(s, t)
        record = float(det.rec.peak(s)[0])
        found[zipf] = (float(det.index(s)[0]), det.score_one(t, 9.0 * max(record, 60_000.0)))
    (zipf_index, zipf_score), (lognormal_index, lognormal_score) = found[True], found[False]
    assert 0.6 < zipf_index < 1.3 and zipf_score < BALANCED
    assert 1.2 < lognormal_index <= 2.0 and lognormal_score >= BALANCED


# -- a normal week at one-minute buckets must not page -----------------------------------------

def test_normal_week_at_one_minute_buckets_pages_nobody():
    rng = np.random.default_rng(14)
    b = 60.0
    times = T0 + b * np.arange(int(7 * DAY / b))
    means = np.array([daily_mean(t, 12.0) for t in times])
    vol = nb_counts(rng, means, 0.1)
    neg = rng.binomial(vol.astype(int), 0.15).astype(float)
    sent = rng.normal(0.1, 0.4 / np.sqrt(np.maximum(vol, 1)))
    reach = np.where(neg > 0, np.floor(100 / rng.random(len(times)) ** 0.9), 0.0)
    inputs = {"volume": (vol, None), "negative_volume": (neg, None),
              "negative_share": (neg, vol), "sentiment": (sent, vol), "reach": (reach, None)}
    pages = {}
    for signal, (xs, ns) in inputs.items():
        det = registry.make(signal, bucket=b, warmup=DAY, min_volume=20)
        scores = feed(det, times, xs, ns)
        pages[signal] = int(np.sum(scores >= BALANCED))
    assert sum(pages.values()) <= 1, pages


def test_two_weeks_of_growth_and_weekends_page_nobody():
    """A brand growing 3 % a day, quieter at weekends, 1-minute buckets: no page."""
    rng = np.random.default_rng(15)
    b = 60.0
    times = T0 + b * np.arange(int(14 * DAY / b))
    day = (times - T0) // DAY
    weekend = ((times // DAY + 3) % 7) >= 5
    means = np.array([daily_mean(t, 40.0) for t in times]) * 1.03**day * np.where(weekend, 0.6, 1)
    vol = nb_counts(rng, means, 0.05)
    neg = rng.binomial(vol.astype(int), 0.12).astype(float)
    for signal, xs, ns in (("volume", vol, None), ("negative_volume", neg, vol),
                           ("negative_share", neg, vol)):
        det = registry.make(signal, bucket=b, warmup=DAY, min_volume=20)
        scores, fell = feed_falls(det, times, xs, ns)
        assert np.sum((scores >= BALANCED) & ~fell) == 0, signal
        # the first weekend, before a week of data has taught the weekly factors, may be
        # reported as a fall (once): a fall is no crisis
        assert np.sum(scores >= BALANCED) <= 1, signal


def test_a_holiday_and_the_day_after_page_nobody():
    """A weekday at a third of its usual volume (a holiday), then business as usual."""
    rng = np.random.default_rng(16)
    b = 60.0
    times = T0 + b * np.arange(int(12 * DAY / b))
    holiday = ((times - T0) // DAY) == 8
    means = np.array([daily_mean(t, 40.0) for t in times]) * np.where(holiday, 0.33, 1.0)
    vol = nb_counts(rng, means, 0.05)
    det = registry.make("volume", bucket=b, warmup=DAY, min_volume=20)
    scores = feed(det, times, vol)
    assert np.sum(scores >= BALANCED) == 0
    # the quiet day lowered the level, and the ordinary days after it lift it back
    t = times[-1] + b
    assert det.expected(t) == pytest.approx(daily_mean(t, 40.0), rel=0.3)


def test_a_storm_after_a_lasting_drop_still_alerts():
    """The level falls to a third for good. A storm past the old heights alerts at once;
    a return to the old level alerts once those heights have left the record window."""
    rng = np.random.default_rng(18)
    b = 60.0
    times = T0 + b * np.arange(int(16 * DAY / b))
    day = (times - T0) // DAY
    hour = (times % DAY) / 3600.0
    means = np.array([daily_mean(t, 40.0) for t in times]) * np.where(day >= 6, 1 / 3, 1.0)
    early = (day == 8) & (hour >= 14) & (hour < 16)  # two days after the drop
    late = (day == 14) & (hour >= 14) & (hour < 16)  # the old heights are six days old
    means[early] *= 3 * 3  # three times the old afternoon
    means[late] *= 3  # the old afternoon again: three times the new one
    vol = nb_counts(rng, means, 0.05)
    det = registry.make("volume", bucket=b, warmup=DAY, min_volume=20)
    scores = feed(det, times, vol)
    alerts = scores >= BALANCED
    assert alerts[early].any() and alerts[late].any()
    assert np.sum(alerts & ~early & ~late) <= 1  # the drop itself is not news


@pytest.mark.parametrize("kept", [0.0, 0.1])
@pytest.mark.parametrize("start, hours", [(10, 8), (2, 8), (9, 12), (0, 24)])
def test_mentions_coming_back_after_a_feed_outage_page_nobody(kept, start, hours):
    """For hours none (or a tenth) of the mentions arrive, then the usual traffic again.

    The model finds such a silence impossible and takes it for a gap in the
    feed, not a drop to adopt. A tenth is a level the series could have: it
    is adopted after six hours, records scaled down with it, and the return
    to what the series did all week is judged against the records from
    before the drop. Either way the return is not news (it alerted on every
    brand the moment the feed came back, against a level and records
    adopted from the outage).
    """
    rng = np.random.default_rng(16)
    b = 60.0
    times = T0 + b * np.arange(int(12 * DAY / b))
    since = times - T0 - 8 * DAY
    down = (since >= start * 3600) & (since < (start + hours) * 3600)
    vol = nb_counts(rng, np.array([daily_mean(t, 40.0) for t in times]), 0.05)
    vol[down] = rng.binomial(vol[down].astype(int), kept)
    neg = rng.binomial(vol.astype(int), 0.12).astype(float)
    for signal, xs, ns in (("volume", vol, None), ("negative_volume", neg, vol)):
        det = registry.make(signal, bucket=b, warmup=DAY, min_volume=20)
        scores, fell = feed_falls(det, times, xs, ns)
        assert np.sum((scores >= BALANCED) & ~fell) == 0, signal
        # the outage is a fall of volume, reported once per twelve hours; no more
        alerts = np.flatnonzero(scores >= BALANCED)
        assert np.all(down[alerts]), signal
        if signal == "volume" and start >= 9:  # (the busy hours: at 2 a.m. it is too quiet)
            assert 1 <= len(alerts) <= math.ceil(hours / 12), alerts
    if kept:  # (a thinned feed's level comes back slowly at a couple of counts a bucket)
        return
    # and negative volume's (the last detector's) level is back where it was
    t = times[-1] + b
    assert det.expected(t) == pytest.approx(0.12 * daily_mean(t, 40.0), rel=0.3)
