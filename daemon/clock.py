"""Clocks: what timers (escalations, updates, retries) run on.

Windows close on event time; everything that waits for a duration waits on
a ``Clock``. Live, that is the wall clock. In replay, drills and tests it is a
``SimClock`` that the pipeline moves forward with the event-time watermark, so
a week of traffic with 15-minute escalations replays in a second and always
fires the same timers in the same order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

Callback = Callable[[], None]


@dataclass(order=True)
class Timer:
    """A scheduled callback; ``cancel()`` stops it from firing."""

    when: float
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)
    handle: asyncio.TimerHandle | None = field(default=None, compare=False, repr=False)

    def cancel(self) -> None:
        """Stop the timer; cancelling twice or after it fired is harmless."""
        self.cancelled = True
        if self.handle is not None:
            self.handle.cancel()


class Clock(ABC):
    """The time source of timers; ``now()`` is epoch seconds (UTC)."""

    _seq = itertools.count()

    @abstractmethod
    def now(self) -> float:
        """Current time in epoch seconds."""

    @abstractmethod
    def call_at(self, when: float, callback: Callback) -> Timer:
        """Run ``callback`` once the clock reaches ``when`` (at once if past)."""

    def call_later(self, delay: float, callback: Callback) -> Timer:
        """Run ``callback`` after ``delay`` seconds of this clock's time."""
        return self.call_at(self.now() + delay, callback)


class RealClock(Clock):
    """Wall-clock time; timers run on the running asyncio event loop."""

    def now(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        loop = asyncio.get_running_loop()
        delay = max(0.0, when - time.time())
        timer.handle = loop.call_later(delay, self._fire, timer)
        return timer

    @staticmethod
    def _fire(timer: Timer) -> None:
        if not timer.cancelled:
            timer.cancelled = True
            timer.callback()


class SimClock(Clock):
    """Simulated time that only moves when ``advance`` is called.

    Timers due at or before the new time fire in (time, scheduling) order,
    with ``now()`` set to each timer's own time while it runs, so a timer
    that schedules another sees the time it was meant to fire at.

    >>> clock = SimClock(start=0.0)
    >>> fired = []
    >>> _ = clock.call_at(60, lambda: fired.append(clock.now()))
    >>> clock.advance(30); fired
    []
    >>> clock.advance(120); fired
    [60]
    >>> clock.now()
    120
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[Timer] = []

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def advance(self, to: float) -> None:
        """Move time forward to ``to``, firing every timer that falls due.

        Time never goes backwards: an earlier ``to`` is ignored.
        """
        while self._heap and self._heap[0].when <= to:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.when)
            timer.cancelled = True
            timer.callback()
        self._now = max(self._now, to)

    @property
    def pending(self) -> int:
        """Timers still waiting to fire (for drains and tests)."""
        return sum(1 for t in self._heap if not t.cancelled)

