"""``crisisd incidents …`` and ``crisisd silence …``: the control API's command line.

The commands are thin clients of ``daemon.api`` over httpx: the running
daemon owns the incidents, the statements and the outbox, so changes go
through it and take effect between two pipeline steps. The API address comes
from ``--api``, else ``$CRISISD_API_URL``, else ``api.listen`` in config.yaml;
the token from ``$CRISISD_API_TOKEN``, else ``api.token_file``.

``silence`` also works without a daemon: silences live in the store, and the
daemon re-reads them when another process changes them. So when no token is
configured (writes through the API are impossible) or the daemon does not
answer, ``silence`` uses the state directory's store directly and says so on
stderr. Incident commands need the daemon: acting on a stale copy of an
incident in the store would race the daemon's own handling of it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from daemon.config import Config, parse_duration
from daemon.roster import parse_instant
from daemon.templating import span


class CtlError(Exception):
    """A failed command: the message is printed, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Unreachable(CtlError):
    """The daemon's API did not answer (not running, or another address)."""


def api_url(config: Config, override: str | None = None) -> str:
    """``--api``, ``$CRISISD_API_URL`` or ``http://`` + ``api.listen``."""
    url = override or os.environ.get("CRISISD_API_URL")
    if url:
        return url.rstrip("/")
    host = config.api.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{config.api.port}"


def whoami(override: str | None = None) -> str:
    """Who is acting: ``--by``, ``$CRISISD_USER`` or the login name (a person id)."""
    return override or os.environ.get("CRISISD_USER") or getpass.getuser()


class Client:
    """A small synchronous client of the control API (one request per command)."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                 trust_env=False)  # never through a proxy: it is a local API

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded JSON (or text) reply; ``CtlError`` with the API's message otherwise."""
        try:
            reply = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise Unreachable(f"the crisisd API at {self.url} does not answer ({exc}); "
                              "is the daemon running?", 3) from None
        if reply.status_code >= 400:
            try:
                message = reply.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = reply.text.strip() or reply.reason_phrase
            hint = ""
            if reply.status_code in (401, 403):
                hint = " (set CRISISD_API_TOKEN or api.token_file)"
            raise CtlError(f"{message}{hint}", 4 if reply.status_code in (401, 403) else 1)
        if reply.headers.get("content-type", "").startswith("application/json"):
            return reply.json()
        return reply.text

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()


def api_token(config: Config) -> str | None:
    """The token from ``$CRISISD_API_TOKEN`` or ``api.token_file``; ``None`` if unreadable.

    The daemon's relative ``token_file`` is a systemd credential the CLI
    cannot see; reads work without a token, so say why writes will not.
    """
    try:
        return config.api.token()
    except OSError as exc:
        print(f"crisisd: cannot read the API token ({exc.strerror}: {exc.filename}); "
              "set CRISISD_API_TOKEN", file=sys.stderr)
        return None


def _client(args: argparse.Namespace, config: Config) -> Client:
    return Client(api_url(config, args.api), api_token(config))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- arguments


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that talks to the control API takes."""
    p.add_argument("--api", metavar="URL", help="API address (default: $CRISISD_API_URL or "
                   "api.listen from config.yaml)")


def add_incident_arguments(parser: argparse.ArgumentParser) -> None:
    """``crisisd incidents list|show|ack|approve|resolve|retry|cancel``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="open incidents (--all: resolved ones too)")
    p.add_argument("--all", action="store_true", help="include resolved incidents")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    add_common_arguments(p)
    p = sub.add_parser("show", help="an incident with its timeline, statements and actions")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    add_common_arguments(p)
    for name, text in (("ack", "acknowledge: you are on it (stops escalations)"),
                       ("resolve", "resolve now (resolve notifications and report follow)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("id")
        p.add_argument("--by", help="your person id (default: $CRISISD_USER or login name)")
        if name == "resolve":
            p.add_argument("--reason", default="", help="why, for the timeline")
        add_common_arguments(p)
    p = sub.add_parser("approve", help="approve a holding statement: shows its exact text")
    p.add_argument("id", help="incident id")
    p.add_argument("statement", nargs="?", help="statement id (default: the one pending)")
    p.add_argument("--by", help="your person id (default: $CRISISD_USER or login name)")
    p.add_argument("--yes", action="store_true", help="approve without asking (text still shown)")
    add_common_arguments(p)
    for name, text in (("retry", "deliver a failed or flagged action again"),
                       ("cancel", "cancel an action not yet delivered")):
        p = sub.add_parser(name, help=text)
        p.add_argument("action_id", type=int, metavar="ACTION_ID")
        p.add_argument("--by", help="your person id (default: $CRISISD_USER or login name)")
        add_common_arguments(p)


def add_silence_arguments(parser: argparse.ArgumentParser) -> None:
    """``crisisd silence add|list|expire`` (``remove`` is kept as an alias of expire)."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="silence a brand/channel/signal for a time span")
    add.add_argument("--brand", default="*", help="brand glob (default: every brand)")
    add.add_argument("--channel", default="*", help="channel glob")
    add.add_argument("--signal", default="*", help="signal glob, e.g. volume or term:*")
    add.add_argument("--start", default="now", help="ISO date-time, default now")
    span = add.add_mutually_exclusive_group(required=True)
    span.add_argument("--end", help="ISO date-time")
    span.add_argument("--for", dest="duration", help="a duration such as 2h")
    add.add_argument("--reason", default="", help="why (a product launch, maintenance)")
    add.add_argument("--by", default="", help="who (default: $CRISISD_USER or login name)")
    add_common_arguments(add)
    p = sub.add_parser("list", help="list silences with their suppressed counts")
    add_common_arguments(p)
    for name in ("expire", "remove"):
        p = sub.add_parser(name, help="end a silence now" + (" (alias of expire)"
                                                              if name == "remove" else ""))
        p.add_argument("id")
        add_common_arguments(p)


def add_series_arguments(p: argparse.ArgumentParser) -> None:
    """``crisisd series [--brand GLOB] [--json]``."""
    p.add_argument("--brand", default="*", help="brand glob (default: every brand)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    add_common_arguments(p)


# ----------------------------------------------------------------- commands


def reload_command(args: argparse.Namespace, config: Config) -> int:
    """``crisisd reload``: the running daemon re-reads config.yaml and the playbooks.

    The same as ``systemctl reload crisisd`` (SIGHUP), but the answer says
    whether the new set is live or, located, why it was rejected.
    """
    client = _client(args, config)
    try:
        client.request("POST", "/reload", {})
    except CtlError as exc:
        print(f"crisisd reload: {exc}", file=sys.stderr)
        return exc.code
    finally:
        client.close()
    print("reloaded: the new configuration and playbooks are live")
    return 0


def series_command(args: argparse.Namespace, config: Config) -> int:
    """``crisisd series``: each series watched, its signals warm or warming up, and
    its volume now against the normal band (what an alert would be measured by)."""
    client = _client(args, config)
    try:
        rows = client.request("GET", f"/series?brand={quote(args.brand)}")
    except CtlError as exc:
        print(f"crisisd series: {exc}", file=sys.stderr)
        return exc.code
    finally:
        client.close()
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    if not rows:
        print("no series watched yet" + ("" if args.brand == "*" else f" of {args.brand}"))
        return 0
    print(f"{'series':<28} {'bucket':>6}  {'expected volume (normal band)':<30} signals")
    for r in rows:
        v = r["signals"].get("volume")
        if v is None or v["expected"] is None:
            normal = "-"
        elif not v["warm"]:
            normal = "(still learning)"
        else:
            normal = f"{v['expected']:,.1f} ({v['low']:,.0f}–{v['high']:,.0f})"
        warm = [s for s, d in r["signals"].items() if d["warm"]]
        cold = [s for s, d in r["signals"].items() if not d["warm"]]
        said = ", ".join(warm) or "none warm"
        if cold:
            said += f"; warming up: {', '.join(cold)}"
        print(f"{r['series']:<28} {span(r['bucket']):>6}  {normal:<30} {said}")
    return 0


def incidents_command(args: argparse.Namespace, config: Config) -> int:
    """Run one ``crisisd incidents`` action against the daemon's API."""
    client = _client(args, config)
    try:
        return _incidents(args, client)
    except CtlError as exc:
        print(f"crisisd incidents: {exc}", file=sys.stderr)
        return exc.code
    finally:
        client.close()


def _incidents(args: argparse.Namespace, client: Client) -> int:
    action = args.action
    if action == "list":
        rows = client.request("GET", "/incidents?all=1" if args.all else "/incidents")
        if args.json:
            print(json.dumps(rows, indent=1, ensure_ascii=False))
        elif not rows:
            print("no open incidents" if not args.all else "no incidents")
        for r in [] if args.json else rows:
            print(f"{r['id']}  {r['status']:<12} {r['severity']:<8} {r['playbook'] or '-':<18} "
                  f"{r['origin']:<24} opened {_when(r['opened_at'])}")
        return 0
    if action == "show":
        doc = client.request("GET", f"/incidents/{args.id}")
        print(json.dumps(doc, indent=1, ensure_ascii=False) if args.json else _show(doc))
        return 0
    if action == "ack":
        doc = client.request("POST", f"/incidents/{args.id}/ack", {"by": whoami(args.by)})
        print(f"incident {doc['id']} acknowledged by {whoami(args.by)}")
        return 0
    if action == "resolve":
        body = {"by": whoami(args.by), "reason": args.reason}
        doc = client.request("POST", f"/incidents/{args.id}/resolve", body)
        print(f"incident {doc['id']} resolved by {whoami(args.by)}")
        return 0
    if action == "approve":
        return _approve(args, client)
    doc = client.request("POST", f"/actions/{args.action_id}/{action}", {"by": whoami(args.by)})
    status = f" (now {doc['status']})" if "status" in doc else ""
    print(f"action {args.action_id}: {action} requested{status}")
    return 0


def _approve(args: argparse.Namespace, client: Client) -> int:
    """Show the exact text, ask, and approve that text (its SHA-256) and no other."""
    doc = client.request("GET", f"/incidents/{args.id}")
    statements = doc.get("statements", [])
    if args.statement:
        chosen = [s for s in statements if s["sid"] == args.statement]
        if not chosen:
            raise CtlError(f"incident {args.id} has no statement {args.statement!r}")
    else:
        chosen = [s for s in statements if s["status"] == "pending"]
        if len(chosen) != 1:
            listed = ", ".join(f"{s['sid']} ({s['status']})" for s in statements) or "none"
            raise CtlError(f"say which statement to approve; statements: {listed}", 2)
    st = chosen[0]
    by = whoami(args.by)
    print(f"Statement {st['sid']} of incident {args.id} (version {st['version']}, "
          f"{st['status']}), to be posted on {st['channel']}:")
    print()
    for line in st["text"].splitlines() or [""]:
        print(f"    {line}")
    print()
    print(f"sha256 {st['sha256']}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CtlError("not a terminal: pass --yes to approve without the question", 2)
        answer = input(f"Approve this exact text for posting, as {by}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not approved")
            return 1
    client.request("POST", f"/incidents/{args.id}/approve",
                   {"statement": st["sid"], "sha256": st["sha256"], "by": by})
    print(f"approved by {by}; the statement is queued for posting")
    return 0


def _show(doc: dict[str, Any]) -> str:
    lines = [
        f"incident {doc['id']}  {doc['status']}  severity {doc['severity']}",
        f"  brand {doc['brand']}, origin {doc['origin']}, playbook {doc['playbook'] or '-'}",
        f"  signals {', '.join(doc['signals'])}",
        f"  opened {_when(doc['opened_at'])}, resolved {_when(doc['resolved_at'])}",
    ]
    if doc.get("roles"):
        lines.append("  roles " + ", ".join(f"{k}: {v}" for k, v in doc["roles"].items()))
    for st in doc.get("statements", []):
        lines.append(f"\nstatement {st['sid']} ({st['status']}, v{st['version']}, "
                     f"approver {st['approver']}) sha256 {st['sha256']}")
        lines.extend(f"    {line}" for line in st["text"].splitlines())
    if doc.get("actions"):
        lines.append("\nactions")
        for a in doc["actions"]:
            error = f"  ({a['last_error']})" if a["last_error"] else ""
            lines.append(f"  {a['id']:>4} {a['medium']:<8} {a['target']:<10} {a['status']:<10}"
                         f" tries {a['attempts']}{error}")
    lines.append("\ntimeline")
    for e in doc.get("timeline", []):
        first, *rest = e["message"].splitlines() or [""]
        lines.append(f"  {_when(e['ts'])}  {e['kind']:<20} {first}")
        lines.extend(f"  {'':<20}  {'':<20} {line}" for line in rest)
    return "\n".join(lines)


def silence_command(args: argparse.Namespace, config: Config) -> int:
    """``crisisd silence``: through the API when a token is set and the daemon answers."""
    if args.action == "remove":
        args.action = "expire"
    token = api_token(config)
    if token is not None:
        client = Client(api_url(config, args.api), token)
        try:
            return _silence_api(args, client)
        except Unreachable as exc:
            print(f"crisisd silence: {exc}; using the store directly", file=sys.stderr)
        except CtlError as exc:
            print(f"crisisd silence: {exc}", file=sys.stderr)
            return exc.code
        finally:
            client.close()
    from daemon import silences

    args.action = "remove" if args.action == "expire" else args.action
    if args.action == "add":
        args.by = args.by or whoami()
    return silences.command(args, config)


def _silence_api(args: argparse.Namespace, client: Client) -> int:
    if args.action == "list":
        for s in client.request("GET", "/silences"):
            print(f"{s['id']}  {s['brand']}/{s['channel']}/{s['signal']}  {_when(s['start'])} → "
                  f"{_when(s['end'])}  suppressed {s['suppressed']}  {s['reason']}")
        return 0
    if args.action == "expire":
        client.request("DELETE", f"/silences/{args.id}")
        print(f"silence {args.id} expired")
        return 0
    now = time.time()
    try:
        start = now if args.start == "now" else parse_instant(args.start)
        body: dict[str, Any] = {"start": start}
        if args.duration:
            body["end"] = start + parse_duration(args.duration)
        else:
            body["end"] = parse_instant(args.end)
    except ValueError as exc:
        raise CtlError(str(exc), 2) from None
    body.update(brand=args.brand, channel=args.channel, signal=args.signal, reason=args.reason,
                by=whoami(args.by or None))
    s = client.request("POST", "/silences", body)
    print(f"silence {s['id']}: {s['brand']}/{s['channel']}/{s['signal']} "
          f"{_when(s['start'])} → {_when(s['end'])}")
    return 0
