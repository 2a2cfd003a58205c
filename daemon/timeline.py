"""Rendering incidents for people (replay, demo) and for programs (``--json``).

The same incident events and timeline entries feed the structured log, the
console timeline and JSON lines; this module only decides how they look.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from daemon.domain import Anomaly, Incident, IncidentChange, IncidentEvent, TimelineEntry
from daemon.templating import span


def stamp(ts: float) -> str:
    """Event time as ``YYYY-MM-DD HH:MM UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _num(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def describe(a: Anomaly) -> str:
    """One line: what was seen against what was expected."""
    if a.signal.startswith("term:"):
        category = f" [{a.category}]" if a.category else ""
        return (
            f"term '{a.signal[5:]}'{category}: {_num(a.observed)} mentions "
            f"(expected {_num(a.expected)})"
        )
    over = f" over the last {span(a.window)}" if a.window else ""
    return (
        f"{a.signal}{over}: {_num(a.observed)} (expected {_num(a.expected)}, "
        f"normal {_num(a.low)}–{_num(a.high)})"
    )


def anomaly_dict(a: Anomaly) -> dict[str, Any]:
    """JSON-ready view of an anomaly."""
    return {
        "series": str(a.series),
        "signal": a.signal,
        "start": a.start,
        "end": a.end,
        "observed": a.observed,
        "expected": a.expected,
        "low": a.low,
        "high": a.high,
        "score": a.score,
        "severity": str(a.severity),
        "direction": a.direction,
        "tone": a.tone,
        "share": round(a.share, 3),
        "category": a.category,
        "window": a.window,
        "top_terms": a.top_terms,
        "samples": [
            {"author": s.author, "followers": s.followers, "text": s.text, "url": s.url}
            for s in a.samples
        ],
    }


def event_dict(event: IncidentEvent) -> dict[str, Any]:
    """JSON-ready view of an incident change."""
    incident = event.incident
    out: dict[str, Any] = {
        "event": f"incident_{event.change}",
        "at": event.at,
        "time": stamp(event.at),
        "incident": incident.id,
        "brand": incident.brand,
        "origin": str(incident.origin),
        "severity": str(incident.severity),
        "playbook": incident.playbook,
        "signals": sorted(incident.signals),
    }
    if event.anomaly is not None:
        out["anomaly"] = anomaly_dict(event.anomaly)
    if event.change == IncidentChange.RESOLVED:
        out["duration_s"] = event.at - incident.opened_at
    return out


class TimelinePrinter:
    """Prints incident changes and timeline entries as they happen."""

    def __init__(self, json_lines: bool = False, out: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.out = out or sys.stdout
        self.incidents: dict[str, Incident] = {}

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")

    def event(self, event: IncidentEvent) -> None:
        """Print one incident change."""
        self.incidents[event.incident.id] = event.incident
        if self.json_lines:
            self._write(json.dumps(event_dict(event)))
            return
        incident = event.incident
        head = f"{stamp(event.at)}  {event.change.upper():<17} {incident.id}"
        if event.change == IncidentChange.OPENED:
            playbook = f"  playbook {incident.playbook}" if incident.playbook else ""
            self._write(f"\n{head}  severity {incident.severity}{playbook}")
            self._anomaly(event.anomaly)
        elif event.change == IncidentChange.RESOLVED:
            minutes = (event.at - incident.opened_at) / 60
            self._write(
                f"{head}  after {minutes:.0f} min; signals: {', '.join(sorted(incident.signals))}"
            )
        elif event.anomaly is not None:
            self._write(f"{head}  {describe(event.anomaly)}  severity {incident.severity}")
        else:
            self._write(head)

    def _anomaly(self, a: Anomaly | None) -> None:
        if a is None:
            return
        self._write(f"    series    {a.series}  ({a.tone} tone, score {a.score:.6f})")
        self._write(f"    signal    {describe(a)}")
        if a.top_terms:
            terms = ", ".join(f"{t} ({n})" for t, n in a.top_terms[:8])
            self._write(f"    terms     {terms}")
        for s in a.samples[:3]:
            text = s.text if len(s.text) <= 110 else s.text[:107] + "..."
            self._write(f"    sample    @{s.author} ({s.followers:,} followers): {text}")

    def entry(self, incident: Incident, entry: TimelineEntry) -> None:
        """Print one line of an incident's response (roles, pages, posts...)."""
        if self.json_lines:
            record = {"event": entry.kind, "at": entry.ts, "time": stamp(entry.ts)}
            record |= {"incident": incident.id, "message": entry.message, **entry.data}
            self._write(json.dumps(record, default=str))
            return
        message = entry.message.replace("\n", "\n" + " " * 42)
        self._write(f"{stamp(entry.ts)}    {entry.kind:<17} {message}")
