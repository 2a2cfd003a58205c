"""Real loopback stand-ins for the platforms crisisd delivers to, and test helpers."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from daemon.actions import Action
from daemon.config import TargetConfig

# The targets honour proxy variables; test traffic must stay on loopback whatever is set.
os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"]))

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def make_action(medium: str = "page", **fields: Any) -> Action:
    """An action as the engine queues it (override any field)."""
    base: dict[str, Any] = {
        "key": f"inc-1/step/0/{medium}@t",
        "incident_id": "inc-1",
        "medium": medium,
        "target": "t",
        "to": [{"id": "ana", "name": "Ana Ops", "email": "ana@example.org",
                "pager": None, "chat": None}],
        "subject": "[crisisd high] Incident: Product safety or recall — northwind",
        "body": "Recall reports for northwind are spiking: 480 mentions (normally 40).",
        "created_at": T0,
        "data": {"severity": "high", "brand": "northwind"},
    }
    base.update(fields)
    return Action(**base)


def target_config(**fields: Any) -> TargetConfig:
    """A validated target config (as if read from config.yaml)."""
    return TargetConfig.model_validate(fields)


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every structlog event and stdlib log record (all loggers, DEBUG up) as text."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name} {record.getMessage()} {record.args!r}")

    root = logging.getLogger()
    handler, level = Collect(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with structlog.testing.capture_logs() as events:
            yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        lines.extend(repr(e) for e in events)
