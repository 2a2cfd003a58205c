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
"""

from __future__ import annotations

from typing import Literal

from detectors.base import Detector
from detectors.reach import ReachDetector
from detectors.sentiment import SentimentDetector
from detectors.share import ShareDetector
from detectors.volume import SeasonalCountDetector

__all__ = ["SIGNALS", "THRESHOLDS", "Severity", "make", "severity_for", "threshold_for"]

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


def make(signal: str, *, bucket: float, warmup: float, min_volume: int,
         threshold: float = THRESHOLDS["balanced"]) -> Detector:
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
        The alert threshold: a storm of counts, shares or sentiment alerts
        again as it reaches each of its severity tiers.
    """
    tiers = tuple((1.0 - threshold) / f for f in (HIGH_FACTOR, CRITICAL_FACTOR))
    if signal == "volume":
        return SeasonalCountDetector(bucket=bucket, warmup=warmup, escalate=tiers)
    if signal == "negative_volume":
        return SeasonalCountDetector(bucket=bucket, warmup=warmup, escalate=tiers,
                                     min_count=max(1, min_volume // 4), share_gate=True)
    if signal == "negative_share":
        return ShareDetector(bucket=bucket, warmup=warmup, min_volume=min_volume,
                             escalate=tiers)
    if signal == "sentiment":
        return SentimentDetector(bucket=bucket, warmup=warmup, min_volume=min_volume,
                                 escalate=tiers)
    if signal == "reach":
        return ReachDetector(bucket=bucket, warmup=warmup)
    raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")


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
