"""Factory for the detectors the pipeline runs, with thresholds and severity tiers."""

from __future__ import annotations

from typing import Literal

from detectors.base import Detector
from detectors.volume import SeasonalCountDetector

Severity = Literal["low", "high", "critical"]

THRESHOLDS: dict[str, float] = {"fewer": 1 - 3e-4, "balanced": 1 - 1e-3, "more": 1 - 3e-3}


def make(signal: str, *, bucket: float, warmup: float, min_volume: int) -> Detector:
    """Build the detector for one signal of one series."""
    if signal in ("volume", "negative_volume"):
        return SeasonalCountDetector(bucket=bucket, warmup=warmup)
    raise ValueError(f"unknown signal {signal!r}")


def threshold_for(sensitivity: str) -> float:
    """Score threshold of a sensitivity preset."""
    return THRESHOLDS[sensitivity]
