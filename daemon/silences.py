"""Silences: planned quiet for a brand / channel / signal over a time span.

A product launch or a maintenance window makes mention volume spike for a
known, good reason. A silence suppresses the anomalies it covers before they
become incidents; every suppressed anomaly is counted on the silence, so
nothing disappears unseen. Silences are stored, so they survive restarts.
"""

from __future__ import annotations

import fnmatch
import uuid

from daemon.domain import Anomaly
from daemon.store import SilenceRow, Store

Silence = SilenceRow


class Silences:
    """The silences of a store; ``matches`` is the incident stage's filter."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: list[Silence] = store.silences()

    def add(
        self,
        start: float,
        end: float,
        *,
        brand: str = "*",
        channel: str = "*",
        signal: str = "*",
        reason: str = "",
        by: str = "",
        created_at: float = 0.0,
        silence_id: str | None = None,
    ) -> Silence:
        """Record a silence; brand, channel and signal are globs (``term:*``)."""
        if end <= start:
            raise ValueError("a silence must end after it starts")
        silence = Silence(
            silence_id or uuid.uuid4().hex[:12],
            brand,
            channel,
            signal,
            start,
            end,
            reason,
            by,
            created_at,
        )
        self.store.save_silence(silence)
        self._cache = self.store.silences()
        return silence

    def remove(self, silence_id: str) -> bool:
        """Delete a silence (ends it early)."""
        removed = self.store.delete_silence(silence_id)
        self._cache = self.store.silences()
        return removed

    def list(self) -> list[Silence]:
        """Every silence with its suppressed count."""
        self._cache = self.store.silences()
        return list(self._cache)

    def matches(self, anomaly: Anomaly) -> Silence | None:
        """The silence covering ``anomaly`` at its event time, counting the suppression."""
        at = anomaly.end
        for silence in self._cache:
            if (
                silence.start <= at < silence.end
                and fnmatch.fnmatchcase(anomaly.series.brand, silence.brand)
                and fnmatch.fnmatchcase(anomaly.series.channel, silence.channel)
                and fnmatch.fnmatchcase(anomaly.signal, silence.signal)
            ):
                silence.suppressed += 1
                self.store.count_suppressed(silence.id)
                return silence
        return None

    __call__ = matches
