"""The detectors the pipeline runs per signal, the alert thresholds and the severity tiers.

Why one place: every score is a calibrated ``1 − p``, so one threshold
serves every series and signal; the daemon asks here which detector to build
for a signal, which threshold a sensitivity preset means, and how severe a
score is.

Examples
--------
>>> det = make("volume", bucket=60, warmup=86400, min_volume=20)
>>> threshold_for("balanced")
0.999
>>> severity_for(0.9999, threshold_for("balanced")), severity_for(0.99, 0.999)
('high', None)
>>> threshold_at("volume", 0.999, 300), round(threshold_at("volume", 0.999, 3600), 5)
(0.999, 0.98807)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Literal

from detectors.base import Detector
from detectors.reach import ReachDetector
from detectors.sentiment import SentimentDetector
from detectors.share import ShareDetector
from detectors.volume import RECORD_CAP, SeasonalCountDetector

__all__ = ["SIGNALS", "THRESHOLDS", "Severity", "make", "severity_for", "threshold_at",
           "threshold_for"]

Severity = Literal["low", "high", "critical"]

#: Scalar signals ``make`` knows (``terms`` has its own detector, detectors.terms).
SIGNALS = ("volume", "negative_share", "negative_volume", "sentiment", "reach")

#: Tail probability per bucket at which each preset alerts. Deeper than about
#: ``1e-2`` the count detectors also require a recent record (see
#: SeasonalCountDetector), so on normal traffic an alert is far rarer than
#: ``p`` per bucket; ``balanced`` is the setting measured on NAB.
THRESHOLDS: dict[str, float] = {
    "fewer": 1.0 - 3e-4,
    "balanced": 1.0 - 1e-3,
    "more": 1.0 - 3e-3,
}

#: Each tier is this many times less likely than the alert threshold's ``p``.
HIGH_FACTOR = 10.0
CRITICAL_FACTOR = 1000.0

#: Count signals, whose presets are a budget per :data:`COUNT_PERIOD` (see threshold_at).
COUNTS = frozenset({"volume", "negative_volume"})
#: The count detector counts its chances in five-minute periods (its records).
COUNT_PERIOD = 300.0


def make(signal: str, *, bucket: float, warmup: float, min_volume: int,
         threshold: float = THRESHOLDS["balanced"], holidays: Iterable[dt.date] = ()) -> Detector:
    """Build the detector for one signal of one series.

    Parameters
    ----------
    signal
        One of :data:`SIGNALS`. What ``score_one(t, x, n)`` receives:
        ``volume`` x = mentions; ``negative_volume`` x = negative mentions
        (pass n = all mentions to let a launch's surge of everything not count
        as a surge of negativity);
        ``negative_share`` x = negative mentions, n = mentions; ``sentiment``
        x = mean sentiment (−1..1), n = scored mentions; ``reach`` x = largest
        follower count among the bucket's negative mentions (0 if none).
    bucket
        The series' bucket length in seconds (seasonal periods and half-lives
        are converted with it).
    warmup
        Seconds of data before a detector may alert.
    min_volume
        The floor: shares and means of fewer mentions are not scored, and a
        negative-volume alert needs at least a quarter of it in negatives.
    threshold
        The preset's alert threshold (for counts at coarse buckets, as
        :func:`threshold_at` spends it). Every detector holds an excursion
        from the tail probability that alerts: a storm alerts once, and a
        storm of counts, shares or sentiment again as it reaches each of its
        severity tiers.
    holidays
        Public holidays (UTC dates) the count signals expect as days of their
        own (see :class:`detectors.volume.SeasonalCountDetector`).
    """
    p = 1.0 - threshold_at(signal, threshold, bucket)
    # an excursion is held from its first alert on: held from a lower p, a storm that
    # builds up to the threshold is judged against its own quieter start and may never
    # alert; from a higher p, it alerts at every bucket past the threshold
    common = {"bucket": bucket, "warmup": warmup, "hold_p": p}
    tiers = tuple(p / f for f in (HIGH_FACTOR, CRITICAL_FACTOR))
    if signal in COUNTS:
        counts = {**common, "escalate": tiers, "holidays": holidays,
                  "record_cap": _spend(RECORD_CAP, _periods(signal, bucket))}
        if signal == "volume":
            return SeasonalCountDetector(**counts, falls=True)
        return SeasonalCountDetector(**counts, min_count=max(1, min_volume // 4),
                                     share_gate=True)
    if signal == "negative_share":
        return ShareDetector(**common, min_volume=min_volume, escalate=tiers)
    if signal == "sentiment":
        return SentimentDetector(**common, min_volume=min_volume, escalate=tiers)
    if signal == "reach":
        return ReachDetector(**common)
    raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")


def threshold_at(signal: str, threshold: float, bucket: float) -> float:
    """The score threshold of ``signal`` at buckets of ``bucket`` seconds.

    Why: a preset bounds how often normal traffic alerts, and people count
    that in time, not in buckets. The count detector already counts its
    chances in five-minute periods (its records), so at buckets of five
    minutes or less its ``p`` is per period and the threshold is the
    preset's. A coarser bucket spans several periods and spends their budget
    at once: ``1 − (1 − p)^periods``. Otherwise an hourly count had to beat
    twice its five-day record to alert, and four times to page, where a
    five-minute one needs 1.12 times (hourly sums of NAB's tweet counts:
    12 of 33 windows found at the preset, 22 with it spent per period).
    The share and sentiment detectors count their records' chances in hours
    and keep the preset's threshold at any bucket.
    """
    periods = _periods(signal, bucket)
    return threshold if periods == 1.0 else 1.0 - _spend(1.0 - threshold, periods)


def _periods(signal: str, bucket: float) -> float:
    """How many budget periods a bucket of ``signal`` spans (at least one)."""
    return max(bucket / COUNT_PERIOD, 1.0) if signal in COUNTS else 1.0


def _spend(p: float, periods: float) -> float:
    """The chance of at least one of ``periods`` independent chances of ``p``."""
    return p if periods == 1.0 else -math.expm1(periods * math.log1p(-p))


def threshold_for(sensitivity: str) -> float:
    """Score threshold of a sensitivity preset: ``fewer``, ``balanced`` (default), ``more``."""
    try:
        return THRESHOLDS[sensitivity]
    except KeyError:
        raise ValueError(f"unknown sensitivity {sensitivity!r}; expected one of "
                         f"{', '.join(THRESHOLDS)}") from None


def severity_for(score: float, threshold: float) -> Severity | None:
    """Severity tier of a score: None below the threshold, then low, high, critical.

    Tiers are in tail probability: ``high`` is ten times less likely than the
    threshold, ``critical`` a thousand times, so they mean the same on every
    signal.
    """
    if score < threshold:
        return None
    p, p_t = 1.0 - score, (1.0 - threshold) * (1.0 + 1e-6)  # tolerate 1 − x rounding
    if p <= p_t / CRITICAL_FACTOR:
        return "critical"
    if p <= p_t / HIGH_FACTOR:
        return "high"
    return "low"
