"""Where events come from. Every source yields the same items, so nothing
downstream knows whether it is live (MQTT) or a replay of files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from daemon.domain import Event


@dataclass(frozen=True, slots=True)
class Tick:
    """Wall-clock heartbeat from a live source that has nothing to deliver.

    Silence is data: without ticks a quiet broker would never close buckets.
    The pipeline lets the watermark follow ``at`` minus the allowed lateness.
    """

    at: float


SourceItem = list[Event] | Tick


class Source(Protocol):
    """An async stream of decoded event batches (and ticks, when live)."""

    def stream(self) -> AsyncIterator[SourceItem]:
        """Yield batches until the source ends (replay) or is stopped (live)."""
