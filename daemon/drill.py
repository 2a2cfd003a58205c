"""``crisisd drill``: rehearse a playbook through the whole pipeline, sending nothing.

Teams rehearse crises the way they rehearse fire alarms. A drill generates
a synthetic mention stream for the brand and channel — a quiet day to warm
the detectors up, then a storm whose words fit the chosen playbook — and
replays it through the real pipeline (windows, detectors, incidents) and the
engine on a simulated clock. It prints the response as it would unfold: the
detection, who is assigned, every page, email and post with its text, the
approvals, escalations, updates, the resolution and the report. So a drill
also checks that this kind of crisis is detected at all. Only targets marked
``test: true`` receive anything; by default nobody approves or acknowledges,
so the drill shows every escalation the playbook has.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from daemon import backtest, demo
from daemon.config import Config, parse_duration
from daemon.domain import Incident, IncidentChange
from daemon.playbook import Playbook, load
from daemon.store import Store
from daemon.timeline import TimelinePrinter
from daemon.yamlfile import Problem
from detectors.terms import load_lexicon

QUIET_BEFORE = 6 * 3600.0  # normal traffic after the warm-up, before the storm
STORM = 3 * 3600.0  # how long the storm lasts; then the playbook's quiet period, and an hour
SPARK_FOLLOWERS = 250_000  # the account that sets the storm off
EXCEPTIONAL_FOLLOWERS = 5_000_000  # ... for a playbook that listens to reach: far past the usual

COMPLAINTS = [
    ("{b} just lost a loyal customer. Worst experience ever, never again", -0.8),
    ("Everyone stop buying from {b}. Absolutely terrible, they ignore us", -0.9),
    ("Cannot believe how {b} treated me today. Disgraceful service", -0.8),
    ("{b} is a joke. Hours on hold and nobody cares", -0.7),
]
"""What a storm without crisis words sounds like (catch-all, viral complaint)."""


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


def storm_words(playbook: Playbook) -> list[str]:
    """Concrete words the playbook listens for: its terms, else its lexicon categories."""
    m = playbook.match
    words = [w for w in (*m.terms_all, *m.terms_any) if not any(c in w for c in "*?[")]
    if not words and m.categories:
        lexicon = load_lexicon()
        words = [t for t, c in lexicon.category.items() if c in m.categories]
    return words[:6]


def storm(playbook: Playbook, options: DrillOptions, at: float) -> demo.Storm:
    """A storm the playbook should catch, set off by one high-reach mention.

    For a playbook that listens to ``reach`` the account is exceptional (a
    reach anomaly needs an audience several times the biggest critic of the
    warm-up); otherwise merely big, so the storm opens the incident.
    """
    words = storm_words(playbook)
    texts = [
        (f"{{b}} {w} again?! This is unacceptable, \"{w}\" everywhere today", -0.8)
        for w in words
    ] + [(f"\"{w.capitalize()}\" all over my feed. Is anyone at {{b}} on it? Worried.", -0.6)
         for w in words]
    first = words[0] if words else "terrible service"
    spark = {
        "id": "drill-spark",
        "ts": at - 30.0,
        "channel": options.channel,
        "text": f"Drill: {options.brand.title()} {first}. Someone at {options.brand} "
        "needs to answer for this.",
        "author": "drill_account",
        "followers": EXCEPTIONAL_FOLLOWERS if "reach" in playbook.match.signals
        else SPARK_FOLLOWERS,
        "sentiment": -0.85,
        "url": "https://example.invalid/drill/spark",
    }
    return demo.Storm(
        at=at, channel=options.channel, texts=texts or COMPLAINTS, spark=spark, duration=STORM
    )


async def run(config: Config, options: DrillOptions) -> list[Incident]:
    """Rehearse ``options.playbook``; print the timeline; return the incidents.

    ``config.playbooks.dir`` holds the playbook. Actions for test targets are
    delivered before it returns.
    """
    start = options.start if options.start is not None else float(int(time.time() // 60) * 60)
    warmup = config.detection.warmup
    first = start - warmup - QUIET_BEFORE
    with tempfile.TemporaryDirectory(prefix="crisisd-drill-") as tmp:
        state = options.keep or Path(tmp)
        cfg = config.model_copy(update={"state_dir": state})
        warnings: list[Problem] = []
        chosen = load(cfg.playbooks.dir, cfg, warnings=warnings).get(options.playbook)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if chosen is None:
            raise SystemExit(f"crisisd drill: no playbook {options.playbook!r}")
        stream = Path(tmp) / "drill.jsonl"
        demo.write(
            stream,
            days=(warmup + QUIET_BEFORE + STORM + chosen.resolve.after_quiet + 3600) / demo.DAY,
            brand=options.brand,
            start=first,
            storm=storm(chosen, options, start),
            channels=((options.channel, 1.0),),
        )
        printer = TimelinePrinter()
        result = await backtest.replay(
            [stream],
            cfg,
            listeners=[printer.event],
            on_entry=printer.entry,
            responders=backtest.Responders(options.ack_after, options.approve_after),
            store=Store(state / "drill.sqlite"),
            only=chosen.name,
            drill=True,
        )
        incidents = [e.incident for e in result.events if e.change is IncidentChange.OPENED]
        store = Store(state / "drill.sqlite")  # the replay closed its own
        delivered = len(store.actions(status="delivered"))
        store.close()
        printer.out.write(f"\n{delivered} actions delivered to test targets\n")
        if options.keep is None:
            printer.out.write("\n(drill state discarded; use --keep DIR to keep the report)\n")
        return incidents


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
    if args.playbooks:
        config = config.model_copy(
            update={"playbooks": config.playbooks.model_copy(update={"dir": Path(args.playbooks)})}
        )
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
        "(synthetic mentions through the pipeline on a simulated clock; "
        "only test targets receive anything)"
    )
    asyncio.run(run(config, options))
    return 0
