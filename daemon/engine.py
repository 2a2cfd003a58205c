"""The playbook engine: runs an incident's playbook steps on the pipeline's clock.

It receives every ``IncidentEvent`` from the incident stage and turns it into
decisions (who holds which role), actions (pages, emails, chat, posts,
webhooks, written to the durable outbox) and timers (approval deadlines,
escalations, status updates, persisted so a restart re-arms them). Each
event, and each timer that fires, is handled in one SQLite transaction, so a
crash between an approval request and its deadline neither loses the
escalation nor sends anything twice.

Timers run on the ``Clock`` the pipeline gives it: simulated in replay, drill
and tests, real when live. Every decision is appended to the incident's
timeline and reported through ``on_entry`` so ``crisisd replay``, ``demo``
and ``drill`` can print the response as it happens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from daemon import report as report_module
from daemon.actions import MEDIA, Action, Medium, Target
from daemon.clock import Clock, Timer
from daemon.config import Config
from daemon.domain import (
    Bucket,
    Incident,
    IncidentChange,
    IncidentEvent,
    IncidentStatus,
    Sample,
    SeriesKey,
    TimelineEntry,
)
from daemon.outbox import Limits, NoSuchAction, Outbox, OutboxError
from daemon.playbook import (
    ChatStep,
    EmailStep,
    EscalateStep,
    PageStep,
    Playbook,
    Playbooks,
    PostStatementStep,
    UpdateStep,
    WebhookStep,
    statement_id,
)
from daemon.roster import Recipient, Roster
from daemon.store import Statement, Store, TimerRow
from daemon.templating import Medium as TextMedium
from daemon.templating import Templates, sha256, span, stamp
from daemon.timeline import describe

log = structlog.get_logger("crisisd.engine")

TEMPLATE_ERROR = "[template error:"

REPLY_CHANNELS: dict[str, frozenset[str]] = {
    "x": frozenset({"twitter", "x"}),
    "facebook": frozenset({"facebook"}),
    "mastodon": frozenset({"mastodon"}),
}
"""The origin channels a platform target posts for and can reply to.

A statement goes only to the post targets of the incident's origin channel
(``channels:`` in a target's config overrides this), and a reply only to the
platform the triggering mention is on."""

HISTORY = 120
"""Closed buckets kept per series for the chart's lead-up (2 hours of 1-minute buckets)."""

OnEntry = Callable[[Incident, TimelineEntry], None]

_TEXT_MEDIUM: dict[str, TextMedium] = {
    "page": "text",
    "email": "text",
    "chat": "mrkdwn",
    "post": "text",
    "webhook": "text",
}


class ApprovalError(Exception):
    """An approval or edit that cannot be applied (wrong text, already posted, unknown)."""


class ActionError(ApprovalError, ValueError):
    """A retry or cancel of an outbox action that cannot apply (unknown id, wrong state)."""


class UnknownActionError(ActionError, KeyError):
    """No outbox action with that id (also a ``KeyError``, so an API can answer 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Engine:
    """Runs playbooks for incidents; one per daemon.

    ``targets`` defaults to the ``targets:`` section of the config. In a
    ``rehearsal`` (simulated time: a replay, the demo) and in a ``drill``
    (whose timeline entries are also marked so) only targets marked ``test:
    true`` receive actions, marked as tests; the rest are shown in the
    timeline as what *would* be sent. A backtest of last month's mentions
    must not page anyone, nor post on the brand's account.
    """

    def __init__(
        self,
        config: Config,
        playbooks: Playbooks,
        clock: Clock,
        store: Store,
        on_entry: OnEntry | None = None,
        *,
        targets: dict[str, Target] | None = None,
        templates: Templates | None = None,
        drill: bool = False,
        rehearsal: bool = False,
    ) -> None:
        from daemon.targets import build

        self.config = config
        self.playbooks = playbooks
        self.clock = clock
        self.store = store
        self.on_entry = on_entry
        self.drill = drill
        self.rehearsal = rehearsal or drill
        self.roster = Roster(config)
        self.templates = templates or Templates(config.playbooks.dir / "templates")
        self.targets = targets if targets is not None else build(config)
        self.outbox = Outbox(
            store,
            self.targets,
            on_result=self._delivered,
            limits={
                name: Limits(cfg.concurrency, cfg.rate_per_minute)
                for name, cfg in config.targets.items()
            },
        )
        self.incidents: dict[str, Incident] = {}
        self._stored: dict[str, int] = {}
        self._rows: dict[str, TimerRow] = {}
        self._armed: dict[str, Timer] = {}
        self._armed_restored = False
        self._history: dict[SeriesKey, deque[tuple[float, float, float]]] = {}
        for incident in self.store.incidents(open_only=True):
            self.incidents[incident.id] = incident
            self._stored[incident.id] = len(incident.timeline)

    # ----------------------------------------------------------------- lifecycle

    def reload(self, config: Config, playbooks: Playbooks) -> None:
        """Use a new, already validated config and playbook set (SIGHUP).

        Running incidents keep their recorded role holders and pending
        timers; from now on steps, templates and rosters come from the new
        set. Delivery targets are kept (they hold connections).
        """
        self.config = config.model_copy(update={"targets": self.config.targets})
        self.playbooks = playbooks
        self.roster = Roster(config)
        self.templates = Templates(config.playbooks.dir / "templates")

    def open_incidents(self) -> list[Incident]:
        """The incidents not yet resolved, oldest first.

        After a restart these are the incidents resumed from the store; give
        them to the incident manager (``manager.restore``) so both share them.
        """
        return sorted(
            (i for i in self.incidents.values() if i.status != IncidentStatus.RESOLVED),
            key=lambda i: i.opened_at,
        )

    def rearm(self) -> int:
        """Arm the persisted timers of the open incidents on the clock (once); how many.

        ``start`` calls it; it needs a running event loop with a ``RealClock``.
        A timer already due fires at once (live) or on the next advance
        (simulated), exactly once.
        """
        if self._armed_restored:
            return 0
        self._armed_restored = True
        count = 0
        for row in self.store.pending_timers():
            if row.incident_id in self.incidents and row.id not in self._rows:
                self._arm_row(row)
                count += 1
        return count

    async def start(self) -> None:
        """Re-arm persisted timers and start delivering.

        Interrupted pages and emails are retried; interrupted posts are
        flagged for a human, never re-posted.
        """
        self.rearm()
        await self.outbox.start()

    async def stop(self, drain: float = 10.0) -> None:
        """Drain the outbox and stop; timers stay persisted for the next start.

        Targets holding connection pools (the HTTP integrations) are closed
        last, so no socket outlives the daemon's event loop.
        """
        await self.outbox.stop(drain)
        for timer in self._armed.values():
            timer.cancel()
        self._armed.clear()
        await self.close_targets()

    async def close_targets(self) -> None:
        """``aclose()`` every target that has one (idempotent; a failure is only logged)."""
        for name, target in self.targets.items():
            close = getattr(target, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:  # shutting down: nothing left to do about it
                log.warning("target close failed", target=name, error=repr(exc))

    # ------------------------------------------------------------------- events

    def handle(self, event: IncidentEvent) -> None:
        """Act on one incident change (synchronous, from the event loop)."""
        incident = event.incident
        self._prune(event.at)
        self.incidents[incident.id] = incident
        self._stored.setdefault(incident.id, 0)
        with self.store.transaction():
            if event.change is IncidentChange.OPENED:
                for point in self._history.get(incident.origin, ()):
                    self.store.add_point(incident.id, *point)
            a = event.anomaly
            if a is not None and a.series == incident.origin and not self._history:
                # Without bucket history (no observe_bucket feed) the anomalies chart it.
                self.store.add_point(incident.id, a.end, a.volume, a.negative_share)
            if event.change is IncidentChange.OPENED:
                self._open(incident, event.at)
            elif event.change is IncidentChange.PLAYBOOK_SWITCHED:
                self._switch(incident, event.at)
            elif event.change is IncidentChange.ACKNOWLEDGED:
                self._acknowledged(incident, event.at)
            elif event.change is IncidentChange.RESOLVED:
                self._resolved(incident, event.at)
            self._save(incident)
        self.outbox.wake()

    def _prune(self, now: float) -> None:
        """Forget incidents resolved over a day ago (the store keeps them) to bound memory."""
        for incident_id, incident in list(self.incidents.items()):
            if incident.resolved_at is not None and incident.resolved_at < now - 86400:
                del self.incidents[incident_id]
                self._stored.pop(incident_id, None)

    def observe_bucket(self, bucket: Bucket) -> None:
        """Feed every closed bucket here (a pipeline listener) for the report's chart.

        The last ``HISTORY`` buckets of each series are kept in memory, so a
        new incident's chart starts with the lead-up to the detection; while
        an incident is open its origin series' buckets are stored with it.
        """
        point = (bucket.end, float(bucket.volume), bucket.negative_share)
        history = self._history.setdefault(bucket.series, deque(maxlen=HISTORY))
        history.append(point)
        for incident in self.incidents.values():  # every bucket: no sorting here
            if incident.origin == bucket.series and incident.status != IncidentStatus.RESOLVED:
                self.store.add_point(incident.id, *point)

    # ------------------------------------------------------------ control (API)

    def acknowledge(self, incident_id: str, by: str) -> None:
        """Someone took the incident: stops acknowledgement escalations.

        With an incident manager, call ``manager.acknowledge`` and pass its
        event to ``handle`` instead; this is the same without one.
        """
        incident = self._incident(incident_id)
        at = self.clock.now()
        incident.status = IncidentStatus.ACKNOWLEDGED
        incident.timeline.append(TimelineEntry(at, "acknowledged", f"by {by}", {"by": by}))
        self.handle(IncidentEvent(IncidentChange.ACKNOWLEDGED, at, incident))

    def resolve(self, incident_id: str, by: str) -> None:
        """Resolve by hand (without an incident manager; see ``acknowledge``)."""
        incident = self._incident(incident_id)
        at = self.clock.now()
        incident.status = IncidentStatus.RESOLVED
        incident.resolved_at = at
        incident.timeline.append(TimelineEntry(at, "resolved", f"by {by}", {"by": by}))
        self.handle(IncidentEvent(IncidentChange.RESOLVED, at, incident))

    def approvers(self, incident_id: str, statement_id: str) -> list[str]:
        """The person ids allowed to approve a statement (its approver, resolved)."""
        incident = self._incident(incident_id)
        st = self._statement(incident_id, statement_id)
        people = self.roster.expand(st.approver, incident.roles, self.clock.now())
        return [p.id for p in people if not p.id.startswith("team:")]

    def approve(
        self,
        incident_id: str,
        statement_id: str,
        text_sha256: str,
        by: str,
        *,
        force: bool = False,
    ) -> None:
        """Approve the exact text whose SHA-256 is given (12+ leading hex digits suffice).

        A mismatch means the text changed since the approver read it; the
        approval is refused rather than applied to words nobody approved.
        Only the statement's approvers may approve, unless ``force`` (an
        administrator, a drill) — recorded either way.
        """
        incident = self._incident(incident_id)
        at = self.clock.now()
        allowed = self.approvers(incident_id, statement_id)
        if not force and by not in allowed:
            raise ApprovalError(
                f"{by} may not approve statement {statement_id} "
                f"(approvers: {', '.join(allowed) or 'none'})"
            )
        with self.store.transaction():
            st = self._statement(incident_id, statement_id)
            if st.status != "pending":
                raise ApprovalError(f"statement {statement_id} is {st.status}, not pending")
            if len(text_sha256) < 12 or not st.sha256.startswith(text_sha256.lower()):
                raise ApprovalError(
                    "the text changed since it was sent for approval; approve the current text"
                )
            st.status, st.approved_by, st.approved_at = "approved", by, at
            self.store.save_statement(st)
            self._entry(
                incident,
                at,
                "approval_granted",
                f"statement {st.sid} approved by {by}",
                {"sid": st.sid, "sha256": st.sha256, "by": by, "forced": force},
            )
            self._post(incident, st, at)
            self._save(incident)
        self.outbox.wake()

    def edit_statement(self, incident_id: str, statement_id: str, text: str, by: str) -> str:
        """Replace a statement's text; any approval is void and a new one is requested.

        Returns the new text's SHA-256. The deadline is not reset: the
        public is still waiting.
        """
        incident = self._incident(incident_id)
        at = self.clock.now()
        with self.store.transaction():
            st = self._statement(incident_id, statement_id)
            if st.status not in ("pending", "approved"):
                raise ApprovalError(f"statement {statement_id} is {st.status}; it cannot change")
            voided = st.status == "approved"
            st.text, st.sha256 = text, sha256(text)
            st.version += 1
            st.status, st.approved_by, st.approved_at = "pending", None, None
            self.store.save_statement(st)
            self._entry(
                incident,
                at,
                "statement_edited",
                f"statement {st.sid} edited by {by}"
                + ("; its approval is void" if voided else "")
                + f":\n{text}",
                {"sid": st.sid, "sha256": st.sha256, "by": by, "voided": voided, "text": text},
            )
            self._request_approval(incident, st, at)
            self._save(incident)
        self.outbox.wake()
        return st.sha256

    def statements(self, incident_id: str) -> list[Statement]:
        """The incident's statements (for the control API)."""
        return self.store.statements(incident_id)

    def retry_action(self, action_id: int, by: str) -> Action:
        """A human retries an ``unknown`` or ``failed`` outbox action; recorded in the timeline.

        For a post flagged ``unknown`` this records the human's judgement that
        it was not published: crisisd itself never re-posts. Raises
        ``ActionError`` (a ``ValueError``) when the action does not exist or
        is not ``unknown``/``failed``.
        """
        return self._by_human(self.outbox.retry, action_id, by, "retried")

    def cancel_action(self, action_id: int, by: str) -> Action:
        """A human gives up on a ``pending``, ``unknown`` or ``failed`` action; recorded.

        Raises ``ActionError`` (a ``ValueError``) when the action does not exist
        or is already delivered, cancelled or being sent.
        """
        return self._by_human(self.outbox.cancel, action_id, by, "cancelled")

    def _by_human(
        self, op: Callable[[int, str], Action], action_id: int, by: str, verb: str
    ) -> Action:
        """Apply a person's retry or cancel to an action and record it in the timeline."""
        try:
            action = op(action_id, by)
        except NoSuchAction as exc:
            raise UnknownActionError(str(exc)) from None
        except OutboxError as exc:
            raise ActionError(str(exc)) from None
        self._action_entry(
            action, f"delivery_{verb}",
            f"{action.medium} via {action.target} (action {action_id}) {verb} by {by}", by,
        )
        return action

    def _action_entry(self, action: Action, kind: str, message: str, by: str) -> None:
        incident = self._incident_anywhere(action.incident_id)
        if incident is None:
            return
        with self.store.transaction():
            self._entry(
                incident, self.clock.now(), kind, message,
                {"action_id": action.id, "key": action.key, "by": by},
            )
            self._save(incident)

    # ---------------------------------------------------------------- internals

    def _incident(self, incident_id: str) -> Incident:
        incident = self.incidents.get(incident_id)
        if incident is None:
            raise KeyError(f"no incident {incident_id!r}")
        return incident

    def _incident_anywhere(self, incident_id: str) -> Incident | None:
        """The incident in memory, else from the store (resolved and pruned), else ``None``."""
        incident = self.incidents.get(incident_id)
        if incident is None:
            incident = self.store.incident(incident_id)
            if incident is not None:
                self._stored[incident.id] = len(incident.timeline)
        return incident

    def _statement(self, incident_id: str, sid: str) -> Statement:
        st = self.store.statement(incident_id, sid)
        if st is None:
            raise ApprovalError(f"incident {incident_id} has no statement {sid!r}")
        return st

    def _save(self, incident: Incident) -> None:
        """Persist the incident and the timeline entries not yet stored (ours and the manager's)."""
        self.store.save_incident(incident)
        done = self._stored.get(incident.id, 0)
        for entry in incident.timeline[done:]:
            self.store.add_entry(incident.id, entry)
        self._stored[incident.id] = len(incident.timeline)

    def _entry(
        self,
        incident: Incident,
        ts: float,
        kind: str,
        message: str,
        data: dict[str, Any] | None = None,
    ) -> TimelineEntry:
        entry = TimelineEntry(ts, kind, message, dict(data or {}))
        if self.drill:
            entry.data["drill"] = True
        incident.timeline.append(entry)
        log.info(kind, incident=incident.id, ts=ts, message=message)
        if self.on_entry is not None:
            self.on_entry(incident, entry)
        return entry

    def _playbook(self, incident: Incident) -> Playbook | None:
        return self.playbooks.get(incident.playbook)

    # -- context

    def _names(self, incident: Incident, at: float) -> dict[str, str]:
        out = {}
        for role, ref in incident.roles.items():
            people = self.roster.expand(ref, incident.roles, at)
            out[role] = ", ".join(p.name for p in people) or ref
        return out

    def _context(self, incident: Incident, at: float, **extra: Any) -> dict[str, Any]:
        playbook = self._playbook(incident)
        latest = incident.anomalies[-1] if incident.anomalies else None
        volume: float = latest.volume if latest else 0
        expected = latest.expected if latest and latest.signal == "volume" else None
        share = latest.negative_share if latest else 0.0
        last = self.store.last_point(incident.id)
        if last is not None and (latest is None or last[0] >= latest.end):
            _, volume, share = last  # the latest bucket is the current figure
            volume = int(volume)
        summary = f"{volume} mentions per bucket"
        if expected:
            summary += f" (normally {expected:.0f})"
        summary += f", {share:.0%} negative"
        terms: list[str] = []
        for anomaly in incident.anomalies:
            for term, _ in anomaly.top_terms:
                if term not in terms:
                    terms.append(term)
        samples = []
        for anomaly in incident.anomalies:
            for s in anomaly.samples:
                samples.append(
                    {"author": s.author, "followers": s.followers, "text": s.text, "url": s.url}
                )
        samples.sort(key=lambda s: -s["followers"])
        statements = self.store.statements(incident.id)
        context: dict[str, Any] = {
            "brand": incident.brand,
            "channel": incident.origin.channel,
            "now": stamp(at),
            "incident": {
                "id": incident.id,
                "title": playbook.title if playbook else "Unclassified spike",
                "playbook": incident.playbook,
                "severity": str(incident.severity),
                "status": str(incident.status),
                "opened": stamp(incident.opened_at),
                "duration": span(at - incident.opened_at),
                "signals": sorted(incident.signals),
                "statements": ", ".join(f"{s.sid} {s.status}" for s in statements) or "none",
            },
            "figures": {
                "volume": volume,
                "expected": expected,
                "ratio": (volume / expected) if expected else None,
                "negative_share": share,
                "negative_pct": f"{share:.0%}",
                "score": latest.score if latest else None,
                "summary": summary,
            },
            "roles": self._names(incident, at),
            "role_holders": {
                role: [p.as_dict() for p in self.roster.expand(ref, incident.roles, at)]
                for role, ref in incident.roles.items()
            },
            "top_terms": terms[:10],
            "why": [describe(a) for a in incident.anomalies[:10]],
            "samples": samples[:5],
            "report": "",
            "role_of_recipient": "",
        }
        context.update(extra)
        return context

    def _render(
        self,
        incident: Incident,
        at: float,
        medium: str,
        text: str | None,
        template: str | None,
        default: str,
        **extra: Any,
    ) -> str:
        context = self._context(incident, at, **extra)
        try:
            if text is not None:
                return self.templates.render(context, _TEXT_MEDIUM[medium], source=text)
            return self.templates.render(context, _TEXT_MEDIUM[medium], name=template or default)
        except Exception as exc:  # a template must never stop a crisis response
            log.error("template", incident=incident.id, error=repr(exc))
            return f"{TEMPLATE_ERROR} {exc}] {context['incident']['title']} on {incident.brand}"

    # -- actions

    def _queue(
        self,
        incident: Incident,
        at: float,
        medium: Medium,
        key: str,
        recipients: list[Recipient] | list[dict[str, Any]],
        subject: str,
        body: str,
        data: dict[str, Any] | None = None,
        *,
        exclude: tuple[str, ...] = (),
        reply_to: dict[str, Any] | None = None,
    ) -> int:
        """Write the action to the outbox for every target that delivers ``medium``.

        ``exclude`` names targets to skip (a failure is reported through *another*
        target). ``reply_to`` (the triggering mention's ``reply_to``/``reply_url``)
        is given only to targets on the mention's own platform: a tweet id means
        nothing to Mastodon, which posts the statement anew instead.
        """
        assert medium in MEDIA
        to = [r.as_dict() if isinstance(r, Recipient) else r for r in recipients]
        playbook = self._playbook(incident)
        data = {
            "severity": str(incident.severity),
            "brand": incident.brand,
            "channel": incident.origin.channel,
            "playbook": incident.playbook,
            "title": playbook.title if playbook else "",
            **(data or {}),
        }
        queued = 0
        for name, cfg in self.config.targets.items():
            if medium not in cfg.media or name not in self.targets or name in exclude:
                continue
            if self.rehearsal and not cfg.test:
                continue
            channels = REPLY_CHANNELS.get(cfg.type)
            serves = cfg.channels if cfg.channels is not None else channels
            if medium == "post" and serves is not None and incident.origin.channel not in serves:
                continue  # a statement answers where the crisis is, not everywhere
            replies = reply_to and (channels is None or incident.origin.channel in channels)
            action = Action(
                key=f"{key}/{medium}@{name}",
                incident_id=incident.id,
                medium=medium,
                target=name,
                to=to,
                subject=subject,
                body=body,
                created_at=at,
                data={**data, **reply_to} if replies and reply_to else dict(data),
                test=self.rehearsal,
            )
            queued += self.store.enqueue(action)
        return queued

    def _notify(
        self,
        incident: Incident,
        at: float,
        kind: str,
        medium: Medium,
        key: str,
        refs: list[str],
        subject: str,
        body: str,
        data: dict[str, Any] | None = None,
    ) -> None:
        recipients = self.roster.recipients(refs, incident.roles, at)
        names = ", ".join(r.name for r in recipients) or "nobody"
        if not recipients:
            self._entry(incident, at, "warning", f"{kind}: no recipients for {refs}")
            return
        self._queue(incident, at, medium, key, recipients, subject, body, data)
        self._entry(
            incident,
            at,
            kind,
            f"{medium} to {names}: {subject or body}",
            {
                "medium": medium,
                "to": [r.id for r in recipients],
                "subject": subject,
                "text": body,
                **(data or {}),
            },
        )

    def _subject(self, incident: Incident, what: str) -> str:
        playbook = self._playbook(incident)
        title = playbook.title if playbook else "Crisis"
        return f"[crisisd {incident.severity}] {what}: {title} — {incident.brand}"

    # -- opening and steps

    def _assign_roles(self, incident: Incident, playbook: Playbook, at: float) -> None:
        for role, spec in playbook.roles.items():
            ref = spec.ref()
            if role in incident.roles and self._role_source(incident, role) == ref:
                continue
            kind, _, name = ref.partition(":")
            holder = f"person:{self.roster.holder(name, at)}" if kind == "rotation" else ref
            incident.roles[role] = holder
            people = self.roster.expand(holder, incident.roles, at)
            names = ", ".join(p.name for p in people) or holder
            self._entry(
                incident,
                at,
                "role_assigned",
                f"{role}: {names} (from {ref})",
                {"role": role, "holder": holder, "source": ref},
            )
            if spec.notify and people:
                body = self._render(
                    incident, at, "email", None, "role-assigned", "role-assigned", role=role
                )
                self._queue(
                    incident,
                    at,
                    "email",
                    f"{incident.id}/{playbook.name}/role/{role}",
                    people,
                    self._subject(incident, f"You are {role}"),
                    body,
                    {"role": role},
                )

    @staticmethod
    def _role_source(incident: Incident, role: str) -> str | None:
        """Where the recorded holder of ``role`` came from (its last assignment)."""
        for entry in reversed(incident.timeline):
            if entry.kind == "role_assigned" and entry.data.get("role") == role:
                return entry.data.get("source")
        return None

    def _open(self, incident: Incident, at: float) -> None:
        playbook = self._playbook(incident)
        if playbook is None:
            if incident.playbook:  # a name the loaded set lacks (renamed on reload)
                self._entry(
                    incident, at, "warning", f"no playbook {incident.playbook!r}; nothing runs"
                )
            return
        self._entry(
            incident,
            at,
            "playbook",
            f"running {playbook.name} ({playbook.title})",
            {"playbook": playbook.name},
        )
        self._assign_roles(incident, playbook, at)
        for index in range(len(playbook.steps)):
            self._run_step(incident, playbook, index, at)

    def _run_step(self, incident: Incident, playbook: Playbook, index: int, at: float) -> None:
        step = playbook.steps[index].body
        key = f"{incident.id}/{playbook.name}/{index}"
        if isinstance(step, PageStep):
            held = ", ".join(r for r in step.to if r in incident.roles)
            body = self._render(
                incident, at, "page", step.text, step.template, "page", role_of_recipient=held
            )
            self._notify(
                incident, at, "page", "page", key, step.to, "", body, {"urgency": step.urgency}
            )
        elif isinstance(step, EmailStep):
            body = self._render(incident, at, "email", step.text, step.template, "incident-brief")
            subject = (
                self._render(incident, at, "email", step.subject, None, "")
                if step.subject
                else self._subject(incident, "Incident brief")
            )
            self._notify(incident, at, "email", "email", key, step.to, subject, body)
        elif isinstance(step, ChatStep):
            body = self._render(incident, at, "chat", step.text, step.template, "page")
            self._notify(incident, at, "chat", "chat", key, step.to, "", body)
        elif isinstance(step, PostStatementStep):
            self._statement_step(incident, playbook, index, step, at)
        elif isinstance(step, EscalateStep):
            self._arm(incident, f"{key}/escalate", at + step.after, "escalate", {"step": index})
        elif isinstance(step, UpdateStep):
            self._arm(
                incident, f"{key}/update/1", at + step.every, "update", {"step": index, "n": 1}
            )
        elif isinstance(step, WebhookStep) and step.when == "open":
            self._webhook(incident, key, step, at)

    def _webhook(self, incident: Incident, key: str, step: WebhookStep, at: float) -> None:
        body = self._render(incident, at, "webhook", step.body, None, "") if step.body else ""
        target = {"id": step.url, "name": step.url}
        self._queue(
            incident,
            at,
            "webhook",
            f"{key}/{step.when}",
            [target],
            step.method,
            body,
            {"url": step.url, "method": step.method},
        )
        self._entry(
            incident,
            at,
            "webhook",
            f"{step.method} {step.url}",
            {"url": step.url, "method": step.method, "text": body},
        )

    def _statement_step(
        self,
        incident: Incident,
        playbook: Playbook,
        index: int,
        step: PostStatementStep,
        at: float,
    ) -> None:
        text = self._render(incident, at, "post", step.text, None, "")
        channel = incident.origin.channel if step.channel == "origin" else step.channel
        approval = step.approval
        if text.startswith(TEMPLATE_ERROR) and approval == "auto":
            # Never post a broken text unseen: a person must fix and approve it.
            approval = "incident_commander" if "incident_commander" in incident.roles else approval
            self._entry(
                incident, at, "warning", "statement did not render; held for approval instead"
            )
        st = Statement(
            incident_id=incident.id,
            sid=statement_id(index, step),
            step=index,
            text=text,
            sha256=sha256(text),
            approver=approval,
            channel=channel,
            status="pending",
            requested_at=at,
            deadline_at=None if approval == "auto" else at + step.deadline,
        )
        self._entry(
            incident,
            at,
            "statement_drafted",
            f"holding statement {st.sid}{f' for {channel}' if channel else ''}:\n{text}",
            {"sid": st.sid, "channel": channel, "text": text, "sha256": st.sha256},
        )
        if approval == "auto" and text.startswith(TEMPLATE_ERROR):
            self.store.save_statement(st)  # held: only a forced approval after an edit posts it
            return
        if approval == "auto":
            st.status, st.approved_by, st.approved_at = "approved", "auto", at
            self.store.save_statement(st)
            self._entry(
                incident,
                at,
                "approval_granted",
                f"statement {st.sid} is pre-approved",
                {"sid": st.sid, "sha256": st.sha256, "by": "auto"},
            )
            self._post(incident, st, at)
            return
        self.store.save_statement(st)
        self._request_approval(incident, st, at)
        assert st.deadline_at is not None
        self._arm(
            incident,
            f"{incident.id}/{playbook.name}/{index}/deadline",
            st.deadline_at,
            "deadline",
            {"sid": st.sid, "step": index, "playbook": playbook.name},
        )

    def _request_approval(self, incident: Incident, st: Statement, at: float) -> None:
        deadline = span(max(0.0, (st.deadline_at or at) - at))
        body = self._render(
            incident,
            at,
            "email",
            None,
            "approval-request",
            "approval-request",
            statement=st.text,
            statement_id=st.sid,
            sha256=st.sha256,
            deadline=deadline,
            channel=st.channel,
        )
        self._notify(
            incident,
            at,
            "approval_requested",
            "email",
            f"{incident.id}/statement/{st.sid}/v{st.version}/approval",
            [st.approver],
            self._subject(incident, f"APPROVE holding statement {st.sid} within {deadline}"),
            body,
            {"sid": st.sid, "sha256": st.sha256, "version": st.version},
        )
        # Minutes count: approvers with a pager are paged to read their email.
        pagers = [r for r in self.roster.recipients([st.approver], incident.roles, at) if r.pager]
        if pagers:
            self._notify(
                incident,
                at,
                "approval_requested",
                "page",
                f"{incident.id}/statement/{st.sid}/v{st.version}/approval",
                [f"person:{r.id}" for r in pagers],
                "",
                f"Approve the {incident.brand} holding statement {st.sid} within {deadline}: "
                "the text is in your email.",
                {"sid": st.sid, "sha256": st.sha256, "version": st.version},
            )

    def _post(self, incident: Incident, st: Statement, at: float) -> None:
        st.status = "posted"
        self.store.save_statement(st)
        self.store.cancel_timers(incident.id, ("deadline",))
        data: dict[str, Any] = {
            "channel": st.channel, "sid": st.sid, "sha256": st.sha256, "brand": incident.brand,
        }
        reply: dict[str, Any] | None = None
        if self._wants_reply(incident, st):
            mention = self._triggering_mention(incident)
            if mention is not None and st.channel == incident.origin.channel:
                reply = {"reply_to": mention.id}
                if mention.url:
                    reply["reply_url"] = mention.url
            else:
                self._entry(
                    incident, at, "warning",
                    f"statement {st.sid}: no triggering mention on {st.channel} to reply to; "
                    "posted as a new post",
                )
        self._queue(
            incident,
            at,
            "post",
            f"{incident.id}/statement/{st.sid}/v{st.version}/post",
            [{"id": st.channel, "name": st.channel}],
            "",
            st.text,
            data,
            reply_to=reply,
        )
        self._entry(
            incident,
            at,
            "statement_posted",
            f"post on {st.channel}: {st.text}",
            {"sid": st.sid, "channel": st.channel, "text": st.text, "sha256": st.sha256},
        )

    def _wants_reply(self, incident: Incident, st: Statement) -> bool:
        """Whether the statement's playbook step asks to answer the triggering mention."""
        playbook = self._playbook(incident)
        if playbook is None or not 0 <= st.step < len(playbook.steps):
            return False
        step = playbook.steps[st.step].post_statement
        return bool(step is not None and step.reply)

    @staticmethod
    def _triggering_mention(incident: Incident) -> Sample | None:
        """The mention that set the incident off: the first anomaly's highest-reach sample.

        Only anomalies of the origin series count (the statement is posted
        there); ``None`` when the detector kept no sample (aggregated metrics).
        """
        for anomaly in incident.anomalies:
            if anomaly.series == incident.origin and anomaly.samples:
                return max(anomaly.samples, key=lambda s: s.followers)
        return None

    # -- timers

    def _arm(
        self, incident: Incident, timer_id: str, due: float, kind: str, payload: dict[str, Any]
    ) -> None:
        row = TimerRow(timer_id, incident.id, due, kind, payload)
        self.store.add_timer(row)
        self._arm_row(row)

    def _arm_row(self, row: TimerRow) -> None:
        self._rows[row.id] = row
        self._armed[row.id] = self.clock.call_at(row.due, lambda: self._fire(row.id))

    def _fire(self, timer_id: str) -> None:
        row = self._rows.pop(timer_id, None)
        self._armed.pop(timer_id, None)
        if row is None:
            return
        incident = self.incidents.get(row.incident_id)
        with self.store.transaction():
            if not self.store.claim_timer(timer_id):
                return
            if incident is None or incident.status == IncidentStatus.RESOLVED:
                return
            at = row.due
            if row.kind == "deadline":
                self._deadline(incident, row, at)
            elif row.kind == "escalate":
                self._escalate_step(incident, row, at)
            elif row.kind == "update":
                self._update(incident, row, at)
            self._save(incident)
        self.outbox.wake()

    def _cancel(self, incident: Incident, kinds: tuple[str, ...] | None = None) -> None:
        for timer_id in self.store.cancel_timers(incident.id, kinds):
            armed = self._armed.pop(timer_id, None)
            if armed is not None:
                armed.cancel()
            self._rows.pop(timer_id, None)

    def _deadline(self, incident: Incident, row: TimerRow, at: float) -> None:
        st = self.store.statement(incident.id, row.payload["sid"])
        if st is None or st.status != "pending":
            return
        playbook = self.playbooks.get(row.payload.get("playbook", incident.playbook))
        step = playbook.steps[row.payload["step"]].post_statement if playbook else None
        refs = list(step.escalate_to) if step and step.escalate_to else []
        if not refs:
            refs = [st.approver]
            if "incident_commander" in incident.roles:
                refs.append("incident_commander")
        reason = f"holding statement {st.sid} not approved by its deadline"
        body = self._render(incident, at, "page", None, "escalation", "escalation", reason=reason)
        self._escalate(incident, at, f"{row.id}/escalation", refs, body, reason, st.text)

    def _escalate_step(self, incident: Incident, row: TimerRow, at: float) -> None:
        playbook = self._playbook(incident)
        if playbook is None:
            return
        step = playbook.steps[row.payload["step"]].escalate
        if step is None:
            return
        statements = self.store.statements(incident.id)
        done = {
            "acknowledged": incident.status != IncidentStatus.OPEN,
            "approved": bool(statements)
            and all(s.status in ("approved", "posted") for s in statements),
            "posted": bool(statements) and all(s.status == "posted" for s in statements),
            "resolved": False,
        }[step.unless]
        if done:
            self._entry(
                incident,
                at,
                "escalation_skipped",
                f"no escalation after {span(step.after)}: already {step.unless}",
            )
            return
        reason = f"not {step.unless} after {span(step.after)}"
        body = self._render(
            incident, at, "page", step.text, step.template, "escalation", reason=reason
        )
        self._escalate(incident, at, row.id, step.to, body, reason)

    def _escalate(
        self, incident: Incident, at: float, key: str, refs: list[str], body: str, reason: str,
        detail: str = "",
    ) -> None:
        """Page and email ``refs`` about an escalation (the email adds ``detail``)."""
        data = {"reason": reason}
        self._notify(incident, at, "escalation", "page", key, refs, "", body, data)
        self._notify(
            incident, at, "escalation", "email", key, refs,
            self._subject(incident, "ESCALATION"),
            f"{body}\n\n{detail}" if detail else body, data,
        )

    def _update(self, incident: Incident, row: TimerRow, at: float) -> None:
        playbook = self._playbook(incident)
        if playbook is None:
            return
        step = playbook.steps[row.payload["step"]].update
        if step is None:
            return
        n = row.payload["n"]
        body = self._render(incident, at, step.via, step.text, step.template, "status-update")
        subject = self._subject(incident, f"Status update {n}") if step.via == "email" else ""
        self._notify(incident, at, "update", step.via, row.id, step.to, subject, body, {"n": n})
        base = row.id.rsplit("/", 1)[0]
        self._arm(
            incident,
            f"{base}/{n + 1}",
            at + step.every,
            "update",
            {"step": row.payload["step"], "n": n + 1},
        )

    # -- changes

    def _switch(self, incident: Incident, at: float) -> None:
        playbook = self._playbook(incident)
        self._void_statements(incident, at, "superseded by the playbook switch")
        if playbook is None:
            self._entry(incident, at, "warning", f"no playbook {incident.playbook!r}")
            return
        self._open(incident, at)

    def _void_statements(self, incident: Incident, at: float, why: str) -> None:
        """Stop the incident's timers and void its statements not yet posted."""
        self._cancel(incident)
        for st in self.store.statements(incident.id):
            if st.status in ("pending", "approved"):
                st.status = "voided"
                self.store.save_statement(st)
                self._entry(
                    incident, at, "statement_voided", f"statement {st.sid} {why}", {"sid": st.sid}
                )

    def _acknowledged(self, incident: Incident, at: float) -> None:
        playbook = self._playbook(incident)
        self._pager_event(incident, at, "acknowledge")
        if playbook is None:
            return
        for row in list(self._rows.values()):
            if row.incident_id != incident.id or row.kind != "escalate":
                continue
            step = playbook.steps[row.payload["step"]].escalate
            if step is not None and step.unless == "acknowledged":
                self.store.cancel_timer(row.id)
                armed = self._armed.pop(row.id, None)
                if armed is not None:
                    armed.cancel()
                self._rows.pop(row.id, None)
                self._entry(
                    incident,
                    at,
                    "escalation_cancelled",
                    f"escalation after {span(step.after)} cancelled: acknowledged",
                )

    def _resolved(self, incident: Incident, at: float) -> None:
        playbook = self._playbook(incident)
        self._void_statements(incident, at, "never posted: incident resolved")
        self._pager_event(incident, at, "resolve")
        if playbook is None:
            return
        for index, step in enumerate(playbook.steps):
            if step.webhook is not None and step.webhook.when == "resolve":
                self._webhook(incident, f"{incident.id}/{playbook.name}/{index}", step.webhook, at)
        link = ""
        report_data: dict[str, Any] = {}
        if playbook.resolve.report and self.config.playbooks.reports:
            self._save(incident)
            paths = report_module.write(
                incident,
                self.store.points(incident.id),
                self.report_dir(),
                at,
                self._names(incident, at),
            )
            link = str(paths.html.resolve())
            report_data = {
                "report": link,
                "report_url": paths.html.resolve().as_uri(),
                "chart": str(paths.chart.resolve()),
            }
            self._entry(
                incident,
                at,
                "report_written",
                f"post-crisis report: {link}",
                {"markdown": str(paths.markdown), "html": str(paths.html)},
            )
        refs = list(playbook.resolve.notify)
        if refs:
            body = self._render(
                incident, at, "email", None, playbook.resolve.template, "resolved", report=link
            )
            self._notify(
                incident,
                at,
                "resolve_notified",
                "email",
                f"{incident.id}/resolved",
                refs,
                self._subject(incident, "Resolved"),
                body,
                report_data,
            )

    def _pager_event(self, incident: Incident, at: float, event_action: str) -> None:
        """Acknowledge or resolve the incident's pager alert (one alert per incident).

        Only when something was paged: pager targets key alerts by incident,
        so this closes the alert people were woken by.
        """
        paged = self.store.actions(incident.id)
        if not any(a.medium == "page" and not a.data.get("event_action") for a in paged):
            return
        self._queue(
            incident,
            at,
            "page",
            f"{incident.id}/pager/{event_action}",
            [],
            "",
            f"{incident.id} {event_action}d",
            {"event_action": event_action},
        )
        self._entry(incident, at, "pager", f"pager alert {event_action}d", {"event": event_action})

    def report_dir(self) -> Path:
        """Where post-crisis reports are written (``<state_dir>/reports``)."""
        return self.config.state_dir / "reports"

    def _delivered(self, action: Action, outcome: str, detail: str) -> None:
        """Outbox results worth a timeline line: posts made, and anything that failed.

        A failed action or a post of unknown outcome is also brought to the
        incident commander through the *other* targets (the failing one may be
        the very channel that is down): a page and an email naming the action
        id a human retries or cancels. A failed alert is only recorded, so a
        broken pager cannot page about itself forever.
        """
        if outcome == "delivered" and action.medium != "post":
            return
        incident = self._incident_anywhere(action.incident_id)
        if incident is None:
            return
        kind = {"delivered": "posted", "failed": "delivery_failed"}.get(outcome, "post_unknown")
        message = f"{action.medium} via {action.target}: {outcome} ({detail})"
        at = self.clock.now()
        with self.store.transaction():
            earlier = sum(
                1 for e in incident.timeline
                if e.kind == kind and e.data.get("key") == action.key
            )
            self._entry(
                incident,
                at,
                kind,
                message,
                {"key": action.key, "outcome": outcome, "detail": detail,
                 "action_id": action.id},
            )
            if outcome != "delivered" and not action.data.get("delivery_alert"):
                self._alert_commander(incident, action, outcome, detail, at, earlier)
            self._save(incident)
        self.outbox.wake()

    def _alert_commander(
        self, incident: Incident, action: Action, outcome: str, detail: str, at: float, n: int
    ) -> None:
        """Page and email the incident commander about a failed or unknown delivery."""
        refs = ["incident_commander"] if "incident_commander" in incident.roles else sorted(
            incident.roles
        )
        if not refs:
            self._entry(
                incident, at, "warning",
                f"nobody to tell about action {action.id} ({outcome}): the incident has no roles",
            )
            return
        what = f"{action.medium} via {action.target}"
        if outcome == "unknown":
            headline = f"{what}: outcome unknown, NOT re-posted"
            ask = ("Check whether it was published, then retry or cancel action "
                   f"{action.id} (crisisd incidents retry|cancel).")
        else:
            headline = f"{what} failed for good"
            ask = (f"Fix the cause, then retry or cancel action {action.id} "
                   "(crisisd incidents retry|cancel).")
        body = f"{headline}: {detail}\n{ask}"
        if action.medium == "post":
            body += f"\n\nThe statement:\n{action.body}"
        key = f"{action.key}/alert/{outcome}/{n}"
        data = {"delivery_alert": True, "action_id": action.id, "outcome": outcome,
                "severity": "critical"}
        recipients = self.roster.recipients(refs, incident.roles, at)
        if not recipients:
            self._entry(incident, at, "warning",
                        f"nobody to tell about action {action.id} ({outcome}) in {refs}")
            return
        queued = 0
        for medium in ("page", "email"):
            subject = self._subject(incident, "DELIVERY " + outcome.upper()) if (
                medium == "email") else headline
            queued += self._queue(incident, at, medium, key, recipients, subject, body, data,
                                  exclude=(action.target,))
        names = ", ".join(r.name for r in recipients) or "nobody"
        if queued:
            self._entry(
                incident, at, "delivery_escalated",
                f"{names} told about action {action.id}: {headline}",
                {"action_id": action.id, "to": [r.id for r in recipients], "outcome": outcome},
            )
        else:
            self._entry(
                incident, at, "warning",
                f"no other page or email target to tell {names} about action {action.id}",
            )
