"""A real SMTP server (aiosmtpd) on loopback that records the mail it accepts.

It can speak plain SMTP, STARTTLS or implicit TLS with a throw-away
self-signed certificate (made with the ``openssl`` command), require a login,
and answer DATA from a script (``451`` to defer, ``550`` to refuse, or a
delay longer than the client's timeout) so retry and threading behaviour is
tested against a real protocol peer.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import socket
import ssl
import subprocess
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key); also the client's CA file."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@dataclass
class Received:
    """One accepted or refused DATA transaction."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    answer: str

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    """aiosmtpd handler: answers DATA from ``script`` then ``250``; records everything."""

    script: deque[str | float] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer: str | float = self.script.popleft() if self.script else "250 2.0.0 queued"
        if isinstance(answer, float):  # a delay: provoke the client's read timeout
            await asyncio.sleep(answer)
            answer = "250 2.0.0 queued late"
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, answer)
        )
        return answer

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.answer.startswith("250")]


class SmtpStub:
    """A running aiosmtpd on a free loopback port."""

    def __init__(self, tls: str = "none", cert: tuple[Path, Path] | None = None,
                 login: tuple[str, str] | None = None) -> None:
        self.handler = Handler()
        self.tls = tls
        self.login = login
        kwargs: dict[str, Any] = {}
        context = None
        if tls != "none":
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        if tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif tls == "implicit":
            kwargs.update(ssl_context=context)
        if login is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=tls == "starttls")  # implicit: TLS from the start
        self.port = free_port()
        self.controller = Controller(self.handler, hostname=HOST, port=self.port, **kwargs)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert self.login is not None
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if (user, password) == self.login:
                self.handler.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpStub:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
