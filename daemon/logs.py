"""Structured logging: JSON lines for journald under ``run``, readable elsewhere.

One event per line, with the incident id and series as fields, never
interpolated into the message, so ``journalctl -o cat | jq`` can filter them.
"""

from __future__ import annotations

import logging
import sys

import structlog


def setup(level: str = "info", json_lines: bool = False) -> None:
    """Configure structlog (and stdlib logging of libraries) once per process."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_lines:
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
        stream = sys.stdout
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        stream = sys.stderr
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, force=True)
