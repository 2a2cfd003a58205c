"""The outbox worker: delivers queued actions to their targets, durably.

Actions are written to SQLite by the engine in the same transaction as the
incident change; this worker delivers them as an asyncio task, retrying
retryable failures with exponential backoff and jitter. Pages, emails and
chat are at-least-once (an action interrupted by a crash is tried again,
deduplicated downstream by its key). Public posts are at-most-once: a post
whose outcome is unknown is never retried; it is flagged for a human.

Retries wait on wall-clock time: a delivery is real I/O even in a replay,
where the simulated clock may jump a week in a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

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
    ) -> None:
        self.store = store
        self.targets = targets
        self.on_result = on_result
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.wall = wall
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

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
        self._wake.set()

    async def start(self) -> None:
        """Recover interrupted deliveries and start the worker task."""
        self.recover()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="crisisd-outbox")

    async def stop(self, drain: float = 10.0) -> None:
        """Deliver what is due (up to ``drain`` seconds), then stop the worker."""
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

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
            except Exception:  # the worker must outlive one bad row or a busy database
                log.exception("outbox worker error")
                if self._stopping:
                    return
                await asyncio.sleep(1.0)
                continue
            if self._stopping:
                return
            nxt = self.store.next_try()
            timeout = None if nxt is None else max(0.0, nxt - self.wall())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def deliver_due(self) -> int:
        """Deliver every action due now; the number attempted."""
        done = 0
        while True:
            batch = self.store.due_actions(self.wall())
            if not batch:
                return done
            for action in batch:
                await self.deliver(action)
                done += 1

    async def deliver(self, action: Action) -> None:
        """Attempt one action and record the outcome."""
        assert action.id is not None
        target = self.targets.get(action.target)
        attempts = action.attempts + 1
        if target is None:
            self.store.mark(action.id, "failed", attempts=attempts, error="no such target")
            self._report(action, "failed", f"no target named {action.target!r}")
            return
        self.store.mark(action.id, "sending", attempts=attempts)
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

    def _retry(
        self, action: Action, attempts: int, error: str, retry_after: float | None = None
    ) -> None:
        assert action.id is not None
        if attempts >= self.max_attempts:
            self.store.mark(action.id, "failed", error=error)
            self._report(action, "failed", f"gave up after {attempts} attempts: {error}")
            return
        delay = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:  # the platform said when (Retry-After): never sooner
            delay = max(delay, retry_after)
        self.store.mark(action.id, "pending", next_try=self.wall() + delay, error=error)
        log.warning("retry", key=action.key, attempts=attempts, delay=round(delay, 2), error=error)

    def _report(self, action: Action, outcome: str, detail: str) -> None:
        if outcome != "delivered":
            log.warning("delivery", key=action.key, outcome=outcome, detail=detail)
        if self.on_result is not None:
            self.on_result(action, outcome, detail)
