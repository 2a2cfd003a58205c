"""X (Twitter) API v2: publish the holding statement as a post, or as a reply.

A public post is at-most-once: X has no idempotency key, so a post whose
answer never came back is raised as ``UnknownOutcomeError`` and flagged for
a human instead of retried (see ``_http``). The token is an OAuth 2.0 user
access token (scope ``tweet.write``) and is the target's secret.

The approved text is posted verbatim or not at all: a statement longer than
X allows is a permanent error, never silently truncated (the approval is
bound to the exact text). Action data read here: ``reply_to`` (the id or
URL of the post to answer, when the playbook asks to reply to the mention).
"""

from __future__ import annotations

import re
from typing import Any

from daemon.actions import Action, PermanentError, Receipt
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget

DEFAULT_URL = "https://api.x.com"
MAX_WEIGHT = 280
URL_WEIGHT = 23
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
_LIGHT = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))


def weighted_length(text: str) -> int:
    """Length as X counts it: links are 23, CJK and emoji count double (twitter-text v3)."""
    total = 0
    rest = _URL.sub(lambda _: "", text)
    total += URL_WEIGHT * len(_URL.findall(text))
    for ch in rest:
        cp = ord(ch)
        total += 1 if any(lo <= cp <= hi for lo, hi in _LIGHT) else 2
    return total


def reply_id(action: Action) -> str | None:
    """The post to reply to, from ``data.reply_to`` (an id, or a status URL ending in one)."""
    value = action.data.get("reply_to")
    if value in (None, ""):
        return None
    text = str(value).rstrip("/")
    tail = text.rsplit("/", 1)[-1]
    if not tail.isdigit():
        raise PermanentError(f"cannot reply to {text!r}: expected a post id or status URL")
    return tail


def request_body(action: Action) -> dict[str, Any]:
    """The create-post body (``text``, and ``reply.in_reply_to_tweet_id`` for a reply)."""
    text = action.body.strip()
    if not text:
        raise PermanentError("empty post")
    weight = weighted_length(text)
    if weight > MAX_WEIGHT:
        raise PermanentError(f"post is {weight} characters as X counts them; "
                             f"X allows {MAX_WEIGHT}: shorten the statement")
    body: dict[str, Any] = {"text": text}
    parent = reply_id(action)
    if parent:
        body["reply"] = {"in_reply_to_tweet_id": parent}
    return body


class XTarget(HttpTarget):
    """Creates posts with ``POST {url}/2/tweets``."""

    kind = "x"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        super().__init__(name, cfg)
        self.url = (cfg.url or DEFAULT_URL).rstrip("/") + "/2/tweets"

    async def deliver(self, action: Action) -> Receipt:
        """Publish once; the receipt's ref is the new post's id."""
        body = request_body(action)
        token = self.secret()
        response = await self.request(
            action, "POST", self.url, json=body, secrets=(token,),
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            post_id = str(response.json()["data"]["id"])
        except (ValueError, KeyError, TypeError):
            post_id = ""
        detail = {"status": response.status_code}
        if post_id:
            detail["url"] = f"https://x.com/i/web/status/{post_id}"
        if "reply" in body:
            detail["in_reply_to"] = body["reply"]["in_reply_to_tweet_id"]
        return Receipt(self.name, post_id or action.key, detail)


def from_config(name: str, cfg: TargetConfig) -> XTarget:
    """The target for a ``type: x`` entry (user access token from the secret)."""
    return XTarget(name, cfg)
