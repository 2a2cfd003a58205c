"""Slack incoming webhook: one Block Kit message per chat action.

The webhook URL is itself the credential (anyone holding it can post to the
channel), so it is this target's secret, read from the environment or a
file, and errors name only its host.

Text from the public (a mention quoted in an update) is escaped for Slack's
mrkdwn: ``&``, ``<`` and ``>`` are entities, so a mention cannot forge a
``<!channel>`` ping or a disguised link.
"""

from __future__ import annotations

from typing import Any

from daemon.actions import Action, Receipt
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget, clip, secret_url

HEADER_MAX = 150
SECTION_MAX = 3000
MAX_SECTIONS = 10


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _chunks(text: str, size: int) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, cut at line ends where possible."""
    out: list[str] = []
    while len(text) > size:
        cut = text.rfind("\n", 0, size)
        cut = cut if cut > size // 2 else size
        out.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text:
        out.append(text)
    return out


def title(action: Action) -> str:
    """The headline: the subject, else the first line of the body, marked when a test."""
    text = action.subject.strip() or next(
        (line.strip() for line in action.body.splitlines() if line.strip()), "crisisd"
    )
    return ("[TEST] " if action.test and "TEST" not in text else "") + text


def message(action: Action) -> dict[str, Any]:
    """The webhook body: ``text`` (notification fallback) and ``blocks``."""
    head = title(action)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(head, HEADER_MAX),
                                    "emoji": False}},
    ]
    body = escape(action.body.strip())
    for piece in _chunks(body, SECTION_MAX)[:MAX_SECTIONS]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": piece}})
    context = [f"incident *{escape(action.incident_id)}*"]
    if action.data.get("severity"):
        context.append(f"severity *{escape(str(action.data['severity']))}*")
    context.append("crisisd test message: no action needed" if action.test else "crisisd")
    blocks.append({"type": "context",
                   "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    report = action.data.get("report_url") or action.data.get("report")
    if isinstance(report, str) and report.startswith(("http://", "https://")):
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open the report"},
            "url": report, "action_id": "crisisd-report"}]})
    fallback = escape(head) + ("\n" + body if body else "")
    return {"text": clip(fallback, 3000), "blocks": blocks}


class SlackTarget(HttpTarget):
    """Posts Block Kit messages to one incoming webhook (the secret URL)."""

    kind = "slack"

    async def deliver(self, action: Action) -> Receipt:
        """POST the message; Slack answers ``ok``, 429 carries ``Retry-After``."""
        url, host = secret_url(self.name, self.secret() or "")
        response = await self.request(
            action, "POST", url, json=message(action), secrets=(url,), where=f"slack webhook {host}"
        )
        return Receipt(self.name, action.key, {"status": response.status_code,
                                               "answer": response.text[:50]})


def from_config(name: str, cfg: TargetConfig) -> SlackTarget:
    """The target for a ``type: slack`` entry (webhook URL from the secret)."""
    return SlackTarget(name, cfg)
