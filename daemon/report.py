"""The post-crisis report: what happened, when, and how fast we answered.

Written to the state directory when an incident resolves, as Markdown (to
paste into a review document) and as self-contained HTML with an inline SVG
chart of volume and negative share over the incident, the detection and
every action marked — the picture a post-mortem starts from. The key
figure is time to first public answer, measured against the customer-care
bar (15 minutes good, 60 at most).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from daemon.domain import Incident, TimelineEntry
from daemon.templating import span, stamp

# Timeline kinds drawn as markers on the chart, with their colour.
MARKS = {
    "opened": "#d62728",
    "role_assigned": "#7f7f7f",
    "page": "#ff7f0e",
    "email": "#8c564b",
    "chat": "#17becf",
    "approval_requested": "#bcbd22",
    "approval_granted": "#2ca02c",
    "statement_posted": "#2ca02c",
    "escalation": "#d62728",
    "update": "#9467bd",
    "playbook_switched": "#e377c2",
    "acknowledged": "#1f77b4",
    "resolved": "#1f77b4",
}

Point = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class ReportPaths:
    """The files written for one incident."""

    markdown: Path
    html: Path
    chart: Path


def _first(timeline: list[TimelineEntry], kind: str) -> TimelineEntry | None:
    return next((e for e in timeline if e.kind == kind), None)


def figures(incident: Incident, at: float) -> list[tuple[str, str]]:
    """The headline figures, as (label, value) rows."""
    opened = incident.opened_at
    end = incident.resolved_at or at
    posted = _first(incident.timeline, "statement_posted")
    acked = _first(incident.timeline, "acknowledged")
    peak = max((a.volume for a in incident.anomalies), default=0)
    neg = max((a.negative_share for a in incident.anomalies), default=0.0)
    answer = "none posted"
    if posted is not None:
        delay = posted.ts - opened
        verdict = "within 15m" if delay <= 900 else "within 60m" if delay <= 3600 else "LATE"
        answer = f"{span(delay)} ({verdict})"
    return [
        ("Brand", incident.brand),
        ("Origin", str(incident.origin)),
        ("Playbook", incident.playbook or "none"),
        ("Severity", str(incident.severity)),
        ("Signals", ", ".join(sorted(incident.signals))),
        ("Opened", stamp(opened)),
        ("Resolved", stamp(end)),
        ("Duration", span(end - opened)),
        ("Time to acknowledge", span(acked.ts - opened) if acked else "never"),
        ("Time to first public answer", answer),
        ("Peak volume per bucket", str(peak)),
        ("Peak negative share", f"{neg:.0%}"),
    ]


MAX_BARS = 240
"""A week of one-minute buckets is drawn as at most this many bars (peak volume per bar)."""


def _points(incident: Incident, points: list[Point]) -> list[Point]:
    pts = points or sorted({(a.end, float(a.volume), a.negative_share) for a in incident.anomalies})
    if len(pts) <= MAX_BARS:
        return pts
    size = -(-len(pts) // MAX_BARS)
    out = []
    for i in range(0, len(pts), size):
        group = pts[i : i + size]
        peak = max(group, key=lambda p: p[1])  # a spike must stay visible
        share = sum(p[2] for p in group) / len(group)
        out.append((peak[0], peak[1], share))
    return out


def chart(incident: Incident, points: list[Point], at: float, width: int = 760) -> str:
    """An inline SVG: volume (bars), negative share (line), actions (markers)."""
    height, left, right, top, bottom = 260, 50, 50, 20, 40
    pts = _points(incident, points)
    t0 = min([incident.opened_at, *(p[0] for p in pts)]) - 60
    t1 = max([incident.resolved_at or at, *(p[0] for p in pts)]) + 60
    vmax = max([1.0, *(p[1] for p in pts)])
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def yv(v: float) -> float:
        return top + plot_h - v / vmax * plot_h

    def ys(s: float) -> float:
        return top + plot_h - s * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11" '
        'role="img" aria-label="volume and negative share over the incident">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    bar = max(2.0, plot_w / max(len(pts), 1) * 0.6)
    for ts, volume, _ in pts:
        out.append(
            f'<rect x="{x(ts) - bar / 2:.1f}" y="{yv(volume):.1f}" width="{bar:.1f}" '
            f'height="{top + plot_h - yv(volume):.1f}" fill="#9ecae1">'
            f"<title>{stamp(ts)}: {volume:.0f} mentions</title></rect>"
        )
    if pts:
        line = " ".join(f"{x(ts):.1f},{ys(share):.1f}" for ts, _, share in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="#d62728" stroke-width="2"/>')
    for entry in incident.timeline:
        colour = MARKS.get(entry.kind)
        if colour is None:
            continue
        mx = x(entry.ts)
        label = html.escape(f"{stamp(entry.ts)} {entry.kind}: {entry.message[:200]}")
        out.append(
            f'<g><line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + plot_h}" '
            f'stroke="{colour}" stroke-dasharray="3,3"/>'
            f'<circle cx="{mx:.1f}" cy="{top + 6}" r="4" fill="{colour}">'
            f"<title>{label}</title></circle></g>"
        )
    out += [
        f'<text x="{left}" y="{height - 22}">{html.escape(stamp(t0))}</text>',
        f'<text x="{width - right}" y="{height - 22}" text-anchor="end">'
        f"{html.escape(stamp(t1))}</text>",
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{vmax:.0f}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<text x="{width - right + 6}" y="{top + 10}" fill="#d62728">100%</text>',
        f'<text x="{width - right + 6}" y="{top + plot_h}" fill="#d62728">0%</text>',
        f'<text x="{left}" y="{height - 6}" fill="#3182bd">■ volume per bucket</text>',
        f'<text x="{left + 150}" y="{height - 6}" fill="#d62728">— negative share</text>',
        f'<text x="{left + 280}" y="{height - 6}">┆ detection and actions (hover)</text>',
        "</svg>",
    ]
    return "\n".join(out)


def evidence(incident: Incident, limit: int = 5) -> list[tuple[str, int, str, str]]:
    """The most-read mentions kept as evidence: (author, followers, text, url)."""
    seen: dict[str, tuple[str, int, str, str]] = {}
    for anomaly in incident.anomalies:
        for s in anomaly.samples:
            seen.setdefault(s.id, (s.author, s.followers, s.text, s.url))
    return sorted(seen.values(), key=lambda m: -m[1])[:limit]


def markdown(incident: Incident, at: float, names: dict[str, str] | None = None) -> str:
    """The report as Markdown; ``names`` maps roles to their holders' names."""
    names = names or dict(incident.roles)
    lines = [f"# Post-crisis report: {incident.id}", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in figures(incident, at)]
    if incident.roles:
        lines += ["", "## Roles", ""]
        lines += [
            f"- **{role}**: {names.get(role, holder)}" for role, holder in incident.roles.items()
        ]
    mentions = evidence(incident)
    if mentions:
        lines += ["", "## Most-read mentions", ""]
        for author, followers, text, url in mentions:
            quoted = text.replace("\n", " ")
            lines.append(f"- @{author} ({followers} followers): {quoted} {url}".rstrip())
    lines += ["", "## Timeline", "", "| Time | Event | Detail |", "|---|---|---|"]
    for e in incident.timeline:
        detail = e.message.replace("\n", " ").replace("|", "\\|")
        lines.append(f"| {stamp(e.ts)} | {e.kind} | {detail} |")
    return "\n".join(lines) + "\n"


def html_report(
    incident: Incident, points: list[Point], at: float, names: dict[str, str] | None = None
) -> str:
    """The report as one self-contained HTML page (inline SVG, no scripts)."""
    names = names or dict(incident.roles)
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in figures(incident, at))
    roles = "".join(
        f"<li><b>{esc(role)}</b>: {esc(names.get(role, holder))}</li>"
        for role, holder in incident.roles.items()
    )
    mentions = "".join(
        f"<li>@{esc(author)} ({followers} followers): {esc(text)}"
        + (f' <a href="{esc(url)}">link</a>' if url.startswith(("https://", "http://")) else "")
        + "</li>"
        for author, followers, text, url in evidence(incident)
    )
    timeline = "".join(
        f"<tr><td>{esc(stamp(e.ts))}</td><td>{esc(e.kind)}</td>"
        f"<td><pre>{esc(e.message)}</pre></td></tr>"
        for e in incident.timeline
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Post-crisis report {esc(incident.id)}</title><style>"
        "body{font-family:sans-serif;max-width:60rem;margin:2rem auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 8px;"
        "text-align:left;vertical-align:top}pre{margin:0;white-space:pre-wrap}"
        "</style></head><body>"
        f"<h1>Post-crisis report: {esc(incident.id)}</h1>"
        f"<table>{rows}</table>"
        f"<h2>Volume and negative share</h2>{chart(incident, points, at)}"
        f"<h2>Roles</h2><ul>{roles}</ul>"
        f"<h2>Most-read mentions</h2><ul>{mentions}</ul>"
        f"<h2>Timeline</h2><table><tr><th>Time</th><th>Event</th><th>Detail</th></tr>"
        f"{timeline}</table></body></html>\n"
    )


def write(
    incident: Incident,
    points: list[Point],
    directory: Path,
    at: float,
    names: dict[str, str] | None = None,
) -> ReportPaths:
    """Write ``<id>.md``, ``<id>.html`` and the chart as ``<id>.svg`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(*(directory / f"{incident.id}.{ext}" for ext in ("md", "html", "svg")))
    paths.markdown.write_text(markdown(incident, at, names), encoding="utf-8")
    paths.chart.write_text(chart(incident, points, at), encoding="utf-8")  # for email clients
    paths.html.write_text(html_report(incident, points, at, names), encoding="utf-8")
    return paths
