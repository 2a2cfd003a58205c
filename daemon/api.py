"""The local control API: health, metrics, incidents, approvals, silences.

A deliberately small HTTP/1.1 server on ``asyncio.start_server`` (one
request per connection, JSON in and out) rather than a web framework: it
serves a handful of operators and a Prometheus scraper on loopback, and
running inside the daemon's event loop means every handler sees and changes
the pipeline, engine and store between two pipeline steps, with no locks.

Security model (README "Control API"):

* it binds ``127.0.0.1:8787`` by default (``api.listen``);
* every write (POST, DELETE) needs ``Authorization: Bearer <token>``, the
  token coming from ``CRISISD_API_TOKEN`` or ``api.token_file`` (systemd
  credentials); with no token configured, writes are refused outright;
* reads are open on a loopback address (the machine's users can already read
  the state directory's logs) unless ``api.auth_reads``; on any other
  address they need the token as well;
* the token is compared in constant time and never logged; ``by`` in a
  request body names the person, who is recorded in the incident timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import structlog

from daemon import metrics
from daemon.config import ApiConfig, parse_duration
from daemon.domain import Incident, IncidentStatus
from daemon.engine import ApprovalError
from daemon.roster import parse_instant
from daemon.timeline import anomaly_dict

if TYPE_CHECKING:
    from daemon.decode import Decoder
    from daemon.pipeline import Pipeline
    from daemon.response import Response
    from daemon.snapshots import SnapshotStats
    from daemon.sources.mqtt import MqttSource

log = structlog.get_logger("crisisd.api")

MAX_BODY = 64 * 1024
MAX_HEADERS = 100
READ_TIMEOUT = 10.0

_REASONS = {
    200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


class HttpError(Exception):
    """A request that ends with an error status and a JSON ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Reply:
    """One HTTP response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, doc: Any, status: int = 200) -> Reply:
        """A JSON reply, indented for people reading it with curl.

        UTF-8 as it is (statements keep their exact characters), and NaN as
        null. msgspec, not ``json``: with an indent ``json`` encodes in pure
        Python, 18 times slower, which at 10,000 series (``GET /series``,
        7 MB) held the daemon's loop for 0.31 s.
        """
        return cls(status, msgspec.json.format(msgspec.json.encode(doc), indent=1) + b"\n")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def incident_summary(incident: Incident) -> dict[str, Any]:
    """The list view of an incident."""
    return {
        "id": incident.id,
        "brand": incident.brand,
        "origin": str(incident.origin),
        "status": str(incident.status),
        "severity": str(incident.severity),
        "playbook": incident.playbook,
        "signals": sorted(incident.signals),
        "opened_at": incident.opened_at,
        "last_anomaly_at": incident.last_anomaly_at,
        "resolved_at": incident.resolved_at,
        "roles": incident.roles,
    }


class ControlApi:
    """The API server; ``start`` binds it, ``stop`` closes it (both from ``serve``)."""

    def __init__(
        self,
        cfg: ApiConfig,
        pipeline: Pipeline,
        *,
        response: Response | None = None,
        source: MqttSource | None = None,
        decoder: Decoder | None = None,
        latency: metrics.DeliveryLatency | None = None,
        snapshots: SnapshotStats | None = None,
        reload: Callable[[], list[str]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.response = response
        self.source = source
        self.decoder = decoder
        self.latency = latency
        self.snapshots = snapshots
        self.reload = reload
        self.token = cfg.token()
        self.open_reads = is_loopback(cfg.host) and not cfg.auth_reads
        self.port = cfg.port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind ``api.listen``; ``port`` is the bound port afterwards (``:0`` picks one)."""
        self._server = await asyncio.start_server(self._client, self.cfg.host, self.cfg.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if not is_loopback(self.cfg.host):
            log.warning("control API listens beyond loopback; reads need the token",
                        listen=self.cfg.listen)
        log.info("api listening", host=self.cfg.host, port=self.port,
                 writes="enabled" if self.token else "disabled: no token configured",
                 reads="open" if self.open_reads else "token")

    async def stop(self) -> None:
        """Stop accepting, let requests in progress finish (1 s), close."""
        if self._server is None:
            return
        self._server.close()
        if self._clients:
            await asyncio.wait(self._clients, timeout=1.0)
        for task in self._clients:
            task.cancel()
        await self._server.wait_closed()
        self._server = None

    # --------------------------------------------------------------------- HTTP

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            reply = await self._request(reader)
            await self._send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader) -> Reply:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            parts = line.decode("latin-1").split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise HttpError(400, "bad request line")
            method, target = parts[0].upper(), parts[1]
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADERS + 1):
                raw = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                if raw in (b"\r\n", b"\n", b""):
                    break
                name, sep, value = raw.decode("latin-1").partition(":")
                if not sep:
                    raise HttpError(400, "bad header line")
                headers[name.strip().lower()] = value.strip()
            else:
                raise HttpError(400, "too many headers")
            if "chunked" in headers.get("transfer-encoding", "").lower():
                raise HttpError(400, "chunked bodies are not supported; send Content-Length")
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise HttpError(400, "bad Content-Length") from None
            if length < 0 or length > MAX_BODY:
                raise HttpError(413, f"body over {MAX_BODY} bytes")
            body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
            return self.handle(method, target, headers, body)
        except HttpError as exc:
            return Reply.json({"error": str(exc)}, exc.status)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: Reply) -> None:
        head = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()

    # ------------------------------------------------------------------ routing

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Route one request (synchronous: it runs between two pipeline steps)."""
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._authorize(method, headers)
            doc = self._body(body) if method == "POST" else {}
            return self._route(method, parts, query, doc)
        except HttpError as exc:
            extra = {"WWW-Authenticate": 'Bearer realm="crisisd"'} if exc.status == 401 else {}
            reply = Reply.json({"error": str(exc)}, exc.status)
            reply.headers.update(extra)
            return reply
        except Exception as exc:  # a bug must not take the daemon down with it
            log.exception("api handler failed", method=method, path=url.path)
            return Reply.json({"error": f"internal error: {exc.__class__.__name__}"}, 500)

    def _authorize(self, method: str, headers: dict[str, str]) -> None:
        write = method not in ("GET", "HEAD")
        if not write and self.open_reads:
            return
        if self.token is None:
            raise HttpError(403, "no API token is configured (set CRISISD_API_TOKEN or "
                                 "api.token_file); writes are disabled")
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            raise HttpError(401, "missing or wrong bearer token")

    @staticmethod
    def _body(body: bytes) -> dict[str, Any]:
        if not body.strip():
            return {}
        try:
            doc = json.loads(body)
        except ValueError:
            raise HttpError(400, "the body is not JSON") from None
        if not isinstance(doc, dict):
            raise HttpError(400, "the body must be a JSON object")
        return doc

    def _route(
        self, method: str, parts: list[str], query: dict[str, str], doc: dict[str, Any]
    ) -> Reply:
        match (method, parts):
            case ("GET", ["healthz"]):
                return self.healthz()
            case ("GET", ["metrics"]):
                text = metrics.render(self.pipeline, decoder=self.decoder, source=self.source,
                                      response=self.response, latency=self.latency,
                                      snapshots=self.snapshots)
                return Reply(200, text.encode(), metrics.CONTENT_TYPE)
            case ("GET", ["incidents"]):
                return Reply.json(self.list_incidents(query.get("all") in ("1", "true")))
            case ("GET", ["incidents", iid]):
                return Reply.json(self.show_incident(iid))
            case ("POST", ["incidents", iid, "ack"]):
                return Reply.json(self.acknowledge(iid, _by(doc)))
            case ("POST", ["incidents", iid, "approve"]):
                return Reply.json(self.approve(iid, doc))
            case ("POST", ["incidents", iid, "resolve"]):
                return Reply.json(self.resolve(iid, _by(doc), str(doc.get("reason") or "")))
            case ("POST", ["actions", aid, ("retry" | "cancel") as verb]):
                return Reply.json(self.action(aid, verb, _by(doc)))
            case ("POST", ["reload"]):
                if self.reload is None:
                    raise HttpError(503, "reload is not available in this process")
                problems = self.reload()
                if problems:
                    raise HttpError(422, "reload rejected; the last good set keeps running:\n"
                                    + "\n".join(problems))
                return Reply.json({"reloaded": True})
            case ("GET", ["series"]):
                now = self.pipeline.windows.watermark  # event time: what the bands are of
                return Reply.json(self.pipeline.detect.watched(
                    now if math.isfinite(now) else time.time(), query.get("brand") or "*"))
            case ("GET", ["silences"]):
                return Reply.json([asdict(s) for s in self._silences().list()])
            case ("POST", ["silences"]):
                return Reply.json(self.add_silence(doc), 201)
            case ("DELETE", ["silences", sid]):
                if not self._silences().remove(sid):
                    raise HttpError(404, f"no silence {sid!r}")
                log.info("silence expired", silence=sid)
                return Reply.json({"id": sid, "expired": True})
        if _known(parts):
            raise HttpError(405, f"{method} is not supported on /{'/'.join(parts)}")
        raise HttpError(404, f"no such endpoint /{'/'.join(parts)}")

    # ------------------------------------------------------------------- health

    def healthz(self) -> Reply:
        """200 when the broker connection is up, else 503; with the figures behind it."""
        now = time.time()
        last = self.pipeline.stats.last_event_wall
        connected = self.source.connected if self.source is not None else None
        backlog = metrics.outbox_backlog(self.response) if self.response is not None else 0
        ok = connected is not False
        doc = {
            "status": "ok" if ok else "degraded",
            "broker_connected": connected,
            "last_event_age": round(now - last, 3) if last else None,
            "outbox_backlog": backlog,
            "incidents_open": len(self.pipeline.incidents.open),
        }
        return Reply.json(doc, 200 if ok else 503)

    # ---------------------------------------------------------------- incidents

    def _find(self, incident_id: str) -> Incident:
        incident = self.pipeline.incidents.open.get(incident_id)
        if incident is None and self.response is not None:
            incident = self.response.store.incident(incident_id)
        if incident is None:
            raise HttpError(404, f"no incident {incident_id!r}")
        return incident

    def list_incidents(self, include_resolved: bool = False) -> list[dict[str, Any]]:
        """Open incidents (oldest first), or every stored one with ``include_resolved``."""
        if include_resolved and self.response is not None:
            stored = {i.id: i for i in self.response.store.incidents()}
            stored.update(self.pipeline.incidents.open)
            incidents = list(stored.values())
        else:
            incidents = list(self.pipeline.incidents.open.values())
        return [incident_summary(i) for i in sorted(incidents, key=lambda i: i.opened_at)]

    def show_incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its anomalies, timeline, statements (exact text) and actions."""
        incident = self._find(incident_id)
        doc = incident_summary(incident)
        doc["anomalies"] = [anomaly_dict(a) for a in incident.anomalies]
        timeline = incident.timeline
        if self.response is not None and incident.id not in self.pipeline.incidents.open:
            timeline = self.response.store.timeline(incident.id)
        doc["timeline"] = [asdict(e) for e in timeline]
        doc["statements"] = []
        doc["actions"] = []
        if self.response is not None:
            doc["statements"] = [asdict(s) for s in self.response.engine.statements(incident.id)]
            doc["actions"] = [
                {"id": a.id, "key": a.key, "medium": a.medium, "target": a.target,
                 "status": a.status, "attempts": a.attempts, "last_error": a.last_error,
                 "subject": a.subject, "created_at": a.created_at, "test": a.test}
                for a in self.response.store.actions(incident.id)
            ]
        return doc

    def acknowledge(self, incident_id: str, by: str) -> dict[str, Any]:
        """Someone took the incident: the manager records it, the engine stops escalating."""
        incident = self._open_incident(incident_id)
        if incident.status == IncidentStatus.ACKNOWLEDGED:
            raise HttpError(409, f"incident {incident_id} is already acknowledged")
        event = self.pipeline.incidents.acknowledge(incident_id, self.pipeline.clock.now(), by)
        self.pipeline.emit(event)
        log.info("incident acknowledged via api", incident=incident_id, by=by)
        return incident_summary(event.incident)

    def resolve(self, incident_id: str, by: str, reason: str) -> dict[str, Any]:
        """Resolve by hand; the playbook's resolve notifications and report follow."""
        self._open_incident(incident_id)
        why = f"resolved by {by}" + (f": {reason}" if reason else "")
        event = self.pipeline.incidents.resolve(incident_id, self.pipeline.clock.now(), why)
        self.pipeline.emit(event)
        log.info("incident resolved via api", incident=incident_id, by=by)
        return incident_summary(event.incident)

    def _open_incident(self, incident_id: str) -> Incident:
        incident = self.pipeline.incidents.open.get(incident_id)
        if incident is None:
            self._find(incident_id)  # 404 when unknown
            raise HttpError(409, f"incident {incident_id} is resolved")
        return incident

    def approve(self, incident_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Approve a statement: ``statement`` id and ``sha256`` of the text the person read."""
        engine = self._engine()
        sid, digest = doc.get("statement"), doc.get("sha256")
        if not isinstance(sid, str) or not isinstance(digest, str):
            raise HttpError(400, "approve needs `statement` (its id) and `sha256` (of the text)")
        self._find(incident_id)
        by = _by(doc)
        try:
            engine.approve(incident_id, sid, digest, by)
        except KeyError as exc:
            raise HttpError(409, f"incident {incident_id} is not active: {exc}") from None
        except ApprovalError as exc:
            raise HttpError(409, str(exc)) from None
        log.info("statement approved via api", incident=incident_id, statement=sid, by=by)
        statement = next(s for s in engine.statements(incident_id) if s.sid == sid)
        return asdict(statement)

    def action(self, action_id: str, verb: str, by: str) -> dict[str, Any]:
        """Retry or cancel an outbox action (``engine.retry_action``/``cancel_action``)."""
        engine = self._engine()
        try:
            aid = int(action_id)
        except ValueError:
            raise HttpError(400, f"an action id is a number, not {action_id!r}") from None
        method = getattr(engine, f"{verb}_action", None)
        if method is None:
            raise HttpError(501, f"{verb} is not available in this version of crisisd")
        try:
            result = method(aid, by)
        except KeyError as exc:
            raise HttpError(404, str(exc).strip("'\"")) from None
        except (ValueError, ApprovalError) as exc:
            raise HttpError(409, str(exc)) from None
        log.info(f"action {verb} via api", action=aid, by=by)
        return {"id": aid, verb: True, "status": getattr(result, "status", None),
                "attempts": getattr(result, "attempts", None),
                "incident": getattr(result, "incident_id", None)}

    def _engine(self) -> Any:
        if self.response is None:
            raise HttpError(501, "no playbooks are configured: there are no statements "
                                 "or actions to act on")
        return self.response.engine

    # ----------------------------------------------------------------- silences

    def _silences(self) -> Any:
        if self.response is None:
            raise HttpError(501, "silences need the playbooks' store; no playbooks configured")
        return self.response.silences

    def add_silence(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Record a silence: globs, ``start`` (default now), ``end`` or ``duration``."""
        silences = self._silences()
        now = time.time()
        try:
            start = _instant(doc.get("start"), now)
            if doc.get("duration") is not None:
                end = start + parse_duration(doc["duration"])
            elif doc.get("end") is not None:
                end = _instant(doc["end"], now)
            else:
                raise ValueError("a silence needs `end` or `duration`")
            silence = silences.add(
                start, end,
                brand=str(doc.get("brand") or "*"),
                channel=str(doc.get("channel") or "*"),
                signal=str(doc.get("signal") or "*"),
                reason=str(doc.get("reason") or ""),
                by=_by(doc),
                created_at=now,
            )
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        log.info("silence added via api", silence=silence.id, brand=silence.brand,
                 channel=silence.channel, signal=silence.signal, by=silence.created_by)
        return asdict(silence)


def _known(parts: list[str]) -> bool:
    """Whether ``parts`` is an endpoint's path (then a wrong method is a 405, not a 404)."""
    match parts:
        case ["healthz" | "metrics" | "incidents" | "series" | "silences" | "reload"]:
            return True
        case ["incidents" | "silences", _]:
            return True
        case ["incidents", _, "ack" | "approve" | "resolve"] | ["actions", _, "retry" | "cancel"]:
            return True
    return False


def _by(doc: dict[str, Any]) -> str:
    by = doc.get("by")
    if not isinstance(by, str) or not by.strip():
        raise HttpError(400, "say who you are: `by` (a person id from config.yaml)")
    return by.strip()


def _instant(value: Any, now: float) -> float:
    if value is None or value == "now":
        return now
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return parse_instant(value)
    raise ValueError(f"expected epoch seconds or an ISO date-time, got {value!r}")
