"""Mastodon statuses API: publish the holding statement, or reply to the mention.

``Idempotency-Key`` is derived from the action key: Mastodon keeps it for an
hour, so even the request a human re-sends after an "outcome unknown" within
that hour cannot create a second status. crisisd still never re-sends by
itself (public posts are at-most-once). The token is an access token with
``write:statuses`` and is the target's secret. ``url`` is the instance.

Action data read here: ``reply_to`` (the status id *on this instance*, or
its URL), ``visibility`` (default ``public``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from daemon.actions import Action, PermanentError, Receipt
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget
from daemon.targets.x import reply_id

DEFAULT_URL = "https://mastodon.social"
VISIBILITY = ("public", "unlisted", "private", "direct")


def request_body(action: Action) -> dict[str, Any]:
    """The ``POST /api/v1/statuses`` form (``status``, ``in_reply_to_id``, ``visibility``)."""
    text = action.body.strip()
    if not text:
        raise PermanentError("empty post")
    visibility = str(action.data.get("visibility") or "public")
    if visibility not in VISIBILITY:
        raise PermanentError(f"unknown Mastodon visibility {visibility!r}")
    body: dict[str, Any] = {"status": text, "visibility": visibility}
    parent = reply_id(action)
    if parent:
        body["in_reply_to_id"] = parent
    return body


class MastodonTarget(HttpTarget):
    """Creates statuses with ``POST {url}/api/v1/statuses``."""

    kind = "mastodon"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        super().__init__(name, cfg)
        self.url = (cfg.url or DEFAULT_URL).rstrip("/") + "/api/v1/statuses"

    async def deliver(self, action: Action) -> Receipt:
        """Publish once; the receipt's ref is the status id, its detail the public URL."""
        body = request_body(action)
        token = self.secret()
        key = hashlib.sha256(action.key.encode()).hexdigest()[:32]
        response = await self.request(
            action, "POST", self.url, json=body, secrets=(token,),
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        )
        try:
            doc = response.json()
        except ValueError:
            doc = {}
        detail: dict[str, Any] = {"status": response.status_code}
        if isinstance(doc, dict) and doc.get("url"):
            detail["url"] = str(doc["url"])
        if "in_reply_to_id" in body:
            detail["in_reply_to"] = body["in_reply_to_id"]
        ref = str(doc.get("id", "")) if isinstance(doc, dict) else ""
        return Receipt(self.name, ref or action.key, detail)


def from_config(name: str, cfg: TargetConfig) -> MastodonTarget:
    """The target for a ``type: mastodon`` entry (access token from the secret)."""
    return MastodonTarget(name, cfg)
