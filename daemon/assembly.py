"""Wires the detection pipeline to the response side, the same way everywhere.

``run``, ``replay`` and ``demo`` differ only in their source, clock and
store; this module builds the rest identically, so a replay is a faithful
backtest of the daemon, response timeline included. Without playbooks
crisisd still detects and opens incidents (one per brand), and says so.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from daemon.clock import Clock
from daemon.config import Config
from daemon.detect import ScoreSink
from daemon.engine import OnEntry
from daemon.pipeline import Listener, Pipeline
from daemon.playbook import playbook_files
from daemon.response import Response
from daemon.store import Store

log = structlog.get_logger("crisisd.assembly")


def assemble(
    cfg: Config,
    clock: Clock,
    *,
    store: Store | None = None,
    tolerant: bool = False,
    listeners: Iterable[Listener] = (),
    on_entry: OnEntry | None = None,
    on_score: ScoreSink | None = None,
    only: str | None = None,
    drill: bool = False,
    rehearsal: bool = False,
) -> tuple[Pipeline, Response | None]:
    """The pipeline, and the response side when playbooks are configured.

    Open incidents and cooldowns in the store are resumed into the incident
    stage. ``only`` and ``drill`` restrict the response to one playbook and
    to test targets (``crisisd drill``); ``rehearsal`` to test targets (a
    replay). Raises ``yamlfile.FileProblems``
    when the playbooks are invalid.
    """
    if not playbook_files(cfg.playbooks.dir):
        log.warning(
            "no playbooks: incidents open (one per brand) without a response",
            playbooks=str(cfg.playbooks.dir),
        )
        return Pipeline(cfg, clock, on_score=on_score, listeners=listeners), None
    response = Response.build(
        cfg, clock, on_entry, store=store, tolerant=tolerant, only=only, drill=drill,
        rehearsal=rehearsal,
    )
    if response.warnings:
        log.warning(
            "playbooks name people, teams or rotations missing from the config; "
            "their steps reach nobody (crisisd validate lists them)",
            count=len(response.warnings),
            first=str(response.warnings[0]),
        )
    pipeline = Pipeline(
        cfg,
        clock,
        router=response.router,
        silenced=response.silences.matches,
        on_score=on_score,
        listeners=[*listeners, response.engine.handle],
        bucket_listeners=[response.engine.observe_bucket],
    )
    response.restore_into(pipeline.incidents)
    longest = max((p.resolve.cooldown for p in response.playbooks), default=0.0)
    cooldown = max(cfg.incidents.cooldown, longest)
    pipeline.incidents.restore_resolved(response.store.resolved_keys(clock.now() - cooldown))
    return pipeline, response
