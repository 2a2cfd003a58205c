"""The ``log`` target: each action becomes one structured log line.

The zero-configuration target, so a fresh install, a replay or a demo shows
every page, email and post it would have sent without sending anything.
"""

from __future__ import annotations

import structlog

from daemon.actions import Action, Receipt

log = structlog.get_logger("crisisd.deliver")


class LogTarget:
    """Delivers by logging; never fails."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    async def deliver(self, action: Action) -> Receipt:
        """Log the action with its recipients, subject and text."""
        log.info(
            "deliver",
            target=self.name,
            medium=action.medium,
            incident=action.incident_id,
            key=action.key,
            to=[r.get("name") or r.get("id") for r in action.to],
            subject=action.subject,
            body=action.body,
        )
        return Receipt(self.name, action.key)
