"""Durable state in SQLite (WAL): incidents, timeline, statements, timers, outbox, silences.

A crash must lose nothing and repeat nothing. Every incident change, the
timeline entries, the timers it arms and the actions it causes are written in
one transaction (``with store.transaction():``), so after a restart either
all of it happened or none of it did; timers and undelivered actions are then
resumed from here. WAL lets the control API read while the daemon writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.actions import Action
from daemon.domain import (
    Anomaly,
    Incident,
    IncidentStatus,
    Sample,
    SeriesKey,
    Severity,
    TimelineEntry,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, brand TEXT NOT NULL,
    playbook TEXT NOT NULL, opened_at REAL NOT NULL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS timeline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, incident_id TEXT NOT NULL,
    ts REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline (incident_id, seq);
CREATE TABLE IF NOT EXISTS statements (
    incident_id TEXT NOT NULL, sid TEXT NOT NULL, step INTEGER NOT NULL,
    text TEXT NOT NULL, sha256 TEXT NOT NULL, approver TEXT NOT NULL,
    channel TEXT NOT NULL, status TEXT NOT NULL, requested_at REAL NOT NULL,
    deadline_at REAL, approved_by TEXT, approved_at REAL, version INTEGER NOT NULL,
    PRIMARY KEY (incident_id, sid)
);
CREATE TABLE IF NOT EXISTS timers (
    id TEXT PRIMARY KEY, incident_id TEXT NOT NULL, due REAL NOT NULL,
    kind TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
    incident_id TEXT NOT NULL, medium TEXT NOT NULL, target TEXT NOT NULL,
    recipients TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
    data TEXT NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '', receipt TEXT, test INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, next_try);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, brand TEXT NOT NULL, channel TEXT NOT NULL,
    signal TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL,
    reason TEXT NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL,
    suppressed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS points (
    incident_id TEXT NOT NULL, ts REAL NOT NULL, volume REAL NOT NULL,
    negative_share REAL NOT NULL, PRIMARY KEY (incident_id, ts)
);
"""


@dataclass(slots=True)
class Statement:
    """A holding statement and its approval state.

    ``status``: ``pending`` (awaiting approval), ``approved``, ``posted``
    (queued to the outbox), ``voided`` (superseded by a playbook switch or
    resolution). Approval is bound to ``sha256`` of the exact text; an edit
    changes the text, bumps ``version`` and clears the approval.
    """

    incident_id: str
    sid: str
    step: int
    text: str
    sha256: str
    approver: str
    channel: str
    status: str
    requested_at: float
    deadline_at: float | None = None
    approved_by: str | None = None
    approved_at: float | None = None
    version: int = 1


@dataclass(slots=True)
class TimerRow:
    """A persisted timer: re-armed on the clock after a restart."""

    id: str
    incident_id: str
    due: float
    kind: str
    payload: dict[str, Any]
    state: str = "pending"


@dataclass(slots=True)
class SilenceRow:
    """A recorded silence (see ``daemon.silences``)."""

    id: str
    brand: str
    channel: str
    signal: str
    start: float
    end: float
    reason: str = ""
    created_by: str = ""
    created_at: float = 0.0
    suppressed: int = 0


# ------------------------------------------------------------ incident codec


def _anomaly_doc(a: Anomaly) -> dict[str, Any]:
    doc = asdict(a)
    doc["series"] = [a.series.brand, a.series.channel]
    doc["severity"] = int(a.severity)
    return doc


def _anomaly(doc: dict[str, Any]) -> Anomaly:
    doc = dict(doc)
    doc["series"] = SeriesKey(*doc["series"])
    doc["severity"] = Severity(doc["severity"])
    doc["top_terms"] = [tuple(t) for t in doc.get("top_terms", [])]
    doc["samples"] = [Sample(**s) for s in doc.get("samples", [])]
    return Anomaly(**doc)


def incident_doc(incident: Incident) -> str:
    """An incident as JSON (timeline excluded: it lives in its own table)."""
    return json.dumps(
        {
            "id": incident.id,
            "key": incident.key,
            "brand": incident.brand,
            "origin": [incident.origin.brand, incident.origin.channel],
            "opened_at": incident.opened_at,
            "severity": int(incident.severity),
            "status": str(incident.status),
            "playbook": incident.playbook,
            "signals": sorted(incident.signals),
            "anomalies": [_anomaly_doc(a) for a in incident.anomalies],
            "last_anomaly_at": incident.last_anomaly_at,
            "resolved_at": incident.resolved_at,
            "roles": incident.roles,
        }
    )


def incident_from_doc(text: str, timeline: list[TimelineEntry]) -> Incident:
    """Rebuild an incident from ``incident_doc`` and its timeline."""
    doc = json.loads(text)
    return Incident(
        id=doc["id"],
        key=doc["key"],
        brand=doc["brand"],
        origin=SeriesKey(*doc["origin"]),
        opened_at=doc["opened_at"],
        severity=Severity(doc["severity"]),
        status=IncidentStatus(doc["status"]),
        playbook=doc["playbook"],
        signals=set(doc["signals"]),
        anomalies=[_anomaly(a) for a in doc["anomalies"]],
        last_anomaly_at=doc["last_anomaly_at"],
        resolved_at=doc["resolved_at"],
        roles=doc["roles"],
        timeline=timeline,
    )


class Store:
    """The daemon's SQLite database; one instance per process, used from the event loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._depth = 0

    @classmethod
    def in_dir(cls, state_dir: Path) -> Store:
        """The store of a state directory (``crisisd.sqlite``)."""
        return cls(state_dir / "crisisd.sqlite")

    def close(self) -> None:
        """Close the database (a new ``Store`` on the same file resumes)."""
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit; nested uses join the outer transaction."""
        if self._depth == 0:
            self.db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.db.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self.db.execute("COMMIT")

    # ---------------------------------------------------------------- incidents

    def save_incident(self, incident: Incident) -> None:
        """Insert or update an incident's state."""
        self.db.execute(
            "INSERT INTO incidents (id, status, brand, playbook, opened_at, doc) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "status=excluded.status, playbook=excluded.playbook, doc=excluded.doc",
            (
                incident.id,
                str(incident.status),
                incident.brand,
                incident.playbook,
                incident.opened_at,
                incident_doc(incident),
            ),
        )

    def add_entry(self, incident_id: str, entry: TimelineEntry) -> None:
        """Append one audit-log line."""
        self.db.execute(
            "INSERT INTO timeline (incident_id, ts, kind, message, data) VALUES (?, ?, ?, ?, ?)",
            (incident_id, entry.ts, entry.kind, entry.message, json.dumps(entry.data)),
        )

    def timeline(self, incident_id: str) -> list[TimelineEntry]:
        """An incident's audit log in order."""
        rows = self.db.execute(
            "SELECT ts, kind, message, data FROM timeline WHERE incident_id=? ORDER BY seq",
            (incident_id,),
        )
        return [
            TimelineEntry(r["ts"], r["kind"], r["message"], json.loads(r["data"])) for r in rows
        ]

    def incident(self, incident_id: str) -> Incident | None:
        """One incident with its timeline."""
        row = self.db.execute("SELECT doc FROM incidents WHERE id=?", (incident_id,)).fetchone()
        return incident_from_doc(row["doc"], self.timeline(incident_id)) if row else None

    def incidents(self, open_only: bool = False) -> list[Incident]:
        """Incidents (oldest first); ``open_only`` excludes resolved ones (for restart)."""
        sql = "SELECT doc, id FROM incidents"
        if open_only:
            sql += " WHERE status != 'resolved'"
        rows = self.db.execute(sql + " ORDER BY opened_at").fetchall()
        return [incident_from_doc(r["doc"], self.timeline(r["id"])) for r in rows]

    def resolved_keys(self, since: float) -> dict[str, float]:
        """Dedup key → last resolution time of incidents resolved after ``since``.

        For the incident manager's cooldowns after a restart: a crisis that
        just ended must not re-open as new the minute the daemon comes back.
        """
        out: dict[str, float] = {}
        rows = self.db.execute("SELECT doc FROM incidents WHERE status='resolved'")
        for row in rows:
            doc = json.loads(row[0])
            at = doc.get("resolved_at")
            if at is not None and at >= since and at > out.get(doc["key"], float("-inf")):
                out[doc["key"]] = at
        return out

    def add_point(self, incident_id: str, ts: float, volume: float, negative_share: float) -> None:
        """One point of the incident's volume / negative-share chart."""
        self.db.execute(
            "INSERT OR REPLACE INTO points VALUES (?, ?, ?, ?)",
            (incident_id, ts, volume, negative_share),
        )

    def points(self, incident_id: str) -> list[tuple[float, float, float]]:
        """(ts, volume, negative share) of an incident, in time order."""
        rows = self.db.execute(
            "SELECT ts, volume, negative_share FROM points WHERE incident_id=? ORDER BY ts",
            (incident_id,),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def last_point(self, incident_id: str) -> tuple[float, float, float] | None:
        """The most recent chart point of an incident (its current figures)."""
        row = self.db.execute(
            "SELECT ts, volume, negative_share FROM points WHERE incident_id=? "
            "ORDER BY ts DESC LIMIT 1",
            (incident_id,),
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # --------------------------------------------------------------- statements

    def save_statement(self, s: Statement) -> None:
        """Insert or replace a statement's state."""
        self.db.execute(
            "INSERT OR REPLACE INTO statements VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                s.incident_id,
                s.sid,
                s.step,
                s.text,
                s.sha256,
                s.approver,
                s.channel,
                s.status,
                s.requested_at,
                s.deadline_at,
                s.approved_by,
                s.approved_at,
                s.version,
            ),
        )

    def statements(self, incident_id: str) -> list[Statement]:
        """An incident's statements in step order."""
        rows = self.db.execute(
            "SELECT * FROM statements WHERE incident_id=? ORDER BY step", (incident_id,)
        )
        return [Statement(**dict(r)) for r in rows]

    def statement(self, incident_id: str, sid: str) -> Statement | None:
        """One statement."""
        row = self.db.execute(
            "SELECT * FROM statements WHERE incident_id=? AND sid=?", (incident_id, sid)
        ).fetchone()
        return Statement(**dict(row)) if row else None

    # ------------------------------------------------------------------- timers

    def add_timer(self, timer: TimerRow) -> None:
        """Persist a timer (its id is deterministic, so re-adding is harmless)."""
        self.db.execute(
            "INSERT OR IGNORE INTO timers VALUES (?, ?, ?, ?, ?, ?)",
            (
                timer.id,
                timer.incident_id,
                timer.due,
                timer.kind,
                json.dumps(timer.payload),
                timer.state,
            ),
        )

    def pending_timers(self) -> list[TimerRow]:
        """Timers not yet fired or cancelled, by due time."""
        rows = self.db.execute("SELECT * FROM timers WHERE state='pending' ORDER BY due, id")
        return [
            TimerRow(r["id"], r["incident_id"], r["due"], r["kind"], json.loads(r["payload"]))
            for r in rows
        ]

    def claim_timer(self, timer_id: str) -> bool:
        """Mark a timer fired; ``False`` if it already fired or was cancelled (fire once)."""
        cur = self.db.execute(
            "UPDATE timers SET state='fired' WHERE id=? AND state='pending'", (timer_id,)
        )
        return cur.rowcount == 1

    def cancel_timers(self, incident_id: str, kinds: tuple[str, ...] | None = None) -> list[str]:
        """Cancel an incident's pending timers (optionally of some kinds); their ids."""
        sql = "SELECT id FROM timers WHERE incident_id=? AND state='pending'"
        args: list[Any] = [incident_id]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        ids = [r[0] for r in self.db.execute(sql, args)]
        self.db.executemany("UPDATE timers SET state='cancelled' WHERE id=?", [(i,) for i in ids])
        return ids

    def cancel_timer(self, timer_id: str) -> None:
        """Cancel one pending timer."""
        self.db.execute(
            "UPDATE timers SET state='cancelled' WHERE id=? AND state='pending'", (timer_id,)
        )

    # ------------------------------------------------------------------- outbox

    def enqueue(self, action: Action) -> bool:
        """Queue an action; ``False`` if its idempotency key is already queued."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO outbox (key, incident_id, medium, target, recipients, subject,"
            " body, data, created_at, status, test) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                action.key,
                action.incident_id,
                action.medium,
                action.target,
                json.dumps(action.to),
                action.subject,
                action.body,
                json.dumps(action.data),
                action.created_at,
                action.status,
                int(action.test),
            ),
        )
        if cur.rowcount == 1:
            action.id = cur.lastrowid
            return True
        return False

    @staticmethod
    def _action(r: sqlite3.Row) -> Action:
        return Action(
            key=r["key"],
            incident_id=r["incident_id"],
            medium=r["medium"],
            target=r["target"],
            to=json.loads(r["recipients"]),
            subject=r["subject"],
            body=r["body"],
            created_at=r["created_at"],
            data=json.loads(r["data"]),
            id=r["id"],
            status=r["status"],
            attempts=r["attempts"],
            last_error=r["last_error"],
            test=bool(r["test"]),
        )

    def due_actions(
        self, now: float, limit: int = 100, exclude: tuple[str, ...] = ()
    ) -> list[Action]:
        """Pending actions whose next try is due (wall-clock ``now``), oldest first.

        ``exclude`` names targets the worker cannot use right now (full, paused),
        so it reads only rows it can start.
        """
        sql = "SELECT * FROM outbox WHERE status='pending' AND next_try<=?"
        if exclude:
            sql += f" AND target NOT IN ({','.join('?' * len(exclude))})"
        rows = self.db.execute(sql + " ORDER BY id LIMIT ?", (now, *exclude, limit))
        return [self._action(r) for r in rows]

    def actions(self, incident_id: str | None = None, status: str | None = None) -> list[Action]:
        """Outbox rows, optionally of one incident and/or status, in queue order."""
        sql, args = "SELECT * FROM outbox WHERE 1=1", []
        if incident_id is not None:
            sql += " AND incident_id=?"
            args.append(incident_id)
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        return [self._action(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def next_try(self, after: float | None = None) -> float | None:
        """When the earliest pending action may be tried (later than ``after``), or ``None``."""
        sql, args = "SELECT MIN(next_try) FROM outbox WHERE status='pending'", []
        if after is not None:
            sql += " AND next_try>?"
            args.append(after)
        return self.db.execute(sql, args).fetchone()[0]

    def action(self, action_id: int) -> Action | None:
        """One outbox row by id (for the control API's retry and cancel)."""
        row = self.db.execute("SELECT * FROM outbox WHERE id=?", (action_id,)).fetchone()
        return self._action(row) if row else None

    def transition(
        self,
        action_id: int,
        from_statuses: tuple[str, ...],
        status: str,
        *,
        error: str | None = None,
        attempts: int | None = None,
        next_try: float | None = None,
    ) -> bool:
        """Move an action to ``status`` only if it is in one of ``from_statuses``.

        One conditional UPDATE, so a human's retry or cancel and the worker can
        never both win: ``False`` when the row was not in an expected state.
        """
        sets, args = ["status=?"], [status]
        for column, value in (("last_error", error), ("attempts", attempts),
                              ("next_try", next_try)):
            if value is not None:
                sets.append(f"{column}=?")
                args.append(value)
        marks = ",".join("?" * len(from_statuses))
        cur = self.db.execute(
            f"UPDATE outbox SET {', '.join(sets)} WHERE id=? AND status IN ({marks})",
            [*args, action_id, *from_statuses],
        )
        return cur.rowcount == 1

    def earlier_open_page(self, action_id: int, incident_id: str, target: str) -> bool:
        """True while a page queued before ``action_id`` for the incident and target is unsettled.

        A pager acknowledge or resolve must not overtake the trigger it closes.
        """
        row = self.db.execute(
            "SELECT 1 FROM outbox WHERE incident_id=? AND target=? AND medium='page' AND id<?"
            " AND status IN ('pending', 'sending') LIMIT 1",
            (incident_id, target, action_id),
        ).fetchone()
        return row is not None

    def mark(
        self,
        action_id: int,
        status: str,
        *,
        attempts: int | None = None,
        next_try: float | None = None,
        error: str | None = None,
        receipt: dict[str, Any] | None = None,
    ) -> None:
        """Record a delivery outcome."""
        sets, args = ["status=?"], [status]
        for column, value in (
            ("attempts", attempts),
            ("next_try", next_try),
            ("last_error", error),
            ("receipt", None if receipt is None else json.dumps(receipt)),
        ):
            if value is not None:
                sets.append(f"{column}=?")
                args.append(value)
        self.db.execute(f"UPDATE outbox SET {', '.join(sets)} WHERE id=?", [*args, action_id])

    def interrupted(self) -> list[Action]:
        """Actions left ``sending`` by a crash (outcome unknown)."""
        rows = self.db.execute("SELECT * FROM outbox WHERE status='sending' ORDER BY id")
        return [self._action(r) for r in rows]

    # ----------------------------------------------------------------- silences

    def save_silence(self, s: SilenceRow) -> None:
        """Insert or replace a silence."""
        self.db.execute(
            "INSERT OR REPLACE INTO silences VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                s.id,
                s.brand,
                s.channel,
                s.signal,
                s.start,
                s.end,
                s.reason,
                s.created_by,
                s.created_at,
                s.suppressed,
            ),
        )

    def silences(self) -> list[SilenceRow]:
        """Every recorded silence, by start."""
        rows = self.db.execute("SELECT * FROM silences ORDER BY start, id")
        return [SilenceRow(**dict(r)) for r in rows]

    def delete_silence(self, silence_id: str) -> bool:
        """Remove a silence; ``False`` if there was none."""
        return self.db.execute("DELETE FROM silences WHERE id=?", (silence_id,)).rowcount == 1

    def count_suppressed(self, silence_id: str) -> None:
        """Count one anomaly suppressed by a silence (visible in ``silences`` listings)."""
        self.db.execute("UPDATE silences SET suppressed = suppressed + 1 WHERE id=?", (silence_id,))
