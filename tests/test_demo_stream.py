"""The generated mention stream has the rhythm it claims (what the scenario bench measures on)."""

from __future__ import annotations

import numpy as np

from daemon import demo

HOUR = 3600.0


def hourly_log_ratio(traffic: demo.Traffic, days: float = 3.0) -> np.ndarray:
    """log(hourly mentions / the hour's expected mentions) of a normal stream."""
    counts = np.zeros(int(days * 24))
    for m in demo.mentions(seed=3, days=days, storm=None, traffic=traffic):
        counts[int((m["ts"] - demo.START) // HOUR)] += 1
    hours = demo.START + HOUR * np.arange(len(counts))
    expected = [60.0 * np.mean([traffic.rate(t + 60.0 * i, demo.START) for i in range(60)])
                for t in hours]
    return np.log(counts / np.array(expected))


def robust_sd(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def test_the_rate_drifts_for_hours_as_real_mention_streams_do():
    smooth = hourly_log_ratio(demo.Traffic(peak=20.0, night=0.3))
    drifting = hourly_log_ratio(demo.Traffic(peak=20.0, night=0.3, wander=0.3))
    # minute-by-minute over-dispersion averages out within the hour ...
    assert robust_sd(smooth) < 0.1
    # ... the drift does not: about its standard deviation, and correlated an hour apart
    assert 0.18 < robust_sd(drifting) < 0.45
    assert np.corrcoef(drifting[:-1], drifting[1:])[0, 1] > 0.4
