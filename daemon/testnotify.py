"""``crisisd test-notify TARGET``: prove one configured integration works, now.

People ask every alerting tool for this: before the crisis, send one clearly
marked test message through the real target (real credentials, real
network) and show exactly what came back, the receipt or the error with its
class (retryable, permanent, outcome unknown), so a bad token or a firewall
is found on a quiet afternoon instead of during a recall.

It bypasses the outbox on purpose: one attempt, no retry, no queue, so what
is printed is what the platform said. A PagerDuty test alert is resolved
right after it is triggered; a public post needs ``--public``, because it
really is public.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import sys
import time
from typing import Any, TextIO

from daemon.actions import (
    Action,
    DeliveryError,
    PermanentError,
    Receipt,
    RetryableError,
    Target,
    UnknownOutcomeError,
)
from daemon.config import Config, TargetConfig
from daemon.targets import make


class Refused(Exception):
    """test-notify will not send this (unknown target, a public post without --public)."""


def build_action(name: str, cfg: TargetConfig, *, to: str | None = None,
                now: float | None = None) -> Action:
    """The test message for target ``name``, in the first medium the target delivers."""
    now = time.time() if now is None else now
    medium = cfg.media[0] if cfg.media else "chat"
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    host = socket.gethostname()
    if medium == "post":
        body = f"Test message from crisisd ({stamp}). Please ignore."
    else:
        body = (f"This is a TEST message from crisisd test-notify, sent through target "
                f"'{name}' ({cfg.type}) from {host} at {stamp}.\n\nNo action is needed: "
                f"it only checks that crisisd can reach you here.")
    address = to or cfg.sender
    recipient: dict[str, Any] = {"id": "test-notify", "name": "crisisd test-notify",
                                 "email": address, "pager": None, "chat": None}
    return Action(
        key=f"test-notify/{name}/{int(now * 1000)}",
        incident_id=f"test-{int(now)}",
        medium=medium,
        target=name,
        to=[recipient],
        subject=f"[TEST] crisisd test notification via {name}",
        body=body,
        created_at=now,
        data={"severity": "info", "test": True},
        test=True,
    )


def outcome(exc: DeliveryError) -> str:
    """How the outbox would treat this error, in words."""
    if isinstance(exc, UnknownOutcomeError):
        return "outcome unknown"
    if isinstance(exc, RetryableError):
        return "retryable"
    if isinstance(exc, PermanentError):
        return "permanent"
    return "failed"


async def send(config: Config, name: str, *, to: str | None = None,
               public: bool = False) -> list[Receipt]:
    """Deliver the test message through target ``name``; the receipts (raises on error)."""
    cfg = config.targets.get(name)
    if cfg is None:
        known = ", ".join(sorted(config.targets)) or "none"
        raise Refused(f"no target named {name!r} in the config (configured: {known})")
    action = build_action(name, cfg, to=to)
    if action.medium == "post" and not public:
        raise Refused(f"target {name!r} publishes public posts; add --public to really post "
                      "a test message there")
    target: Target = make(name, cfg, config.state_dir)
    try:
        if cfg.type == "pagerduty":
            action.data["dedup_key"] = f"crisisd-test/{action.key}"
        receipts = [await target.deliver(action)]
        if cfg.type == "pagerduty":  # leave no test alert open on someone's phone
            action.data["event_action"] = "resolve"
            receipts.append(await target.deliver(action))
        return receipts
    finally:
        close = getattr(target, "aclose", None)
        if close is not None:
            await close()


def run(config: Config, name: str, *, to: str | None = None, public: bool = False,
        out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """The command: print the receipt(s) and return 0, or the exact error and return 1."""
    try:
        receipts = asyncio.run(send(config, name, to=to, public=public))
    except Refused as exc:
        print(f"crisisd test-notify: {exc}", file=err)
        return 1
    except DeliveryError as exc:
        print(f"crisisd test-notify {name}: FAILED ({outcome(exc)}, "
              f"{type(exc).__name__}): {exc}", file=err)
        return 1
    except Exception as exc:  # a bug or an unexpected library error: show it as it is
        print(f"crisisd test-notify {name}: FAILED (unexpected {type(exc).__name__}): {exc}",
              file=err)
        return 1
    for receipt in receipts:
        print(f"crisisd test-notify {name}: delivered, receipt {receipt.ref} "
              f"{json.dumps(receipt.detail, sort_keys=True, default=str)}", file=out)
    return 0
