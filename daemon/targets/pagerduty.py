"""PagerDuty Events API v2: trigger, acknowledge and resolve one alert per incident.

The ``dedup_key`` is derived from the crisisd incident id, so every page of
one incident (the first page, an escalation, a retry after a 500) lands on
the same PagerDuty alert instead of paging twice, and the acknowledge and
resolve events find it. The routing key is the target's secret.

Action data read here (all optional): ``event_action`` (``trigger``,
``acknowledge``, ``resolve``; default ``trigger``), ``severity`` (crisisd's
``low``/``high``/``critical`` or PagerDuty's own), ``dedup_key``, ``brand``,
``figures``, ``report_url`` (or an http ``report``), ``links``.
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from daemon.actions import Action, PermanentError, Receipt
from daemon.config import TargetConfig
from daemon.targets._http import HttpTarget, clip, excerpt

DEFAULT_URL = "https://events.pagerduty.com"
SEVERITY = {
    "critical": "critical",
    "high": "error",
    "low": "warning",
    "error": "error",
    "warning": "warning",
    "info": "info",
}
"""crisisd severity → PagerDuty severity (PagerDuty's own names pass through)."""

EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
SUMMARY_MAX = 1024
_RESERVED = {"event_action", "severity", "dedup_key", "links", "report_url"}


def dedup_key(action: Action) -> str:
    """One key per incident, so retries and escalations never open a second alert.

    A ``test-notify`` action gets its own key, so a test never touches a real alert.
    """
    if action.data.get("dedup_key"):
        return str(action.data["dedup_key"])[:255]
    if action.test:
        return clip(f"crisisd-test/{action.key}", 255)
    return clip(f"crisisd/{action.incident_id}", 255)


def severity(action: Action) -> str:
    """The PagerDuty severity of a page (tests are ``info``; unknown pages ``error``)."""
    if action.test:
        return "info"
    return SEVERITY.get(str(action.data.get("severity", "")).lower(), "error")


def summary(action: Action) -> str:
    """The alert's one-line summary, at most 1024 characters as PagerDuty requires."""
    text = action.subject.strip()
    if not text:
        text = next((line.strip() for line in action.body.splitlines() if line.strip()), "")
    text = " ".join(text.split()) or f"crisisd incident {action.incident_id}"
    if action.test and "TEST" not in text:
        text = "[TEST] " + text
    return clip(text, SUMMARY_MAX)


def links(action: Action) -> list[dict[str, str]]:
    """Links shown on the alert: the post-crisis report and any the action carries."""
    out: list[dict[str, str]] = []
    report = action.data.get("report_url") or action.data.get("report")
    if isinstance(report, str) and report.startswith(("http://", "https://")):
        out.append({"href": report, "text": "crisisd incident report"})
    for link in action.data.get("links") or []:
        if isinstance(link, dict) and str(link.get("href", "")).startswith("http"):
            out.append({"href": str(link["href"]), "text": str(link.get("text", link["href"]))})
    return out


def event(action: Action, routing_key: str, source: str) -> dict[str, Any]:
    """The Events API v2 body for ``action`` (trigger carries the payload, the others don't)."""
    kind = str(action.data.get("event_action", "trigger"))
    if kind not in EVENT_ACTIONS:
        raise PermanentError(f"unknown PagerDuty event_action {kind!r}")
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": kind,
        "dedup_key": dedup_key(action),
    }
    if kind != "trigger":
        return body
    details = {k: v for k, v in action.data.items() if k not in _RESERVED}
    details.update(
        incident=action.incident_id,
        message=action.body,
        recipients=[r.get("name") or r.get("id") for r in action.to],
        action_key=action.key,
    )
    if action.test:
        details["test"] = "crisisd test-notify: no action needed"
    body["payload"] = {
        "summary": summary(action),
        "source": source,
        "severity": severity(action),
        "timestamp": dt.datetime.fromtimestamp(action.created_at, dt.UTC).isoformat(),
        "component": str(action.data.get("brand") or "crisisd"),
        "group": action.incident_id,
        "class": "crisis",
        "custom_details": details,
    }
    body["client"] = "crisisd"
    found = links(action)
    if found:
        body["links"] = found
    return body


class PagerDutyTarget(HttpTarget):
    """Sends each page action as one Events API v2 event to ``{url}/v2/enqueue``."""

    kind = "pagerduty"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        super().__init__(name, cfg)
        self.url = (cfg.url or DEFAULT_URL).rstrip("/") + "/v2/enqueue"
        self.source = cfg.source or socket.gethostname()

    async def deliver(self, action: Action) -> Receipt:
        """Enqueue the event; 429/5xx are retryable (same dedup key), 400 is permanent."""
        key = self.secret()
        assert key is not None
        body = event(action, key, self.source)
        response = await self.request(
            action, "POST", self.url, json=body, secrets=(key,),
            headers={"Accept": "application/json"},
        )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        detail = {"event_action": body["event_action"], "status": response.status_code,
                  "message": str(answer.get("message", ""))[:200]}
        return Receipt(self.name, str(answer.get("dedup_key") or body["dedup_key"]), detail)

    def check(self, action: Action, response: Any, where: str,
              secrets: tuple[str | None, ...] = (), detail: str | None = None) -> None:
        """Report PagerDuty's own reasons for a 400 (``message`` and ``errors``)."""
        if response.status_code == 400 and detail is None:
            try:
                doc = response.json()
                detail = "; ".join([str(doc.get("message", ""))]
                                   + [str(e) for e in doc.get("errors", [])])
            except (ValueError, AttributeError):
                detail = excerpt(response)
        super().check(action, response, where, secrets, detail)


def from_config(name: str, cfg: TargetConfig) -> PagerDutyTarget:
    """The target for a ``type: pagerduty`` entry of ``config.yaml``."""
    return PagerDutyTarget(name, cfg)
