"""Anomalies into incidents: one incident per crisis, not one page per bucket.

While an incident is open, further anomalies of its brand enrich it (new
signals, a higher severity — never a lower one) instead of opening another.
It resolves by itself once its brand's signals have been back to normal for
its quiet period, measured on event time, and its key re-opens as a new
incident only after a cooldown.

Which anomalies open which incident is the router's decision (the playbooks
provide one); without playbooks, ``BrandRouter`` groups by brand and ignores
positive spikes, which are anomalies but not crises.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from daemon.domain import (
    Anomaly,
    Incident,
    IncidentChange,
    IncidentEvent,
    IncidentStatus,
    TimelineEntry,
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where an anomaly belongs.

    ``key`` is the dedup key of a new incident; ``merge_into`` names an open
    incident to enrich instead (with ``playbook`` differing from the
    incident's, the incident switches playbook).
    """

    playbook: str
    key: str
    quiet: float
    cooldown: float
    merge_into: str | None = None


class Router(Protocol):
    """Decides whether and where an anomaly becomes part of an incident."""

    def route(self, anomaly: Anomaly, open_incidents: list[Incident]) -> Route | None:
        """The route for ``anomaly``; ``None`` when it is no crisis."""


def is_crisis_like(anomaly: Anomaly) -> bool:
    """Whether an anomaly points at trouble rather than good news.

    More volume is a crisis unless the bucket reads positive (a launch);
    fewer mentions, a falling negative share or rising sentiment are not.
    """
    if anomaly.tone == "positive":
        return False
    if anomaly.signal == "sentiment":
        return anomaly.direction < 0
    return anomaly.direction > 0


@dataclass(frozen=True, slots=True)
class BrandRouter:
    """The router used without playbooks: one incident per brand."""

    quiet: float
    cooldown: float

    def route(self, anomaly: Anomaly, open_incidents: list[Incident]) -> Route | None:
        """Merge into the brand's open incident, or open one keyed by brand."""
        if not is_crisis_like(anomaly):
            return None
        brand = anomaly.series.brand
        merge = open_incidents[0].id if open_incidents else None
        return Route("", brand, self.quiet, self.cooldown, merge)


def incident_id(brand: str, opened_at: float) -> str:
    """A readable id that is the same in replay and live for the same input."""
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(opened_at))
    return f"{brand}-{stamp}"


class IncidentManager:
    """Keeps the open incidents and turns anomalies and ticks into changes."""

    def __init__(
        self,
        router: Router,
        silenced: Callable[[Anomaly], object | None] | None = None,
    ) -> None:
        self.router = router
        self.silenced = silenced
        self.open: dict[str, Incident] = {}
        self._routes: dict[str, Route] = {}
        self._resolved_at: dict[str, float] = {}
        self.counts: Counter[str] = Counter()

    def restore(self, incidents: list[Incident], routes: dict[str, Route]) -> None:
        """Resume open incidents after a restart (from the store)."""
        for incident in incidents:
            self.open[incident.id] = incident
            self._routes[incident.id] = routes[incident.id]

    def restore_resolved(self, resolved: dict[str, float]) -> None:
        """Resume cooldowns after a restart: key → when its incident resolved."""
        for key, at in resolved.items():
            if at > self._resolved_at.get(key, float("-inf")):
                self._resolved_at[key] = at

    def _brand_open(self, brand: str) -> list[Incident]:
        return [i for i in self.open.values() if i.brand == brand]

    def observe(self, anomaly: Anomaly) -> list[IncidentEvent]:
        """Fold one anomaly into the incidents; the changes it caused."""
        if self.silenced is not None and self.silenced(anomaly):
            self.counts["suppressed"] += 1
            return []
        route = self.router.route(anomaly, self._brand_open(anomaly.series.brand))
        if route is None:
            self.counts["not_routed"] += 1
            return []
        at = anomaly.end
        if route.merge_into is not None and route.merge_into in self.open:
            return self._enrich(self.open[route.merge_into], anomaly, route, at)
        for incident in self.open.values():
            if incident.key == route.key:
                return self._enrich(incident, anomaly, route, at)
        resolved = self._resolved_at.get(route.key)
        if resolved is not None and at < resolved + route.cooldown:
            self.counts["cooldown"] += 1
            return []
        incident = Incident(
            id=incident_id(anomaly.series.brand, at),
            key=route.key,
            brand=anomaly.series.brand,
            origin=anomaly.series,
            opened_at=at,
            severity=anomaly.severity,
            playbook=route.playbook,
            signals={anomaly.signal},
            anomalies=[anomaly],
            last_anomaly_at=at,
        )
        base, n = incident.id, 1
        while incident.id in self.open:  # two keys of one brand in the same minute
            n += 1
            incident.id = f"{base}-{n}"
        incident.timeline.append(
            TimelineEntry(at, "opened", f"{anomaly.signal} on {anomaly.series}", {})
        )
        self.open[incident.id] = incident
        self._routes[incident.id] = route
        self.counts["opened"] += 1
        return [IncidentEvent(IncidentChange.OPENED, at, incident, anomaly)]

    def _enrich(
        self, incident: Incident, anomaly: Anomaly, route: Route, at: float
    ) -> list[IncidentEvent]:
        events = []
        incident.last_anomaly_at = at
        if route.playbook and route.playbook != incident.playbook:
            old = incident.playbook
            incident.playbook = route.playbook
            self._routes[incident.id] = route
            incident.timeline.append(
                TimelineEntry(at, "playbook_switched", f"{old} → {route.playbook}",
                              {"severity": str(incident.severity)})
            )
            events.append(IncidentEvent(IncidentChange.PLAYBOOK_SWITCHED, at, incident, anomaly))
        if anomaly.severity > incident.severity:
            incident.severity = anomaly.severity
            incident.timeline.append(
                TimelineEntry(at, "severity_raised", f"severity {anomaly.severity}", {})
            )
            events.append(IncidentEvent(IncidentChange.SEVERITY_RAISED, at, incident, anomaly))
        new_signal = anomaly.signal not in incident.signals
        if new_signal:
            incident.signals.add(anomaly.signal)
            if len(incident.anomalies) < 50:
                incident.anomalies.append(anomaly)
            events.append(IncidentEvent(IncidentChange.UPDATED, at, incident, anomaly))
        self.counts["merged"] += 1
        return events

    def has_open(self, brand: str) -> bool:
        """Whether the brand has an open incident (its storm is being watched)."""
        return any(i.brand == brand for i in self.open.values())

    def keep_alive(self, brand: str, at: float) -> None:
        """A signal of the brand is still abnormal: its incidents are not quiet."""
        for incident in self.open.values():
            if incident.brand == brand and at > incident.last_anomaly_at:
                incident.last_anomaly_at = at

    def tick(self, now: float) -> list[IncidentEvent]:
        """Resolve incidents whose quiet period has passed by event time ``now``."""
        events = []
        for incident in list(self.open.values()):
            route = self._routes[incident.id]
            if now >= incident.last_anomaly_at + route.quiet:
                events.append(self.resolve(incident.id, now, "quiet period"))
        return events

    def acknowledge(self, incident_id: str, at: float, by: str) -> IncidentEvent:
        """Someone took the incident (stops acknowledgement escalations)."""
        incident = self.open[incident_id]
        incident.status = IncidentStatus.ACKNOWLEDGED
        incident.timeline.append(TimelineEntry(at, "acknowledged", f"by {by}", {"by": by}))
        return IncidentEvent(IncidentChange.ACKNOWLEDGED, at, incident)

    def resolve(self, incident_id: str, at: float, reason: str) -> IncidentEvent:
        """Close an incident now (quiet period over, or a person resolved it)."""
        incident = self.open.pop(incident_id)
        route = self._routes.pop(incident_id)
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at = at
        incident.timeline.append(TimelineEntry(at, "resolved", reason, {}))
        self._resolved_at[route.key] = at
        self.counts["resolved"] += 1
        return IncidentEvent(IncidentChange.RESOLVED, at, incident)
