"""Email over SMTP (aiosmtplib): plain text + HTML, threaded per incident.

Emails are at-least-once. What makes a retry harmless is the ``Message-ID``:
it is derived from the action key, so the same action always produces the
same id (and the same bytes) and mail systems and people recognise a
redelivery. ``In-Reply-To``/``References`` point at one per-incident thread
root, so every mail about an incident (brief, approval request, escalation,
status updates, resolution) lands in one conversation.

TLS is STARTTLS (port 587), implicit TLS (465) or none (25, a local relay);
certificates are always verified, against ``ca_file`` when set. The SMTP
password is the target's secret; ``username`` turns authentication on.

Action data read here (optional): ``html`` (an HTML body already rendered and
escaped by the template engine; else one is made from the text), ``chart``
(path of a PNG/SVG/JPEG image) or ``chart_svg`` (SVG markup), shown inline.
"""

from __future__ import annotations

import hashlib
import html
import re
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

from daemon.actions import Action, PermanentError, Receipt, RetryableError
from daemon.config import TargetConfig
from daemon.targets._http import read_secret, redact

PORTS = {"starttls": 587, "implicit": 465, "none": 25}
IMAGE_TYPES = {".png": ("image", "png"), ".svg": ("image", "svg+xml"),
               ".jpg": ("image", "jpeg"), ".jpeg": ("image", "jpeg"), ".gif": ("image", "gif")}
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_+]")


def domain(sender: str) -> str:
    """The right-hand side of Message-IDs: the sender's domain."""
    return sender.rsplit("@", 1)[-1].strip(" >") or "crisisd.invalid"


def message_id(action: Action, sender: str) -> str:
    """The same ``Message-ID`` on every attempt of one action."""
    digest = hashlib.sha256(action.key.encode()).hexdigest()[:32]
    return f"<crisisd.{digest}@{domain(sender)}>"


def thread_id(incident_id: str, sender: str) -> str:
    """The per-incident thread root every mail of the incident replies to."""
    safe = _UNSAFE.sub("-", incident_id)[:64] or "incident"
    return f"<crisisd.incident.{safe}@{domain(sender)}>"


def addresses(action: Action) -> list[tuple[str, str]]:
    """(name, address) of every recipient with an email, without duplicates."""
    seen: dict[str, str] = {}
    for r in action.to:
        addr = r.get("email")
        if addr and addr.lower() not in {a.lower() for a in seen}:
            seen[str(addr)] = str(r.get("name") or "")
    return [(name, addr) for addr, name in seen.items()]


def subject(action: Action) -> str:
    """The subject line (the first body line if the action has none), marked when a test."""
    text = action.subject.strip() or next(
        (line.strip() for line in action.body.splitlines() if line.strip()), "crisisd"
    )
    text = " ".join(text.split())
    return ("[TEST] " if action.test and "TEST" not in text else "") + text


def text_to_html(text: str) -> str:
    """An HTML rendering of the plain-text body (escaped: it may quote the public)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n".join(
        f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs
    )


def _chart(action: Action) -> tuple[bytes, str, str, str] | None:
    """(bytes, maintype, subtype, filename) of the action's chart, if it has a readable one."""
    svg = action.data.get("chart_svg")
    if isinstance(svg, str) and svg.strip():
        return svg.encode(), "image", "svg+xml", "chart.svg"
    path = action.data.get("chart")
    if not path:
        return None
    p = Path(str(path))
    kind = IMAGE_TYPES.get(p.suffix.lower())
    if kind is None or not p.is_file():
        return None
    return p.read_bytes(), kind[0], kind[1], p.name


def build_message(action: Action, sender: str) -> EmailMessage:
    """The MIME message: text, HTML alternative, chart inline (multipart/related)."""
    rcpts = addresses(action)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(formataddr(r) for r in rcpts) or sender
    msg["Subject"] = subject(action)
    msg["Date"] = formatdate(action.created_at, usegmt=True)
    msg["Message-ID"] = message_id(action, sender)
    if not action.test:
        root = thread_id(action.incident_id, sender)
        msg["In-Reply-To"] = root
        msg["References"] = root
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Crisisd-Incident"] = action.incident_id
    if action.test:
        msg["X-Crisisd-Test"] = "yes"
    text = action.body
    if action.test:
        text = "crisisd TEST message: no action needed.\n\n" + text
    msg.set_content(text)
    body_html = action.data.get("html")
    if not isinstance(body_html, str) or not body_html.strip():
        body_html = text_to_html(text)
    chart = _chart(action)
    cid = make_msgid("chart", domain(sender)) if chart else ""
    if chart:
        body_html += f'\n<p><img src="cid:{cid[1:-1]}" alt="incident chart"></p>'
    msg.add_alternative(
        f"<!doctype html><html><body>{body_html}</body></html>", subtype="html"
    )
    if chart:
        data, maintype, subtype, filename = chart
        html_part = msg.get_payload()[1]
        html_part.add_related(data, maintype, subtype, cid=cid, filename=filename,
                              disposition="inline")
    return msg


def _response_error(name: str, exc: aiosmtplib.SMTPResponseException, password: str | None,
                    ) -> RetryableError | PermanentError:
    """4xx answers are temporary (retry), 5xx permanent, per RFC 5321."""
    msg = redact(f"{name}: SMTP {exc.code} {exc.message}", password)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return PermanentError(msg + " (login rejected: check username and password)")
    if 400 <= exc.code < 500:
        return RetryableError(msg)
    return PermanentError(msg)


class SmtpTarget:
    """Sends each email action as one message to the listed recipients."""

    kind = "smtp"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.sender = cfg.sender or ""
        self.port = cfg.port or PORTS[cfg.tls]

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.cfg.tls == "none":
            return None
        cafile = str(self.cfg.ca_file) if self.cfg.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    async def deliver(self, action: Action) -> Receipt:
        """Send the message; 4xx and lost connections retry (same Message-ID), 5xx is final."""
        rcpts = [addr for _, addr in addresses(action)]
        if not rcpts:
            raise PermanentError(f"{self.name}: no email address among the recipients")
        password = read_secret(self.name, self.cfg, required=bool(self.cfg.username))
        msg = build_message(action, self.sender)
        kwargs: dict[str, Any] = {
            "hostname": self.cfg.host,
            "port": self.port,
            "timeout": self.cfg.timeout,
            "use_tls": self.cfg.tls == "implicit",
            "start_tls": self.cfg.tls == "starttls",
            "tls_context": self._tls_context(),
        }
        if self.cfg.username:
            kwargs.update(username=self.cfg.username, password=password)
        where = f"{self.cfg.host}:{self.port}"
        try:
            refused, answer = await aiosmtplib.send(
                msg, sender=self.sender, recipients=rcpts, **kwargs
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            text = redact("; ".join(f"{e.recipient}: {e.code} {e.message}"
                                    for e in exc.recipients), password)
            if codes and all(400 <= c < 500 for c in codes):
                raise RetryableError(f"{self.name}: recipients deferred: {text}") from None
            raise PermanentError(f"{self.name}: recipients refused: {text}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _response_error(self.name, exc, password) from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(f"{self.name}: {where}: certificate not trusted "
                                 f"({exc.verify_message}); set ca_file?") from None
        except OSError as exc:  # refused, reset, timed out: the mail may be retried
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise PermanentError(f"{self.name}: {where}: certificate not trusted "
                                     f"({cause.verify_message}); set ca_file?") from None
            what = redact(f"{type(exc).__name__}: {exc}", password)
            raise RetryableError(f"{self.name}: {where}: {what}") from None
        except aiosmtplib.SMTPException as exc:  # e.g. no AUTH or STARTTLS offered: config
            what = redact(f"{type(exc).__name__}: {exc}", password)
            raise PermanentError(f"{self.name}: {where}: {what}") from None
        detail: dict[str, Any] = {"recipients": [r for r in rcpts if r not in refused],
                                  "answer": redact(str(answer), password)[:200]}
        if refused:
            detail["refused"] = {r: f"{v.code} {v.message}" for r, v in refused.items()}
        return Receipt(self.name, str(msg["Message-ID"]), detail)


def from_config(name: str, cfg: TargetConfig) -> SmtpTarget:
    """The target for a ``type: smtp`` entry (password from the secret)."""
    return SmtpTarget(name, cfg)
