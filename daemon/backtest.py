"""Replay files through the live pipeline on a simulated clock.

This is what ``crisisd replay`` and ``crisisd demo`` run: the same stages as
``crisisd run``, fed by the replay source instead of the broker, with timers
on a ``SimClock`` that follows event time. It is therefore a faithful
backtest: the incidents it prints are the incidents the daemon would open.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from daemon.assembly import OnEntry, assemble
from daemon.clock import SimClock
from daemon.config import Config
from daemon.decode import Decoder
from daemon.domain import IncidentChange, IncidentEvent
from daemon.pipeline import Listener, Pipeline, PipelineStats
from daemon.response import Response
from daemon.scores import ScoreWriter
from daemon.sources.replay import ReplaySource
from daemon.store import Store


@dataclass(frozen=True, slots=True)
class Responders:
    """Simulated people for a replay: who acknowledges and approves, and when.

    A backtest with nobody answering shows only escalations; with responders
    it shows the response a team would give (the holding statement posted).
    """

    ack_after: float | None = None
    approve_after: float | None = None

    def attach(self, pipeline: Pipeline, response: Response) -> Listener:
        """A listener that schedules the simulated actions of each new incident."""
        clock = pipeline.clock

        def acknowledge(incident_id: str) -> None:
            if incident_id in pipeline.incidents.open:
                pipeline.emit(pipeline.incidents.acknowledge(incident_id, clock.now(), "responder"))

        def approve(incident_id: str) -> None:
            if incident_id not in pipeline.incidents.open:
                return
            for st in response.engine.statements(incident_id):
                approvers = response.engine.approvers(incident_id, st.sid)
                if st.status == "pending" and approvers:
                    response.engine.approve(incident_id, st.sid, st.sha256, approvers[0])

        def on_event(event: IncidentEvent) -> None:
            if event.change != IncidentChange.OPENED:
                return
            iid = event.incident.id
            if self.ack_after is not None:
                clock.call_at(event.at + self.ack_after, lambda: acknowledge(iid))
            if self.approve_after is not None:
                clock.call_at(event.at + self.approve_after, lambda: approve(iid))

        return on_event


@dataclass(slots=True)
class ReplayResult:
    """What a replay did: counts, incidents and how long it took."""

    stats: PipelineStats
    invalid: Counter[str]
    events: list[IncidentEvent] = field(default_factory=list)
    seconds: float = 0.0
    score_files: list[Path] = field(default_factory=list)
    response: Response | None = None

    @property
    def opened(self) -> list[IncidentEvent]:
        """The incidents that opened, in order."""
        return [e for e in self.events if e.change == IncidentChange.OPENED]

    def summary(self) -> str:
        """One paragraph for the end of a replay."""
        s = self.stats
        resolved = sum(1 for e in self.events if e.change == IncidentChange.RESOLVED)
        rate = (s.mentions + s.metrics) / self.seconds if self.seconds else 0.0
        invalid = sum(self.invalid.values())
        opened = len(self.opened)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.invalid.items()))
        return (
            f"replayed {s.mentions:,} mentions and {s.metrics:,} metric points "
            f"in {self.seconds:.2f} s ({rate:,.0f}/s): {s.buckets:,} buckets, "
            f"{sum(s.anomalies.values()):,} anomalies, "
            f"{opened} incident{'' if opened == 1 else 's'} opened, "
            f"{resolved} resolved; {s.late:,} late, {invalid:,} invalid"
            + (f" ({reasons})" if reasons else "")
        )


async def replay(
    paths: list[Path],
    cfg: Config,
    *,
    scores: Path | None = None,
    listeners: list[Listener] | None = None,
    on_entry: OnEntry | None = None,
    responders: Responders | None = None,
    store: Store | None = None,
    only: str | None = None,
    drill: bool = False,
) -> ReplayResult:
    """Run the pipeline over ``paths`` to the end and report what happened.

    The response side runs on an in-memory store unless one is given, so a
    replay never sees the live daemon's incidents; it delivers only to
    targets marked ``test: true`` (a rehearsal: pages, mails and posts of a
    backtest must reach no one). Its post-crisis reports and the test
    targets' files go under ``cfg.state_dir``: pass a directory of the
    backtest's own (``crisisd replay`` uses a temporary one unless told
    ``--keep``), as a backtest of days the daemon saw live opens incidents
    with the same ids as the real ones.
    ``only`` and ``drill`` are for ``crisisd drill`` (see ``assemble``).
    """
    decoder = Decoder(prefix=cfg.mqtt.prefix, max_payload=cfg.mqtt.max_payload)
    source = ReplaySource(paths, decoder)
    writer = ScoreWriter(scores, source.units) if scores is not None else None
    result = ReplayResult(PipelineStats(), decoder.invalid)
    pipeline, response = assemble(
        cfg,
        SimClock(),
        store=store or Store(":memory:"),
        tolerant=True,
        only=only,
        drill=drill,
        rehearsal=True,
        listeners=[result.events.append, *(listeners or [])],
        on_entry=on_entry,
        on_score=writer,
    )
    result.stats = pipeline.stats
    result.response = response
    if responders is not None and response is not None:
        pipeline.listeners.append(responders.attach(pipeline, response))
    started = time.perf_counter()
    if response is not None:
        await response.start()
        pipeline.settle = response.engine.outbox.settle
    try:
        await pipeline.run(source)
        pipeline.finish()
    finally:
        pipeline.close()
        if response is not None:
            await response.stop()
    result.seconds = time.perf_counter() - started
    if writer is not None:
        result.score_files = writer.close()
    return result
