"""Assembles the response side of the daemon: playbooks, router, silences, engine, store.

The pipeline needs three things from the playbooks issue — a router for the
incident stage, a silence filter in front of it, and a listener that runs the
playbooks — and they must share one store and one clock. Building them in
one place keeps ``run``, ``replay``, ``demo`` and ``drill`` wired the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon import playbook
from daemon.clock import Clock
from daemon.config import Config
from daemon.domain import Incident, TimelineEntry
from daemon.engine import Engine
from daemon.incidents import IncidentManager
from daemon.silences import Silences
from daemon.store import Store
from daemon.yamlfile import FileProblems, Problem


@dataclass
class Response:
    """The wired response side; see ``build``."""

    store: Store
    playbooks: playbook.Playbooks
    router: playbook.PlaybookRouter
    silences: Silences
    engine: Engine
    warnings: list[Problem] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: Config,
        clock: Clock,
        on_entry: Callable[[Incident, TimelineEntry], None] | None = None,
        *,
        store: Store | None = None,
        tolerant: bool = False,
        playbooks_dir: Path | None = None,
        only: str | None = None,
        drill: bool = False,
        rehearsal: bool = False,
    ) -> Response:
        """Load and check the playbooks and wire everything on ``clock``.

        ``store`` defaults to ``<state_dir>/crisisd.sqlite`` (pass
        ``Store(":memory:")`` for a replay that must leave nothing behind).
        ``tolerant`` accepts people, teams and rotations missing from the
        config (demo and replay with an empty config), collected in
        ``warnings``. ``drill`` and ``rehearsal``: see ``Engine``. Raises
        ``yamlfile.FileProblems`` on invalid playbooks.
        """
        warnings: list[Problem] = []
        loaded = playbook.load(
            playbooks_dir or config.playbooks.dir, config, warnings=warnings if tolerant else None
        )
        if only is not None:
            chosen = loaded.get(only)
            if chosen is None:
                known = ", ".join(p.name for p in loaded)
                raise KeyError(f"no playbook {only!r} (known: {known})")
            loaded = playbook.Playbooks([chosen])
        store = store or Store.in_dir(config.state_dir)
        engine = Engine(config, loaded, clock, store, on_entry, drill=drill,
                        rehearsal=rehearsal)
        return cls(
            store, loaded, playbook.PlaybookRouter(loaded), Silences(store), engine, warnings
        )

    def reload(self, config: Config, *, tolerant: bool = False) -> list[Problem]:
        """Swap in re-read playbooks (SIGHUP); on problems keep the last good set.

        Returns the problems (empty when the new set is live). Callers also
        validate ``config.yaml`` itself before passing it in.
        """
        warnings: list[Problem] = []
        try:
            loaded = playbook.load(
                config.playbooks.dir, config, warnings=warnings if tolerant else None
            )
        except FileProblems as exc:
            return exc.problems
        self.playbooks = loaded
        self.router.playbooks = loaded
        self.engine.reload(config, loaded)
        self.warnings = warnings
        return []

    def restore_into(self, manager: IncidentManager) -> list[Incident]:
        """Resume the store's open incidents in the incident manager (after a restart)."""
        incidents = self.engine.open_incidents()
        manager.restore(incidents, {i.id: self.router.route_of(i) for i in incidents})
        return incidents

    async def start(self) -> None:
        """Re-arm timers and start delivering."""
        await self.engine.start()

    async def stop(self) -> None:
        """Drain deliveries and close the store."""
        await self.engine.stop()
        self.store.close()
