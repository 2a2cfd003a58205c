"""Silences: planned quiet for a brand / channel / signal over a time span.

A product launch or a maintenance window makes mention volume spike for a
known, good reason. A silence suppresses the anomalies it covers before they
become incidents; every suppressed anomaly is counted on the silence, so
nothing disappears unseen. Silences are stored, so they survive restarts.
"""

from __future__ import annotations

import argparse
import fnmatch
import time
import uuid

from daemon.config import Config, parse_duration
from daemon.domain import Anomaly
from daemon.roster import parse_instant
from daemon.store import SilenceRow, Store
from daemon.templating import stamp

Silence = SilenceRow


class Silences:
    """The silences of a store; ``matches`` is the incident stage's filter."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: list[Silence] = store.silences()
        self._version = self._data_version()

    def _data_version(self) -> int:
        """SQLite's counter of commits by *other* connections (``crisisd silence add``)."""
        return int(self.store.db.execute("PRAGMA data_version").fetchone()[0])

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
        version = self._data_version()
        if version != self._version:  # another process changed the silences
            self._version = version
            self._cache = self.store.silences()
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


def command(args: argparse.Namespace, config: Config) -> int:
    """``crisisd silence`` against the state directory's store (``daemon.ctl``'s
    fallback when no daemon answers; its parser is ``ctl.add_silence_arguments``)."""
    store = Store.in_dir(config.state_dir)
    silences = Silences(store)
    try:
        if args.action == "add":
            now = time.time()
            start = now if args.start == "now" else parse_instant(args.start)
            end = (
                start + parse_duration(args.duration) if args.duration else parse_instant(args.end)
            )
            s = silences.add(
                start,
                end,
                brand=args.brand,
                channel=args.channel,
                signal=args.signal,
                reason=args.reason,
                by=args.by,
                created_at=now,
            )
            print(f"silence {s.id}: {s.brand}/{s.channel}/{s.signal} {stamp(start)} → {stamp(end)}")
        elif args.action == "list":
            for s in silences.list():
                print(
                    f"{s.id}  {s.brand}/{s.channel}/{s.signal}  {stamp(s.start)} → {stamp(s.end)}"
                    f"  suppressed {s.suppressed}  {s.reason}"
                )
        elif not silences.remove(args.id):
            print(f"crisisd silence: no silence {args.id!r}")
            return 1
    except ValueError as exc:
        print(f"crisisd silence: {exc}")
        return 2
    finally:
        store.close()
    return 0
