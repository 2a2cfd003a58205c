"""Message templates: Jinja2 in a sandbox, escaped for the medium.

Playbook authors write templates; the public writes mentions. Mention text
and author names are only ever *data* handed to a template, never template
source, and every value is escaped for where it lands (HTML email, Slack
mrkdwn), so a tweet containing ``{{`` or ``<script>`` is shown, not run.
The sandbox stops a template from reaching Python internals.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Literal

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    DictLoader,
    StrictUndefined,
    TemplateError,
    Undefined,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

Medium = Literal["text", "html", "mrkdwn"]

# Shipped defaults; a file of the same name in ``playbooks/templates/`` wins.
DEFAULTS: dict[str, str] = {
    "page": (
        "[{{ incident.severity | upper }}] {{ brand }} crisis"
        "{% if channel %} on {{ channel }}{% endif %}: "
        "{{ incident.title }} — {{ figures.summary }}."
        "{% if role_of_recipient %} You are {{ role_of_recipient }}.{% endif %}"
    ),
    "incident-brief": (
        "Incident {{ incident.id }} ({{ incident.title }}) opened {{ incident.opened }}\n"
        "Brand: {{ brand }}    Channel: {{ channel or 'none' }}    "
        "Severity: {{ incident.severity }}\n"
        "What we see: {{ figures.summary }}\n"
        "{% if why %}Why it alerted:\n{% for line in why %}  - {{ line }}\n{% endfor %}{% endif %}"
        "{% if top_terms %}Top terms: {{ top_terms | join(', ') }}\n{% endif %}"
        "Roles:\n{% for role, name in roles.items() %}  - {{ role }}: {{ name }}\n{% endfor %}"
        "{% if samples %}Most-read mentions:\n{% for s in samples %}"
        "  - @{{ s.author }} ({{ s.followers }} followers): {{ s.text }}\n{% endfor %}{% endif %}"
    ),
    "status-update": (
        "Status of {{ incident.id }} ({{ incident.title }}) at {{ now }}: {{ incident.status }}, "
        "severity {{ incident.severity }}. {{ figures.summary }}. "
        "Signals: {{ incident.signals | join(', ') }}. "
        "Statements: {{ incident.statements }}."
    ),
    "resolved": (
        "Incident {{ incident.id }} ({{ incident.title }}) on {{ brand }} is resolved "
        "({{ incident.duration }}).{% if report %} Post-crisis report: {{ report }}{% endif %}"
    ),
    "approval-request": (
        "Approval needed within {{ deadline }} for the holding statement of {{ incident.id }} "
        "to be posted{% if channel %} on {{ channel }}{% endif %}:\n\n{{ statement }}\n\n"
        "Approve this exact text: crisisd incidents approve {{ incident.id }} "
        "{{ statement_id }} {{ sha256[:12] }}"
    ),
    "escalation": (
        "ESCALATION {{ incident.id }} ({{ incident.title }}) on {{ brand }}: {{ reason }}. "
        "{{ figures.summary }}."
    ),
    "role-assigned": (
        "You are {{ role }} for incident {{ incident.id }} ({{ incident.title }}) on {{ brand }}."
    ),
}


TEMPLATE_SUFFIXES = (".j2", ".txt", ".md", ".jinja")


def read_directory(directory: Path) -> dict[str, str]:
    """Templates of a directory by name: ``incident-brief.j2`` is ``incident-brief``.

    Read once when the playbooks load (and again on reload), so a template
    edited mid-incident does not change messages until it has been validated.
    """
    out: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in TEMPLATE_SUFFIXES:
            out[path.stem] = path.read_text(encoding="utf-8")
    return out


def sha256(text: str) -> str:
    """The digest an approver signs: approval is of this exact text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _mrkdwn(value: Any) -> Any:
    """Escape the three characters Slack's mrkdwn treats as markup."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value


class Templates:
    """Compiles and renders the playbooks' templates for each medium."""

    def __init__(self, directory: Path | None = None) -> None:
        loaders: list[BaseLoader] = []
        if directory is not None and directory.is_dir():
            loaders.append(DictLoader(read_directory(directory)))
        loaders.append(DictLoader(DEFAULTS))
        loader = ChoiceLoader(loaders)
        common: dict[str, Any] = {"loader": loader, "keep_trailing_newline": False}
        self._envs = {
            "text": ImmutableSandboxedEnvironment(undefined=Undefined, **common),
            "html": ImmutableSandboxedEnvironment(undefined=Undefined, autoescape=True, **common),
            "mrkdwn": ImmutableSandboxedEnvironment(
                undefined=Undefined, finalize=_mrkdwn, **common
            ),
        }
        self._strict = ImmutableSandboxedEnvironment(undefined=StrictUndefined, **common)

    def names(self) -> set[str]:
        """Every template name available (shipped and in the directory)."""
        return set(self._envs["text"].list_templates())

    def check(self, source: str | None = None, name: str | None = None) -> str | None:
        """Why a template is unusable (syntax, unknown name, unknown variable), or ``None``.

        It is compiled and rendered once against a sample incident with
        strict undefined variables, so a misspelt ``{{ brnad }}`` is caught
        when the playbook is validated, not in the middle of a crisis.
        """
        try:
            if name is not None:
                template = self._strict.get_template(name)
            else:
                template = self._strict.from_string(source or "")
            template.render(sample_context())
        except TemplateError as exc:
            where = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
            what = f"template {name!r}" if name else "template"
            return f"{what} does not work{where}: {exc.message or exc}"
        except Exception as exc:  # e.g. a division by zero: still the author's to fix
            what = f"template {name!r}" if name else "template"
            return f"{what} fails on a sample incident: {type(exc).__name__}: {exc}"
        return None

    def render(
        self,
        context: dict[str, Any],
        medium: Medium = "text",
        source: str | None = None,
        name: str | None = None,
    ) -> str:
        """Render inline ``source`` or the named template; public text stays data."""
        env = self._envs[medium]
        template = env.get_template(name) if name is not None else env.from_string(source or "")
        return template.render(context).strip()


def stamp(ts: float) -> str:
    """A time as people read it in messages (UTC, minutes)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def span(seconds: float) -> str:
    """A duration as people read it (``1h 05m``)."""
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"


def sample_context() -> dict[str, Any]:
    """A plausible context used to test-render templates during validation."""
    return {
        "brand": "acme",
        "channel": "twitter",
        "now": stamp(0),
        "incident": {
            "id": "acme-20260101-0000",
            "title": "Sample crisis",
            "playbook": "sample",
            "severity": "high",
            "status": "open",
            "opened": stamp(0),
            "duration": "1h 00m",
            "signals": ["volume"],
            "statements": "none",
        },
        "figures": {
            "volume": 120,
            "expected": 20.0,
            "ratio": 6.0,
            "negative_share": 0.6,
            "negative_pct": "60%",
            "score": 0.999,
            "summary": "120 mentions per bucket (normally 20), 60% negative",
        },
        "roles": {"incident_commander": "Sample Person"},
        "role_holders": {"incident_commander": {"name": "Sample Person", "email": "x@example.com"}},
        "top_terms": ["recall"],
        "why": ["volume: 120 (expected 20, normal 8–36)",
                "negative_share over the last 30m: 0.55 (expected 0.41, normal 0.33–0.49)"],
        "samples": [{"author": "someone", "followers": 10, "text": "sample", "url": ""}],
        "report": "",
        "statement": "sample statement",
        "statement_id": "s1",
        "sha256": "0" * 64,
        "deadline": "15m",
        "reason": "sample",
        "role": "incident_commander",
        "role_of_recipient": "incident_commander",
    }
