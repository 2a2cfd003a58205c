"""Microsoft Teams workflow webhook: one Adaptive Card per chat action.

Teams' Power Automate "When a Teams webhook request is received" workflow
takes a ``message`` whose attachment is an Adaptive Card. Its URL carries a
signature (``sig=``) and is therefore the target's secret. Text goes in
``RichTextBlock`` runs, which Teams never parses as markdown, so a quoted
mention cannot inject links or formatting and needs no escaping.
"""

from __future__ import annotations

from typing import Any

from daemon.actions import Action, Receipt
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget, clip, secret_url
from daemon.targets.slack import title

CARD_VERSION = "1.4"


def _rich(text: str, **style: Any) -> dict[str, Any]:
    """A block of literal text (``RichTextBlock`` runs are never read as markdown)."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text, **style}]}


def card(action: Action) -> dict[str, Any]:
    """The Adaptive Card: headline, the message, facts, and a report link if any."""
    facts = [{"title": "Incident", "value": action.incident_id}]
    if action.data.get("severity"):
        facts.append({"title": "Severity", "value": str(action.data["severity"])})
    if action.test:
        facts.append({"title": "Test", "value": "crisisd test message: no action needed"})
    body: list[dict[str, Any]] = [
        _rich(clip(title(action), 300), size="Large", weight="Bolder",
              color="Default" if action.test else "Attention"),
        _rich(clip(action.body.strip(), 20000)),
        {"type": "FactSet", "facts": facts},
    ]
    doc: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
    }
    report = action.data.get("report_url") or action.data.get("report")
    if isinstance(report, str) and report.startswith(("http://", "https://")):
        doc["actions"] = [{"type": "Action.OpenUrl", "title": "Open the report", "url": report}]
    return doc


def message(action: Action) -> dict[str, Any]:
    """The workflow webhook body: a ``message`` with one Adaptive Card attachment."""
    return {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": card(action),
        }],
    }


class TeamsTarget(HttpTarget):
    """Posts Adaptive Cards to one Teams workflow webhook (the secret URL)."""

    kind = "teams"

    async def deliver(self, action: Action) -> Receipt:
        """POST the card; the workflow answers 202 Accepted."""
        url, host = secret_url(self.name, self.secret() or "")
        response = await self.request(
            action, "POST", url, json=message(action), secrets=(url,),
            where=f"teams workflow {host}",
        )
        return Receipt(self.name, action.key, {"status": response.status_code})


def from_config(name: str, cfg: TargetConfig) -> TeamsTarget:
    """The target for a ``type: teams`` entry (workflow URL from the secret)."""
    return TeamsTarget(name, cfg)
