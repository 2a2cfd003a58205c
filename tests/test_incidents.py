"""Anomalies into incidents: dedup per brand, severity, quiet period, cooldown."""

from __future__ import annotations

from daemon.domain import Anomaly, IncidentChange, SeriesKey, Severity
from daemon.incidents import BrandRouter, IncidentManager


def anomaly(end: float, signal: str = "volume", severity: Severity = Severity.HIGH,
            tone: str = "negative", direction: int = 1, brand: str = "acme") -> Anomaly:
    return Anomaly(series=SeriesKey(brand, "x"), signal=signal, start=end - 60, end=end,
                   observed=100, expected=10, low=0, high=20, score=0.9999999,
                   severity=severity, direction=direction, tone=tone)


def manager(quiet: float = 600, cooldown: float = 300) -> IncidentManager:
    return IncidentManager(BrandRouter(quiet=quiet, cooldown=cooldown))


def test_one_incident_per_brand_while_it_lasts():
    m = manager()
    [opened] = m.observe(anomaly(60))
    assert opened.change == IncidentChange.OPENED
    assert m.observe(anomaly(120)) == []                    # same signal: folded in
    [update] = m.observe(anomaly(180, signal="negative_share"))
    assert update.change == IncidentChange.UPDATED
    assert update.incident is opened.incident
    assert m.observe(anomaly(180, brand="other"))[0].incident is not opened.incident


def test_severity_rises_and_never_falls():
    m = manager()
    m.observe(anomaly(60, severity=Severity.HIGH))
    [raised] = m.observe(anomaly(120, severity=Severity.CRITICAL))
    assert raised.change == IncidentChange.SEVERITY_RAISED
    m.observe(anomaly(180, severity=Severity.LOW))
    assert raised.incident.severity == Severity.CRITICAL


def test_positive_spikes_and_drops_open_nothing():
    m = manager()
    assert m.observe(anomaly(60, tone="positive")) == []
    assert m.observe(anomaly(60, direction=-1)) == []
    assert m.observe(anomaly(60, signal="sentiment", direction=1)) == []
    assert m.observe(anomaly(60, signal="sentiment", direction=-1))


def test_auto_resolve_after_quiet_period_then_cooldown():
    m = manager(quiet=600, cooldown=300)
    [opened] = m.observe(anomaly(60))
    m.observe(anomaly(300))
    assert m.tick(899) == []
    [resolved] = m.tick(900)                                 # 300 + 600
    assert resolved.change == IncidentChange.RESOLVED
    assert resolved.incident.resolved_at == 900
    assert m.observe(anomaly(1000)) == []                    # within cooldown
    [again] = m.observe(anomaly(1200))
    assert again.change == IncidentChange.OPENED
    assert again.incident.id != opened.incident.id


def test_silenced_anomalies_are_counted_not_opened():
    m = IncidentManager(BrandRouter(600, 300), silenced=lambda a: a.series.brand == "acme")
    assert m.observe(anomaly(60)) == []
    assert m.counts["suppressed"] == 1
