"""``crisisd drill``: rehearse a playbook on a simulated clock, sending nothing.

Teams rehearse crises the way they rehearse fire alarms. A drill injects a
synthetic crisis that matches the chosen playbook into the real incident
stage and engine, on a ``SimClock``, and prints the response as it would
unfold: who is assigned, every page, email and post with its text, the
approvals, escalations, updates, the resolution and the report. Only
targets marked ``test: true`` receive anything; by default nobody approves
or acknowledges, so the drill shows every escalation the playbook has.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.clock import SimClock
from daemon.config import Config, parse_duration
from daemon.domain import (
    Anomaly,
    Incident,
    IncidentEvent,
    Sample,
    SeriesKey,
    Severity,
    TimelineEntry,
)
from daemon.engine import Engine
from daemon.incidents import IncidentManager
from daemon.playbook import Playbook, PlaybookRouter, Playbooks, load
from daemon.store import Store
from daemon.timeline import TimelinePrinter

Emit = Callable[[list[IncidentEvent]], None]

_STORM = 6  # anomalous buckets in the synthetic storm
_STEP = 300.0  # seconds between them


@dataclass(frozen=True, slots=True)
class DrillOptions:
    """What to rehearse and how the people in it behave."""

    playbook: str
    brand: str = "acme"
    channel: str = "twitter"
    start: float | None = None
    approve_after: float | None = None
    ack_after: float | None = None
    keep: Path | None = None


def _term(pattern: str) -> str:
    """A concrete term from a match glob (``safety*`` → ``safety``)."""
    return pattern.replace("*", "").replace("?", "") or "crisis"


def synthetic(playbook: Playbook, options: DrillOptions, at: float, index: int) -> Anomaly:
    """An anomaly at ``at`` that ``playbook`` matches (and would open)."""
    m = playbook.match
    signal = next((s for s in m.signals if s not in ("terms",) and "*" not in s), "volume")
    terms = [_term(t) for t in (m.terms_all or m.terms_any[:1])]
    direction = -1 if signal == "sentiment" else 1
    severity = max(Severity.HIGH, Severity.parse(m.min_severity))
    volume = 60 + 80 * index
    text = f"Drill: is anyone from {options.brand} looking at this? " + " ".join(
        f"#{t.replace(' ', '')}" for t in terms
    )
    return Anomaly(
        series=SeriesKey(options.brand, options.channel),
        signal=signal,
        start=at - 60,
        end=at,
        observed=float(volume),
        expected=20.0,
        low=5.0,
        high=40.0,
        score=0.99999,
        severity=severity,
        direction=direction,
        tone="negative" if "negative" in m.tones else m.tones[0],
        category=m.categories[0] if m.categories else None,
        top_terms=[(t, 10 + 5 * index) for t in terms],
        samples=[Sample(f"drill-{index}", at, "drill_account", 12000, text, -0.8)],
        volume=volume,
        negative_share=min(0.9, 0.4 + 0.08 * index),
    )


async def run(config: Config, playbooks: Playbooks, options: DrillOptions) -> list[Incident]:
    """Rehearse ``options.playbook``; print the timeline; return the incidents.

    Actions for test targets are delivered before it returns.
    """
    playbook = playbooks.get(options.playbook)
    if playbook is None:
        known = ", ".join(p.name for p in playbooks)
        raise SystemExit(f"crisisd drill: no playbook {options.playbook!r} (known: {known})")
    start = options.start if options.start is not None else float(int(time.time() // 60) * 60)
    with tempfile.TemporaryDirectory(prefix="crisisd-drill-") as tmp:
        state = options.keep or Path(tmp)
        cfg = config.model_copy(update={"state_dir": state})
        printer = TimelinePrinter()
        clock = SimClock(start - 60)
        store = Store(state / "drill.sqlite")
        # Only this playbook runs, as if it were the best match.
        only = Playbooks([playbook])

        def on_entry(incident: Incident, entry: TimelineEntry) -> None:
            printer.entry(incident, entry)

        engine = Engine(cfg, only, clock, store, on_entry, drill=True)
        manager = IncidentManager(PlaybookRouter(only))

        def emit(events: list[IncidentEvent]) -> None:
            for event in events:
                printer.event(event)
                engine.handle(event)

        actions: list[tuple[float, str]] = []
        if options.ack_after is not None:
            actions.append((start + options.ack_after, "ack"))
        if options.approve_after is not None:
            actions.append((start + options.approve_after, "approve"))
        storm = [start + i * _STEP for i in range(_STORM)]
        quiet_end = storm[-1] + playbook.resolve.after_quiet
        moments = sorted({*storm, *(t for t, _ in actions), quiet_end})
        for at in moments:
            clock.advance(at)
            if at in storm:
                anomaly = synthetic(playbook, options, at, storm.index(at))
                emit(manager.observe(anomaly))
                for incident in engine.open_incidents():  # the chart and current figures
                    store.add_point(incident.id, at, anomaly.volume, anomaly.negative_share)
            for when, what in actions:
                if when == at:
                    _act(engine, manager, what, at, emit)
            emit(manager.tick(at))
        incidents = list(engine.incidents.values())
        delivered = await engine.outbox.deliver_due()
        await engine.stop(drain=0)
        store.close()
        printer.out.write(f"\n{delivered} actions delivered to test targets\n")
        if options.keep is None:
            printer.out.write("\n(drill state discarded; use --keep DIR to keep the report)\n")
        return incidents


def _act(engine: Engine, manager: IncidentManager, what: str, at: float, emit: Emit) -> None:
    """A rehearsed human action: acknowledge, or approve every pending statement."""
    for incident in list(manager.open.values()):
        if what == "ack":
            emit([manager.acknowledge(incident.id, at, "drill")])
            continue
        for st in engine.statements(incident.id):
            if st.status == "pending":
                engine.approve(incident.id, st.sid, st.sha256, "drill", force=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``crisisd drill`` options (registered by ``daemon.cli``)."""
    parser.add_argument("playbook", metavar="PLAYBOOK", help="name of the playbook to rehearse")
    parser.add_argument("--brand", default="acme")
    parser.add_argument("--channel", default="twitter")
    parser.add_argument("--playbooks", metavar="DIR", help="playbooks directory (default: config)")
    parser.add_argument("--approve-after", metavar="DURATION", help="approver acts after, e.g. 8m")
    parser.add_argument("--ack-after", metavar="DURATION", help="someone acknowledges after")
    parser.add_argument("--keep", metavar="DIR", help="keep the drill state and report here")


def command(args: argparse.Namespace, config: Config) -> int:
    """Run ``crisisd drill`` from parsed arguments."""
    directory = Path(args.playbooks) if args.playbooks else config.playbooks.dir
    warnings: list = []
    playbooks = load(directory, config, warnings=warnings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    options = DrillOptions(
        playbook=args.playbook,
        brand=args.brand,
        channel=args.channel,
        approve_after=parse_duration(args.approve_after) if args.approve_after else None,
        ack_after=parse_duration(args.ack_after) if args.ack_after else None,
        keep=Path(args.keep) if args.keep else None,
    )
    print(
        f"crisisd drill: rehearsing {args.playbook} for {args.brand} on {args.channel} "
        "(simulated clock; only test targets receive anything)"
    )
    asyncio.run(run(config, playbooks, options))
    return 0
