"""Shared helpers for the playbook, engine and store tests (not a test module).

A ``Harness`` wires the real incident manager, the playbook router, the
silences, the engine and the store on a ``SimClock``, with a recording
delivery target, so a test drives a whole crisis response in milliseconds.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.actions import Action, Receipt
from daemon.clock import SimClock
from daemon.config import Config
from daemon.domain import Anomaly, Incident, IncidentEvent, Sample, SeriesKey, Severity
from daemon.engine import Engine
from daemon.incidents import IncidentManager
from daemon.playbook import PlaybookRouter, Playbooks, load
from daemon.silences import Silences
from daemon.store import Store

# Monday 2026-11-23 12:00:00 UTC
T0 = 1795435200.0

ROSTER = """
people:
  alice: {name: Alice, email: alice@example.com, pager: alice-pd}
  bob:   {name: Bob, email: bob@example.com, pager: bob-pd}
  carla: {name: Carla, email: carla@example.com, pager: carla-pd}
  grace: {name: Grace, email: grace@example.com}
  erin:  {name: Erin, email: erin@example.com, pager: erin-pd}
teams:
  legal: {members: [grace]}
  exec:  {members: [erin]}
  pr:    {members: [alice, carla], email: pr@example.com}
rotations:
  pr-primary:
    members: [alice, carla]
    period: weekly
    handoff_day: monday
    handoff_time: "09:00"
    timezone: Europe/Paris
    start: "2026-01-05"
  social:
    members: [bob, carla]
    period: daily
    handoff_time: "08:00"
    timezone: America/New_York
    start: "2026-01-01"
targets:
  rec: {type: log}
"""

RECALL = """
name: product-recall
title: Product recall
priority: 50
match:
  terms_any: [recall, unsafe]
roles:
  incident_commander: {rotation: pr-primary}
  legal_reviewer: {team: legal}
steps:
  - page: {to: incident_commander}
  - email: {to: [legal_reviewer, team:pr], template: incident-brief}
  - chat: {to: [team:pr], text: "Recall talk about {{ brand }}: {{ top_terms | join(', ') }}"}
  - post_statement:
      id: holding
      text: "We're looking into reports about {{ brand }} products."
      approval: legal_reviewer
      deadline: 15m
  - escalate: {after: 20m, unless: acknowledged, to: [team:exec]}
  - update: {every: 1h, to: [team:pr]}
  - webhook: {url: "http://127.0.0.1:9/pause", body: '{"brand": "{{ brand }}"}'}
resolve:
  after_quiet: 2h
  cooldown: 30m
  notify: [team:pr, legal_reviewer]
"""

CATCH_ALL = """
name: catch-all
title: Unexplained spike
priority: 0
match:
  min_severity: high
roles:
  incident_commander: {rotation: social}
steps:
  - page: {to: incident_commander}
  - post_statement:
      text: "We're seeing a lot of conversation about {{ brand }}."
      approval: auto
resolve:
  after_quiet: 1h
  cooldown: 30m
  notify: [team:pr]
"""


class RecordingTarget:
    """A delivery target that remembers what it delivered (and can fail on demand)."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.delivered: list[Action] = []
        self.fail: list[Exception] = []

    async def deliver(self, action: Action) -> Receipt:
        if self.fail:
            raise self.fail.pop(0)
        self.delivered.append(action)
        return Receipt(self.name, action.key)

    def media(self, medium: str) -> list[Action]:
        return [a for a in self.delivered if a.medium == medium]


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def make_config(tmp_path: Path, extra: str = "") -> Config:
    from daemon import config as config_module

    path = write(tmp_path, "config.yaml", ROSTER + extra + f"state_dir: {tmp_path / 'state'}\n")
    return config_module.load(path)


def make_playbooks(tmp_path: Path, config: Config, *texts: str) -> Playbooks:
    directory = tmp_path / "playbooks"
    for index, text in enumerate(texts or (RECALL, CATCH_ALL)):
        write(directory, f"p{index}.yaml", text)
    return load(directory, config)


def anomaly(
    at: float,
    signal: str = "volume",
    *,
    brand: str = "acme",
    channel: str = "twitter",
    severity: Severity = Severity.HIGH,
    terms: tuple[str, ...] = (),
    tone: str = "negative",
    direction: int = 1,
    volume: int = 200,
    negative_share: float = 0.6,
    samples: list[Sample] | None = None,
) -> Anomaly:
    return Anomaly(
        series=SeriesKey(brand, channel),
        signal=signal,
        start=at - 60,
        end=at,
        observed=float(volume),
        expected=20.0,
        low=0.0,
        high=40.0,
        score=0.9999,
        severity=severity,
        direction=direction,
        tone=tone,
        top_terms=[(t, 10) for t in terms],
        samples=samples or [],
        volume=volume,
        negative_share=negative_share,
    )


@dataclass
class Harness:
    """Manager + router + silences + engine + store on a simulated clock."""

    tmp_path: Path
    config: Config
    playbooks: Playbooks
    clock: SimClock
    store: Store
    target: RecordingTarget
    engine: Engine
    manager: IncidentManager
    silences: Silences
    entries: list[tuple[str, str, float, str]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        tmp_path: Path,
        *texts: str,
        start: float = T0,
        target: RecordingTarget | None = None,
        drill: bool = False,
        extra_config: str = "",
    ) -> Harness:
        config = make_config(tmp_path, extra_config)
        playbooks = make_playbooks(tmp_path, config, *texts)
        clock = SimClock(start)
        store = Store.in_dir(config.state_dir)
        target = target or RecordingTarget()
        entries: list[tuple[str, str, float, str]] = []

        def on_entry(incident: Incident, entry: Any) -> None:
            entries.append((incident.id, entry.kind, entry.ts, entry.message))

        engine = Engine(
            config, playbooks, clock, store, on_entry, targets={"rec": target}, drill=drill
        )
        router = PlaybookRouter(playbooks)
        silences = Silences(store)
        manager = IncidentManager(router, silences.matches)
        restored = engine.open_incidents()
        manager.restore(restored, {i.id: router.route_of(i) for i in restored})
        return cls(
            tmp_path, config, playbooks, clock, store, target, engine, manager, silences, entries
        )

    def feed(self, a: Anomaly) -> list[IncidentEvent]:
        """Advance the clock to the anomaly's time, then route it like the pipeline does."""
        self.clock.advance(a.end)
        events = self.manager.observe(a)
        for event in events:
            self.engine.handle(event)
        return events

    def advance(self, to: float) -> None:
        """Move time: fire timers, then let the manager auto-resolve quiet incidents."""
        self.clock.advance(to)
        for event in self.manager.tick(to):
            self.engine.handle(event)

    async def flush(self) -> None:
        await self.engine.outbox.deliver_due()

    def kinds(self) -> list[str]:
        return [k for _, k, _, _ in self.entries]

    def close(self) -> None:
        for timer in self.engine._armed.values():
            timer.cancel()
        self.store.close()
