"""The detect stage: closed buckets in, explained anomalies out.

Each series gets one detector per enabled signal (``detectors.registry``),
created on its first bucket. For every bucket each detector scores the new
value against its baseline *before* learning it, so the spike is judged by
the past, not by itself. An anomaly is raised only once a detector is warm
and its calibrated score crosses the configured threshold.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from daemon.config import DetectionConfig
from daemon.domain import Anomaly, Bucket, SeriesKey, Severity
from detectors import registry
from detectors.base import Detector
from detectors.terms import TermDetector

log = structlog.get_logger("crisisd.detect")

ELEVATED = 0.9999
"""Score above which a signal is not yet back to normal (p < 1e-4).

Incidents resolve after a quiet period "back to normal": a storm that goes
on at scores under the alert threshold keeps its incident open."""

ScoreSink = Callable[[SeriesKey, str, Bucket, float, float, bool], None]
"""Receives (series, signal, bucket, value, score, alert) for every scored bucket."""


def _value(signal: str, b: Bucket) -> tuple[float, float, float]:
    """(x, n, shown value) a signal's detector is fed from a bucket."""
    if signal == "volume":
        return b.volume, 1.0, b.volume
    if signal == "negative_share":
        return b.negative, b.volume, b.negative_share
    if signal == "negative_volume":
        # n = volume lets the detector see a launch that doubles everything,
        # complaints included, as no rise in negativity.
        return b.negative, b.volume, b.negative
    if signal == "sentiment":
        return b.mean_sentiment, b.sentiment_n, b.mean_sentiment
    if signal == "reach":
        return b.max_negative_followers, 1.0, b.max_negative_followers
    raise ValueError(f"unknown signal {signal!r}")


def signals_for(bucket: Bucket, enabled: list[str]) -> list[str]:
    """The scalar signals a series can carry, given what its source provides."""
    out = []
    for signal in enabled:
        if signal == "terms":
            continue
        if bucket.aggregated and signal == "reach":
            continue
        negative = signal in ("negative_share", "negative_volume")
        if bucket.aggregated and negative and not bucket.negative_known:
            continue
        if bucket.aggregated and signal == "sentiment" and not bucket.sentiment_n:
            continue
        out.append(signal)
    return out


def tone(bucket: Bucket) -> str:
    """How the bucket reads: ``negative``, ``positive`` or ``neutral``."""
    if not bucket.sentiment_n:
        return "neutral"
    if bucket.negative and bucket.negative >= bucket.positive:
        return "negative"
    if bucket.positive >= 2 * bucket.negative and bucket.mean_sentiment >= 0.05:
        return "positive"
    return "neutral"


@dataclass(slots=True)
class SeriesDetectors:
    """Everything learnt about one series; pickled into snapshots."""

    signals: dict[str, Detector]
    terms: TermDetector | None
    warm_logged: set[str] = field(default_factory=set)


class DetectStage:
    """Scores every closed bucket on every enabled signal of its series."""

    def __init__(
        self,
        cfg: DetectionConfig,
        evidence_terms: int = 10,
        on_score: ScoreSink | None = None,
    ) -> None:
        self.cfg = cfg
        self.threshold = cfg.threshold or registry.threshold_for(cfg.sensitivity)
        self.evidence_terms = evidence_terms
        self.on_score = on_score
        self.series: dict[SeriesKey, SeriesDetectors] = {}

    def _detectors(self, bucket: Bucket) -> SeriesDetectors:
        state = self.series.get(bucket.series)
        if state is None:
            length = bucket.end - bucket.start
            signals = {
                s: registry.make(
                    s, bucket=length, warmup=self.cfg.warmup, min_volume=self.cfg.min_volume
                )
                for s in signals_for(bucket, self.cfg.signals)
            }
            terms = None
            if "terms" in self.cfg.signals and not bucket.aggregated:
                terms = TermDetector(
                    bucket=length, warmup=self.cfg.warmup, lexicon=self.cfg.lexicon
                )
            state = SeriesDetectors(signals, terms)
            self.series[bucket.series] = state
            log.info(
                "detectors warming up",
                series=str(bucket.series),
                signals=sorted(signals) + (["terms"] if terms else []),
                warmup_s=self.cfg.warmup,
            )
        return state

    def process(self, bucket: Bucket, watch: bool = False) -> tuple[list[Anomaly], bool]:
        """Score then learn one bucket: the anomalies it raised, and — when
        ``watch`` (its brand has an open incident) — whether any signal is still
        elevated against its baseline (the storm is not over)."""
        state = self._detectors(bucket)
        t = bucket.start
        elevated = False
        fired: list[tuple[str, float, float, Detector | None, str | None, float]] = []
        for signal, detector in state.signals.items():
            x, n, shown = _value(signal, bucket)
            score = detector.score_one(t, x, n)
            warm = detector.warm
            alert = warm and score >= self.threshold
            if watch and warm and not elevated:
                elevated = score >= ELEVATED or self._beyond(signal, detector, bucket, shown)
            detector.learn_one(t, x, n)
            if self.on_score is not None:
                self.on_score(bucket.series, signal, bucket, shown, score, alert)
            if warm and signal not in state.warm_logged:
                state.warm_logged.add(signal)
                log.info("baseline ready", series=str(bucket.series), signal=signal)
            if alert:
                fired.append((signal, shown, score, detector, None, 0.0))
        if state.terms is not None:
            for ts in state.terms.score_terms(t, bucket.terms, bucket.volume):
                if ts.score >= self.threshold:
                    fired.append(
                        (f"term:{ts.term}", ts.observed, ts.score, None, ts.category, ts.expected)
                    )
            state.terms.learn_terms(t, bucket.terms, bucket.volume)
        if not fired:
            return [], elevated
        return self._explain(bucket, fired), True

    def _beyond(self, signal: str, detector: Detector, bucket: Bucket, shown: float) -> bool:
        """Whether the value is outside its baseline's band in the crisis direction.

        Detectors alert once per excursion; this asks the baseline itself, so a
        storm that goes on without re-alerting still keeps its incident open.
        """
        if signal == "reach":
            return False
        if signal in ("negative_share", "sentiment") and bucket.volume < self.cfg.min_volume:
            return False
        band = detector.band(bucket.start, 1.0 - ELEVATED)
        return shown < band.low if signal == "sentiment" else shown > band.high

    def _explain(
        self,
        bucket: Bucket,
        fired: list[tuple[str, float, float, Detector | None, str | None, float]],
    ) -> list[Anomaly]:
        surprise = {s: -math.log(max(1.0 - score, 1e-300)) for s, _, score, *_ in fired}
        total = sum(surprise.values()) or 1.0
        top = heapq.nlargest(self.evidence_terms, bucket.terms.items(), key=lambda kv: kv[1])
        bucket_tone = tone(bucket)
        out = []
        p = 1.0 - self.threshold
        for signal, shown, score, detector, category, term_expected in fired:
            if detector is not None:
                band = detector.band(bucket.start, p)
                expected, low, high = band.expected, band.low, band.high
            else:
                expected, low, high = term_expected, 0.0, term_expected
            level = registry.severity_for(score, self.threshold) or "low"
            out.append(
                Anomaly(
                    series=bucket.series,
                    signal=signal,
                    start=bucket.start,
                    end=bucket.end,
                    observed=shown,
                    expected=expected,
                    low=low,
                    high=high,
                    score=score,
                    severity=Severity.parse(level),
                    direction=1 if shown >= expected else -1,
                    tone=bucket_tone,
                    share=surprise[signal] / total,
                    category=category,
                    top_terms=top,
                    samples=list(bucket.samples),
                    volume=bucket.volume,
                    negative_share=bucket.negative_share,
                )
            )
        return out
