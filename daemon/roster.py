"""Who holds a role at a given moment: people, teams, rotations and overrides.

Playbooks name roles (``incident_commander: {rotation: pr-primary}``); the
holder must be resolved at the *incident's* time — in replay and drills that
is simulated time, not now — and recorded, so the timeline says who was
paged even after the rotation moved on. Hand-offs are wall-clock times in the
rotation's time zone, because that is how on-call schedules are agreed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.config import Config, OverrideConfig, PersonConfig, RotationConfig

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One resolved addressee of an action (a person, or a team's list)."""

    id: str
    name: str
    email: str | None = None
    pager: str | None = None
    chat: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """Plain data for the outbox row."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "pager": self.pager,
            "chat": self.chat,
        }


def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name, with an error message people can act on."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        ) from exc


def parse_instant(text: str) -> float:
    """Epoch seconds from an ISO date-time; a missing offset means UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"expected an ISO date-time such as 2026-11-23T09:00+01:00, got {text!r}"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    return moment.timestamp()


def on_call(rotation: RotationConfig, at: float) -> str:
    """The member of ``rotation`` on call at epoch ``at`` (ignoring overrides).

    Turns are counted in local wall-clock time from the first hand-off, so
    a daylight-saving change does not shift the hand-off hour.
    """
    tz = zone(rotation.timezone)
    local = datetime.fromtimestamp(at, tz).replace(tzinfo=None)
    hour, minute = (int(part) for part in rotation.handoff_time.split(":"))
    anchor_day = date.fromisoformat(rotation.start)
    if rotation.period == "weekly":
        shift = (_WEEKDAYS.index(rotation.handoff_day) - anchor_day.weekday()) % 7
        anchor_day += timedelta(days=shift)
        length = timedelta(days=7)
    else:
        length = timedelta(days=1)
    anchor = datetime.combine(anchor_day, time(hour, minute))
    turns = (local - anchor) // length
    return rotation.members[turns % len(rotation.members)]


class Roster:
    """Resolves role specs and recipient references against ``config.yaml``."""

    def __init__(self, config: Config) -> None:
        self.people = config.people
        self.teams = config.teams
        self.rotations = config.rotations
        self._overrides: list[tuple[OverrideConfig, float, float]] = [
            (o, parse_instant(o.start), parse_instant(o.end)) for o in config.overrides
        ]

    def holder(self, rotation: str, at: float) -> str:
        """The person on call for ``rotation`` at ``at``; the last matching override wins.

        A rotation missing from the config (tolerated only in demos) yields a
        placeholder id such as ``pr-primary-oncall``.
        """
        for override, start, end in reversed(self._overrides):
            if override.rotation == rotation and start <= at < end:
                return override.person
        if rotation not in self.rotations:
            return f"{rotation}-oncall"
        return on_call(self.rotations[rotation], at)

    def person(self, person_id: str) -> Recipient:
        """A person as a recipient; an unknown id still yields a named recipient."""
        cfg = self.people.get(person_id) or PersonConfig(name=person_id)
        return Recipient(person_id, cfg.name, cfg.email, cfg.pager, cfg.chat)

    def team(self, team_id: str) -> list[Recipient]:
        """A team's recipients: its list address if it has one, else its members."""
        team = self.teams.get(team_id)
        if team is None:  # tolerated in demos: a placeholder the log target shows
            return [Recipient(f"team:{team_id}", f"team {team_id}")]
        if team.email and not team.members:
            return [Recipient(f"team:{team_id}", f"{team_id} team", team.email, None, team.chat)]
        # A team's list address and channel replace its members' own for email
        # and chat (one message to the list, not one per member plus the list);
        # members keep their pagers.
        members = [
            replace(
                self.person(p),
                email=None if team.email else self.person(p).email,
                chat=None if team.chat else self.person(p).chat,
            )
            for p in team.members
        ]
        if team.email or team.chat:
            members.append(
                Recipient(f"team:{team_id}", f"{team_id} team", team.email, None, team.chat)
            )
        return members

    def expand(self, ref: str, roles: dict[str, str], at: float) -> list[Recipient]:
        """Recipients of one reference: a role name, ``team:x``, ``person:x`` or ``rotation:x``.

        ``roles`` maps role names to their recorded holders (``person:x`` or
        ``team:x``), so a role keeps the holder assigned when the incident
        opened even if the rotation hands off mid-incident.
        """
        kind, _, name = ref.partition(":")
        if not name:
            holder = roles.get(ref)
            return self.expand(holder, roles, at) if holder else []
        if kind == "team":
            return self.team(name)
        if kind == "person":
            return [self.person(name)]
        if kind == "rotation":
            return [self.person(self.holder(name, at))]
        raise ValueError(f"unknown recipient {ref!r}")

    def recipients(self, refs: list[str], roles: dict[str, str], at: float) -> list[Recipient]:
        """All recipients of ``refs``, each once, in order."""
        seen: dict[str, Recipient] = {}
        for ref in refs:
            for recipient in self.expand(ref, roles, at):
                seen.setdefault(recipient.id, recipient)
        return list(seen.values())
