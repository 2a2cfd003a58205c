"""A small real HTTP/1.1 server on loopback that records what it receives.

It stands in for PagerDuty, Slack, Teams, X, Facebook, Mastodon and generic
webhooks in the integration tests: the targets talk real HTTP to it through
httpx, so what is asserted is what would go over the wire. Tests script its
answers: a status with headers and body, ``hang`` (read the request, never
answer: provokes a read timeout *after* the request was sent) or ``close``
(read the request, drop the connection).

aiohttp is not a dependency, so this is plain ``asyncio.start_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 422: "Unprocessable Entity",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable"}


@dataclass
class Request:
    """One request as received: method, path, query, headers (lower-case), raw body."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() of arrival

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    """A scripted answer (``kind`` ``answer``, ``hang`` or ``close``)."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "answer"
    delay: float = 0.0  # seconds to hold the request before answering

    def encode(self) -> bytes:
        body = self.body
        headers = dict(self.headers)
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        raw = body.encode() if isinstance(body, str) else body
        head = f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}\r\n"
        headers["Content-Length"] = str(len(raw))
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return (head + "\r\n").encode() + raw


class HttpStub:
    """Records requests; answers from a script, then with ``default``."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply(200, b"ok")
        self.script: deque[Reply] = deque()
        self.requests: list[Request] = []
        self.answered: list[tuple[Request, int]] = []  # (request, status) actually sent back
        self.active = 0  # requests being handled right now
        self.peak = 0  # the most handled at once
        self.port = 0
        self._server: asyncio.Server | None = None
        self._stopped = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def then(self, *replies: Reply) -> HttpStub:
        """Queue answers for the next requests, in order."""
        self.script.extend(replies)
        return self

    def fail(self, status: int, body: Any = b"", n: int = 1, **headers: str) -> HttpStub:
        """Answer the next ``n`` requests with ``status``."""
        return self.then(*[Reply(status, body, {k.replace("_", "-"): v
                                                for k, v in headers.items()})] * n)

    def hang(self, n: int = 1) -> HttpStub:
        """Read the next ``n`` requests and never answer them."""
        return self.then(*[Reply(kind="hang")] * n)

    async def start(self) -> HttpStub:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                parts = urlsplit(target)
                request = Request(method, parts.path, parse_qs(parts.query), headers, body,
                                  time.monotonic())
                self.requests.append(request)
                reply = self.script.popleft() if self.script else self.default
                if reply.kind == "hang":
                    await self._stopped.wait()
                    return
                if reply.kind == "close":
                    writer.close()
                    return
                self.active += 1
                self.peak = max(self.peak, self.active)
                try:
                    if reply.delay:
                        await asyncio.sleep(reply.delay)
                    writer.write(reply.encode())
                    await writer.drain()
                finally:
                    self.active -= 1
                self.answered.append((request, reply.status))
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
