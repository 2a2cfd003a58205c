"""What every HTTP integration shares: secrets, error mapping, redaction.

One place decides the delivery semantics so every platform file only builds
its payload and reads its answer:

- *Before* the request left crisisd (connection refused, connect or pool
  timeout): retryable, nothing can have happened downstream.
- *After* it left (read/write timeout, connection reset, 500/502/504): the
  platform may have acted. For an at-most-once action (a public post) this
  is ``UnknownOutcomeError``, never retried by itself; for a page, an email or
  a chat message it is retryable, made idempotent by the action's key.
- 429 and 503 mean "not processed, come back later": retryable, with the
  ``Retry-After`` wait the platform asked for.
- 401/403 and the other 4xx: permanent, with the platform's own message.

Secrets are read per delivery (a rotated credential file is picked up
without a restart) and scrubbed from every message this module produces;
exceptions are raised ``from None`` so no chained httpx error carries a
secret-bearing URL into a log.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from daemon.actions import (
    Action,
    DeliveryError,
    PermanentError,
    RetryableError,
    UnknownOutcomeError,
)
from daemon.config import TargetConfig

# httpx logs every request URL at INFO; Slack and Teams webhook URLs are credentials.
logging.getLogger("httpx").setLevel(logging.WARNING)

# httpcore tries ``import sniffio`` on every request and connection; without the
# package each failed import searches sys.path again (about 0.5 ms, a third of a
# loopback delivery). A ``None`` entry makes the miss instant and means the same.
try:
    import sniffio  # noqa: F401
except ImportError:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

MAX_RETRY_AFTER = 3600.0
"""A platform asking for more than an hour is ignored beyond that (pages must go out)."""

USER_AGENT = "crisisd/0.1 (+https://github.com/crisisd)"


def secret_env_name(name: str, cfg: TargetConfig) -> str:
    """The environment variable holding target ``name``'s secret."""
    if cfg.secret_env:
        return cfg.secret_env
    return "CRISISD_TARGET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_SECRET"


def read_secret(name: str, cfg: TargetConfig, *, required: bool = True) -> str | None:
    """The target's secret from its environment variable, else from ``secret_file``.

    A relative ``secret_file`` is looked up in ``$CREDENTIALS_DIRECTORY`` first
    (systemd ``LoadCredential=``). A missing required secret is a permanent
    error naming where it was looked for, never what it is.
    """
    env = secret_env_name(name, cfg)
    value = os.environ.get(env, "").strip()
    if value:
        return value
    if cfg.secret_file is not None:
        path = cfg.secret_file
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not path.is_absolute() and creds and (Path(creds) / path).is_file():
            path = Path(creds) / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PermanentError(f"{name}: cannot read secret_file {path}: "
                                 f"{exc.strerror or type(exc).__name__}") from None
        if value:
            return value
    if required:
        raise PermanentError(f"{name}: no secret configured (set ${env} or secret_file)")
    return None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret (and its URL-encoded form) replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in (secret, quote(secret, safe=""), quote_plus(secret)):
                text = text.replace(form, "***")
    return text


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta or HTTP date) or X's rate-limit reset."""
    now = time.time() if now is None else now
    value = response.headers.get("retry-after")
    wait: float | None = None
    if value:
        value = value.strip()
        try:
            wait = float(value)
        except ValueError:
            try:
                wait = email.utils.parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError):
                wait = None
    if wait is None:  # X: epoch seconds; Mastodon: an ISO 8601 instant
        reset = (response.headers.get("x-rate-limit-reset")
                 or response.headers.get("x-ratelimit-reset") or "").strip()
        if reset.isdigit():
            wait = float(reset) - now
        elif reset:
            try:
                wait = dt.datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() - now
            except ValueError:
                wait = None
    if wait is None:
        return None
    return max(0.0, min(wait, MAX_RETRY_AFTER))


def excerpt(response: httpx.Response, limit: int = 300) -> str:
    """The start of an error answer, on one line (what the platform said went wrong)."""
    try:
        text = response.text
    except (UnicodeDecodeError, httpx.ResponseNotRead):
        return ""
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _unsent(exc: Exception) -> bool:
    """True when the request certainly never reached the server."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class HttpTarget:
    """Base of the HTTP integrations: one pooled client, one error policy.

    The environment is honoured (``HTTPS_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``),
    as operators behind a corporate proxy expect.

    Pages, chat and webhooks reuse a pooled connection. A public post gets a
    fresh connection: a keep-alive connection the server closed in between
    would fail as "disconnected after sending" and flag a post as unknown for
    no reason.
    """

    kind = "http"

    def __init__(self, name: str, cfg: TargetConfig) -> None:
        self.name = name
        self.cfg = cfg
        self.timeout = cfg.timeout
        self._client: httpx.AsyncClient | None = None

    def secret(self, required: bool = True) -> str | None:
        """This target's secret (see ``read_secret``)."""
        return read_secret(self.name, self.cfg, required=required)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,  # a redirect must not carry a token to another host
        )

    async def aclose(self) -> None:
        """Close the pooled connections (daemon shutdown, end of a test)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def request(
        self,
        action: Action,
        method: str,
        url: str,
        *,
        secrets: tuple[str | None, ...] = (),
        where: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request and return a 2xx answer, or raise the right ``DeliveryError``.

        ``where`` names the endpoint in errors (default ``host/path``); pass the
        host alone when the path is itself a credential (Slack, Teams).
        """
        where = redact(where or _short(url), *secrets)
        try:
            if action.at_most_once:
                async with self._new_client() as client:
                    response = await client.request(method, url, **kwargs)
            else:
                if self._client is None:
                    self._client = self._new_client()
                response = await self._client.request(method, url, **kwargs)
        except httpx.InvalidURL:
            raise PermanentError(f"{self.name}: invalid URL for {where}") from None
        except httpx.HTTPError as exc:
            raise self._transport_error(action, exc, where, secrets) from None
        self.check(action, response, where, secrets)
        return response

    def _transport_error(
        self, action: Action, exc: httpx.HTTPError, where: str, secrets: tuple[str | None, ...]
    ) -> DeliveryError:
        what = redact(f"{type(exc).__name__}: {exc}", *secrets) if str(exc) else type(exc).__name__
        if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
            return PermanentError(f"{self.name}: {where}: request not sendable ({what})")
        if _unsent(exc) or isinstance(exc, httpx.ProxyError):
            return RetryableError(f"{self.name}: {where} not reached ({what})")
        if isinstance(exc, httpx.TransportError):
            msg = f"{self.name}: {where} sent, no answer ({what})"
            if action.at_most_once:
                return UnknownOutcomeError(msg + "; it may have been published: check, "
                                           "then retry or cancel by hand")
            return RetryableError(msg)
        return PermanentError(f"{self.name}: {where}: {what}")

    def check(
        self,
        action: Action,
        response: httpx.Response,
        where: str,
        secrets: tuple[str | None, ...] = (),
        detail: str | None = None,
    ) -> None:
        """Raise the error a non-2xx answer means (see the module docstring)."""
        status = response.status_code
        if 200 <= status < 300:
            return
        said = redact(detail if detail is not None else excerpt(response), *secrets)
        msg = f"{self.name}: {where} answered {status}" + (f": {said}" if said else "")
        if status in (408, 425, 429, 503):
            raise RetryableError(msg, retry_after=retry_after(response))
        if status >= 500:
            if action.at_most_once:
                raise UnknownOutcomeError(msg + "; it may have been published: check, "
                                          "then retry or cancel by hand")
            raise RetryableError(msg, retry_after=retry_after(response))
        if status in (401, 403):
            raise PermanentError(msg + " (credentials rejected: check the token/secret)")
        raise PermanentError(msg)


def _short(url: str) -> str:
    """``host/path`` of a URL without its query (where a token could sit)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{parsed.host}{':' + str(parsed.port) if parsed.port else ''}{parsed.path}"


def secret_url(name: str, url: str) -> tuple[str, str]:
    """(url, host) of a webhook URL that is itself the secret; errors never show it."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise PermanentError(f"{name}: the secret is not a webhook URL (expected https://…)")
    return url, parsed.host


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis when it was longer."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
