"""Facebook Page via the Graph API: a post on the Page feed, or a comment reply.

A Page can answer comments on its own posts (``POST /{comment-id}/comments``),
which is where crises on Facebook usually unfold; otherwise the statement is
a new post (``POST /{page-id}/feed``). The Page access token is the target's
secret and travels in the form body, never in a URL that could be logged.

Graph API errors are JSON (``error.code``, ``error.message``): the rate-limit
codes are retryable (the post was refused, not made), the rest permanent;
a 5xx after sending is an unknown outcome like on every public channel.
Action data read here: ``reply_to`` (the comment or post id to answer).
"""

from __future__ import annotations

from typing import Any

import httpx

from daemon.actions import Action, PermanentError, Receipt, RetryableError
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget, excerpt, redact

DEFAULT_URL = "https://graph.facebook.com/v21.0"
RATE_LIMIT_CODES = {4, 17, 32, 613, 80001}
RATE_LIMIT_WAIT = 60.0


def graph_error(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a Graph API answer, or ``{}``."""
    try:
        doc = response.json()
    except ValueError:
        return {}
    error = doc.get("error") if isinstance(doc, dict) else None
    return error if isinstance(error, dict) else {}


class FacebookTarget(HttpTarget):
    """Publishes on one Page (``account`` is the Page id)."""

    kind = "facebook"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        super().__init__(name, cfg)
        self.base = (cfg.url or DEFAULT_URL).rstrip("/")
        self.page = cfg.account or ""

    def endpoint(self, action: Action) -> str:
        """``/{reply_to}/comments`` for a reply, else ``/{page}/feed``."""
        parent = action.data.get("reply_to")
        if parent:
            text = str(parent)
            if not text.replace("_", "").isdigit():
                raise PermanentError(f"cannot reply to {text!r}: expected a Graph object id")
            return f"{self.base}/{text}/comments"
        return f"{self.base}/{self.page}/feed"

    async def deliver(self, action: Action) -> Receipt:
        """Publish once; the receipt's ref is the new post or comment id."""
        text = action.body.strip()
        if not text:
            raise PermanentError("empty post")
        url = self.endpoint(action)
        token = self.secret()
        assert token is not None
        response = await self.request(
            action, "POST", url, data={"message": text, "access_token": token}, secrets=(token,)
        )
        try:
            ref = str(response.json().get("id", ""))
        except (ValueError, AttributeError):
            ref = ""
        detail: dict[str, Any] = {"status": response.status_code}
        if action.data.get("reply_to"):
            detail["in_reply_to"] = str(action.data["reply_to"])
        return Receipt(self.name, ref or action.key, detail)

    def check(self, action: Action, response: httpx.Response, where: str,
              secrets: tuple[str | None, ...] = (), detail: str | None = None) -> None:
        """Map Graph API error codes: rate limits retry, token errors are permanent."""
        if response.status_code < 300:
            return
        error = graph_error(response)
        if error:
            code = error.get("code")
            detail = f"{error.get('type', 'error')} {code}: {error.get('message', '')}"
            if code in RATE_LIMIT_CODES and response.status_code < 500:
                msg = redact(f"{self.name}: {where} rate-limited ({detail})", *secrets)
                raise RetryableError(msg, retry_after=RATE_LIMIT_WAIT)
        super().check(action, response, where, secrets, detail or excerpt(response))


def from_config(name: str, cfg: TargetConfig) -> FacebookTarget:
    """The target for a ``type: facebook`` entry (Page access token from the secret)."""
    return FacebookTarget(name, cfg)
