"""Generic JSON webhook, optionally signed with HMAC-SHA256.

For anything crisisd has no dedicated integration for (an internal status
page, a ticketing system, pausing scheduled marketing posts). A playbook
``webhook`` step whose templated body is JSON is sent verbatim to the step's
URL with its method; any other action is sent as a JSON envelope
(``key``, ``incident``, ``medium``, ``subject``, ``text``, ``to``, ``data``,
``test``) to the target's ``url``.

When the target has a secret, each request carries
``X-Crisisd-Timestamp: <unix seconds>`` and
``<signature_header>: sha256=<hex HMAC-SHA256 of "<timestamp>." + body>``:
the receiver recomputes it over the raw body and rejects stale timestamps,
so a captured request can neither be forged nor replayed later.
``Idempotency-Key`` is stable per action, so receivers can drop a retry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from daemon.actions import Action, PermanentError, Receipt
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget


def idempotency_key(action: Action) -> str:
    """A header-safe key, the same on every attempt of one action."""
    return hashlib.sha256(action.key.encode()).hexdigest()[:32]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def envelope(action: Action) -> dict[str, Any]:
    """The JSON document sent for an action that is not a templated webhook step."""
    return {
        "key": action.key,
        "incident": action.incident_id,
        "medium": action.medium,
        "subject": action.subject,
        "text": action.body,
        "to": action.to,
        "data": action.data,
        "created_at": action.created_at,
        "test": action.test,
    }


def payload(action: Action) -> bytes:
    """The request body: a webhook step's own JSON verbatim, else the envelope."""
    if action.medium == "webhook" and action.body.strip():
        try:
            json.loads(action.body)
        except ValueError:
            pass
        else:
            return action.body.encode()
    return json.dumps(envelope(action), ensure_ascii=False, default=str).encode()


class WebhookTarget(HttpTarget):
    """Sends JSON to the step's or the target's URL, signed when a secret is set."""

    kind = "webhook"

    async def deliver(self, action: Action) -> Receipt:
        """Send the request; 2xx delivers, 429/5xx retry (posts: unknown), 4xx is permanent."""
        url = str(action.data.get("url") or self.cfg.url or "")
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"{self.name}: no URL (set `url` or use a webhook step)")
        method = str(action.data.get("method") or "POST").upper()
        secret = self.secret(required=False)
        body = b"" if method in ("GET", "DELETE") else payload(action)
        headers = {"Idempotency-Key": idempotency_key(action)}
        if body:
            headers["Content-Type"] = "application/json"
        if secret:
            stamp = str(int(time.time()))
            headers["X-Crisisd-Timestamp"] = stamp
            headers[self.cfg.signature_header] = sign(secret, stamp, body)
        response = await self.request(
            action, method, url, content=body or None, headers=headers, secrets=(secret,)
        )
        return Receipt(self.name, action.key, {"status": response.status_code})


def from_config(name: str, cfg: TargetConfig) -> WebhookTarget:
    """The target for a ``type: webhook`` entry of ``config.yaml``."""
    return WebhookTarget(name, cfg)
