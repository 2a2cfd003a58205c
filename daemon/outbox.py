"""The outbox worker: delivers queued actions to their targets, durably.

Actions are written to SQLite by the engine in the same transaction as the
incident change; this worker delivers them as asyncio tasks, retrying
retryable failures with capped exponential backoff and full jitter. Pages,
emails and chat are at-least-once (an action interrupted by a crash is tried
again, deduplicated downstream by its key). Public posts are at-most-once: a
post whose outcome is unknown is never retried; it is flagged ``unknown`` for
a human, who retries or cancels it (``retry`` / ``cancel``).

Each target has its own limits, because platforms throttle per account:

- ``concurrency``: at most that many requests in flight to the target, so a
  slow platform cannot hold every other target's deliveries hostage and a
  fast one is not flooded;
- ``rate_per_minute``: request starts are spaced at least ``60 / rate``
  seconds apart;
- a ``Retry-After`` (429/503, rate-limit reset) pauses the *whole target*
  until then, not just the action that met it: the platform asked us to stop.

A pager ``acknowledge``/``resolve`` event never overtakes an earlier page of
the same incident on the same target (a resolve arriving before the trigger
would leave an alert open forever).

Retries wait on wall-clock time: a delivery is real I/O even in a replay,
where the simulated clock may jump a week in a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from daemon.actions import (
    Action,
    PermanentError,
    Receipt,
    RetryableError,
    Target,
    UnknownOutcomeError,
)
from daemon.store import Store

log = structlog.get_logger("crisisd.outbox")

OnResult = Callable[[Action, str, str], None]
"""Called with (action, outcome, detail); outcome is delivered, failed or unknown."""

RETRYABLE_BY_HAND = ("unknown", "failed")
CANCELLABLE = ("pending", "unknown", "failed")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-target delivery limits (``concurrency`` in flight, request starts per minute)."""

    concurrency: int = 4
    rate_per_minute: float | None = None


class OutboxError(ValueError):
    """A human's retry or cancel that cannot apply (no such action, wrong state)."""


class NoSuchAction(OutboxError, KeyError):
    """No action with that id: a ``ValueError`` and a ``KeyError`` (the API's 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Outbox:
    """Delivers the store's pending actions to the configured targets."""

    def __init__(
        self,
        store: Store,
        targets: dict[str, Target],
        *,
        on_result: OnResult | None = None,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_attempts: int = 8,
        wall: Callable[[], float] = time.time,
        limits: dict[str, Limits] | None = None,
    ) -> None:
        self.store = store
        self.targets = targets
        self.on_result = on_result
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.wall = wall
        self.limits = dict(limits or {})
        self._wake = asyncio.Event()
        self._queued = False  # wake() since the last settle()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._busy: dict[str, int] = {}  # target -> requests in flight
        self._paused: dict[str, float] = {}  # target -> wall time it may be tried again
        self._last_start: dict[str, float] = {}  # target -> wall time of the last request

    # ----------------------------------------------------------------- lifecycle

    def recover(self) -> list[Action]:
        """After a restart: retry interrupted pages/emails, flag interrupted posts.

        Returns the posts flagged ``unknown``.
        """
        flagged = []
        with self.store.transaction():
            for action in self.store.interrupted():
                assert action.id is not None
                if action.at_most_once:
                    self.store.mark(action.id, "unknown", error="interrupted mid-delivery")
                    flagged.append(action)
                else:
                    self.store.mark(action.id, "pending")
        for action in flagged:
            self._report(action, "unknown", "interrupted mid-delivery; check before re-posting")
        return flagged

    def wake(self) -> None:
        """New actions are queued: deliver them soon."""
        self._queued = True
        self._wake.set()

    async def settle(self) -> None:
        """Deliver what was queued since the last call: a replay's step between buckets.

        A replay moves simulated time on as fast as the CPU allows; the
        worker would deliver a post whenever the pipeline next awaited,
        stamping the timeline hours late. Between two buckets the replay asks
        this instead, so a delivery happens, as live, at the time it was
        queued (a no-op when nothing was).
        """
        if self._queued:
            self._queued = False
            await self.deliver_due()

    async def start(self) -> None:
        """Recover interrupted deliveries and start the worker task."""
        self.recover()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="crisisd-outbox")

    async def stop(self, drain: float = 10.0) -> None:
        """Deliver what is due (up to ``drain`` seconds), then stop the worker.

        Deliveries still in flight at the deadline are cancelled; their rows
        stay ``sending`` and the next start treats them as interrupted.
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._dispatch()
            except Exception:  # the worker must outlive one bad row or a busy database
                log.exception("outbox worker error")
                if self._stopping and not self._inflight:
                    return
                await asyncio.sleep(1.0)
                continue
            if self._stopping:
                if not self._inflight:
                    return
                await asyncio.wait(list(self._inflight.values()),
                                   return_when=asyncio.FIRST_COMPLETED)
                continue
            timeout = self._idle_timeout()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _idle_timeout(self) -> float | None:
        """How long the worker may sleep: until a retry, a pause or a rate slot is due."""
        now = self.wall()
        times = [t for t in self._paused.values() if t > now]
        nxt = self.store.next_try(after=now)
        if nxt is not None:
            times.append(nxt)
        for name, limits in self.limits.items():
            if limits.rate_per_minute and name in self._last_start:
                slot = self._last_start[name] + 60.0 / limits.rate_per_minute
                if slot > now:
                    times.append(slot)
        return None if not times else max(0.0, min(times) - now) + 0.001

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self) -> int:
        """Start a delivery task for every due action the target limits allow now."""
        now = self.wall()
        started = 0
        blocked, free = self._capacity(now)
        if self.targets and free == 0:
            return 0
        # Read only what can start (plus a margin for acknowledges waiting on a trigger):
        # re-reading a long queue after every answer would make delivery quadratic.
        for action in self.store.due_actions(now, limit=free + 16, exclude=blocked):
            assert action.id is not None
            name = action.target
            if action.id in self._inflight or self._paused.get(name, 0.0) > now:
                continue
            limits = self.limits.get(name, Limits())
            if self._busy.get(name, 0) >= max(1, limits.concurrency):
                continue
            if self._rate_waits(name, limits, now):
                continue
            if self._waits_for_earlier_page(action):
                continue
            # Marked sending before the task runs: a cancel racing it sees the truth.
            self.store.mark(action.id, "sending", attempts=action.attempts + 1)
            self._busy[name] = self._busy.get(name, 0) + 1
            self._last_start[name] = now
            task = asyncio.create_task(self._attempt(action), name=f"deliver-{action.id}")
            self._inflight[action.id] = task
            started += 1
        return started

    def _capacity(self, now: float) -> tuple[tuple[str, ...], int]:
        """(targets that cannot start a request now, requests the others can start)."""
        blocked: list[str] = []
        free = 0
        for name in self.targets:
            limits = self.limits.get(name, Limits())
            room = max(1, limits.concurrency) - self._busy.get(name, 0)
            if room <= 0 or self._paused.get(name, 0.0) > now or self._rate_waits(
                name, limits, now
            ):
                blocked.append(name)
            else:
                free += 1 if limits.rate_per_minute else room
        return tuple(blocked), free

    def _rate_waits(self, name: str, limits: Limits, now: float) -> bool:
        """True while ``name``'s next request slot (``60 / rate_per_minute`` apart) is ahead."""
        if not limits.rate_per_minute or name not in self._last_start:
            return False
        return now < self._last_start[name] + 60.0 / limits.rate_per_minute

    def _waits_for_earlier_page(self, action: Action) -> bool:
        """A pager acknowledge/resolve waits until earlier pages of its incident are settled."""
        if action.medium != "page" or action.data.get("event_action") in (None, "", "trigger"):
            return False
        assert action.id is not None
        return self.store.earlier_open_page(action.id, action.incident_id, action.target)

    async def _attempt(self, action: Action) -> None:
        assert action.id is not None
        try:
            await self._deliver_marked(action)
        finally:
            self._inflight.pop(action.id, None)
            self._busy[action.target] = max(0, self._busy.get(action.target, 1) - 1)
            self._wake.set()

    async def deliver_due(self) -> int:
        """Deliver every action due now, within the target limits; the number attempted.

        Returns when nothing more can start now (what a target's pause or rate
        keeps back stays pending). Tests and ``stop`` use this; the worker task
        does the same continuously.
        """
        done = 0
        while True:
            done += self._dispatch()
            if not self._inflight:
                return done
            await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)

    async def deliver(self, action: Action) -> None:
        """Attempt one action now, ignoring the limits, and record the outcome."""
        assert action.id is not None
        self.store.mark(action.id, "sending", attempts=action.attempts + 1)
        await self._deliver_marked(action)

    async def _deliver_marked(self, action: Action) -> None:
        assert action.id is not None
        target = self.targets.get(action.target)
        attempts = action.attempts + 1
        if target is None:
            self.store.mark(action.id, "failed", attempts=attempts, error="no such target")
            self._report(action, "failed", f"no target named {action.target!r}")
            return
        try:
            receipt: Receipt = await target.deliver(action)
        except PermanentError as exc:
            self.store.mark(action.id, "failed", error=str(exc))
            self._report(action, "failed", str(exc))
        except RetryableError as exc:
            self._retry(action, attempts, str(exc), exc.retry_after)
        except UnknownOutcomeError as exc:
            if action.at_most_once:
                self.store.mark(action.id, "unknown", error=str(exc))
                self._report(action, "unknown", f"outcome unknown ({exc}); not re-posted")
            else:
                self._retry(action, attempts, str(exc))
        except asyncio.CancelledError:
            raise  # shutdown mid-request: the row stays `sending`, recovered at next start
        except Exception as exc:
            if action.at_most_once:
                self.store.mark(action.id, "unknown", error=repr(exc))
                self._report(action, "unknown", f"outcome unknown ({exc!r}); not re-posted")
            else:
                self._retry(action, attempts, repr(exc))
        else:
            self.store.mark(
                action.id, "delivered", receipt={"target": receipt.target, "ref": receipt.ref}
            )
            self._report(action, "delivered", receipt.ref)

    def backoff(self, attempts: int) -> float:
        """The wait before try ``attempts + 1``: capped exponential, full jitter in [½, 1]."""
        delay = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
        return delay * random.uniform(0.5, 1.0)

    def _retry(
        self, action: Action, attempts: int, error: str, retry_after: float | None = None
    ) -> None:
        assert action.id is not None
        if attempts >= self.max_attempts:
            self.store.mark(action.id, "failed", error=error)
            self._report(action, "failed", f"gave up after {attempts} attempts: {error}")
            return
        delay = self.backoff(attempts)
        if retry_after is not None:  # the platform said when (Retry-After): never sooner
            delay = max(delay, retry_after)
            # ...and it said so for the account, not this one request: pause the target.
            until = self.wall() + retry_after
            self._paused[action.target] = max(self._paused.get(action.target, 0.0), until)
        self.store.mark(action.id, "pending", next_try=self.wall() + delay, error=error)
        log.warning("retry", key=action.key, attempts=attempts, delay=round(delay, 2), error=error)

    def _report(self, action: Action, outcome: str, detail: str) -> None:
        if outcome != "delivered":
            log.warning("delivery", key=action.key, outcome=outcome, detail=detail)
        if self.on_result is not None:
            try:
                self.on_result(action, outcome, detail)
            except Exception:  # recording the result must not undo the delivery
                log.exception("delivery result handler failed", key=action.key)

    # ------------------------------------------------------------ human control

    def retry(self, action_id: int, by: str) -> Action:
        """A human asks to try an ``unknown`` or ``failed`` action again; the action.

        For a post flagged ``unknown`` this is the human's decision that it was
        *not* published. The attempt counter restarts so backoff starts small.
        Raises ``OutboxError`` when there is no such action or it is not in a
        retryable state.
        """
        action = self._by_hand(
            action_id, RETRYABLE_BY_HAND, " or ", "retried", "pending",
            error=f"retry requested by {by}", attempts=0, next_try=0.0,
        )
        self._paused.pop(action.target, None)
        self.wake()
        return self._get(action_id)

    def cancel(self, action_id: int, by: str) -> Action:
        """A human gives up on a ``pending``, ``unknown`` or ``failed`` action; the action.

        An action being sent right now cannot be cancelled (its outcome will be
        recorded in a moment). Raises ``OutboxError`` otherwise.
        """
        self._by_hand(
            action_id, CANCELLABLE, ", ", "cancelled", "cancelled", error=f"cancelled by {by}"
        )
        return self._get(action_id)

    def _by_hand(
        self, action_id: int, allowed: tuple[str, ...], joiner: str, verb: str, to: str,
        **changes: object,
    ) -> Action:
        """Move an action from one of ``allowed`` states to ``to`` for a person; the
        action as it was. The store's conditional update settles a race with the worker."""
        action = self._get(action_id)
        if action.status not in allowed:
            raise OutboxError(
                f"action {action_id} is {action.status}; only "
                f"{joiner.join(allowed)} actions can be {verb}"
            )
        if not self.store.transition(action_id, allowed, to, **changes):
            raise OutboxError(f"action {action_id} changed state meanwhile; look again")
        return action

    def _get(self, action_id: int) -> Action:
        action = self.store.action(action_id)
        if action is None:
            raise NoSuchAction(f"no action {action_id} in the outbox")
        return action
