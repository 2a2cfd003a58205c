"""The delivery contract: what an action is and what a target promises.

Every integration (log, file now; PagerDuty, SMTP, Slack, X next) is one file
in ``daemon/targets/`` implementing ``Target.deliver``. The outbox worker only
knows this contract, so adding an integration touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Medium = Literal["page", "email", "chat", "post", "webhook"]
MEDIA: tuple[Medium, ...] = ("page", "email", "chat", "post", "webhook")


@dataclass(slots=True)
class Action:
    """One thing to deliver, durable in the outbox until it is done.

    ``key`` is the idempotency key: the same key is never queued twice, and
    targets pass it downstream (PagerDuty ``dedup_key``, email
    ``Message-ID``) so at-least-once delivery does not double-notify.
    ``created_at`` is clock time (simulated in replay); ``to`` holds the
    resolved recipients as plain data.
    """

    key: str
    incident_id: str
    medium: Medium
    target: str
    to: list[dict[str, Any]]
    subject: str
    body: str
    created_at: float
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    status: str = "pending"
    attempts: int = 0
    last_error: str = ""
    test: bool = False

    @property
    def at_most_once(self) -> bool:
        """Public posts are never retried blindly: a double post is worse than a late one."""
        return self.medium == "post"


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of delivery from a target (its reference, e.g. a post id or file name)."""

    target: str
    ref: str
    detail: dict[str, Any] = field(default_factory=dict)


class DeliveryError(Exception):
    """A delivery failed."""


class RetryableError(DeliveryError):
    """Worth trying again later (timeout before sending, 429, 5xx, connection refused).

    ``retry_after`` is the wait in seconds the platform asked for (``Retry-After``,
    rate-limit reset), or ``None``; the outbox waits at least that long.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnknownOutcomeError(DeliveryError):
    """The request left crisisd but no answer came back (timeout or reset after sending).

    The platform may or may not have acted on it: an idempotent page or email
    may be retried, but a public post must not be (it is flagged for a human).
    """


class PermanentError(DeliveryError):
    """Will never work as is (400, unknown recipient, bad credentials)."""


class Target(Protocol):
    """An integration the outbox delivers to."""

    name: str

    async def deliver(self, action: Action) -> Receipt:
        """Deliver ``action``; raise ``RetryableError`` or ``PermanentError`` on failure."""
        ...
