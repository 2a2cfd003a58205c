"""Role holders resolved at the incident's time: hand-offs, time zones, overrides."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from daemon.config import Config, RotationConfig
from daemon.roster import Roster, on_call

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def ts(year, month, day, hour, minute=0, tz=PARIS) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


WEEKLY = RotationConfig(
    members=["alice", "carla"],
    period="weekly",
    handoff_day="monday",
    handoff_time="09:00",
    timezone="Europe/Paris",
    start="2026-01-05",
)


def test_weekly_handoff_at_local_time():
    # 2026-11-23 is a Monday; the hand-off is at 09:00 Paris (08:00 UTC in winter).
    before = on_call(WEEKLY, ts(2026, 11, 23, 8, 59))
    after = on_call(WEEKLY, ts(2026, 11, 23, 9, 0))
    assert before != after
    assert {before, after} == {"alice", "carla"}
    # The whole following week stays with the same person.
    assert on_call(WEEKLY, ts(2026, 11, 29, 23, 59)) == after
    assert on_call(WEEKLY, ts(2026, 11, 30, 9, 0)) == before


def test_handoff_keeps_wall_clock_across_dst():
    # DST ends on 2026-10-25 in Paris; Monday 26 Oct the hand-off is still 09:00 local.
    assert on_call(WEEKLY, ts(2026, 10, 26, 8, 59)) != on_call(WEEKLY, ts(2026, 10, 26, 9, 0))
    # and in summer too (UTC+2).
    assert on_call(WEEKLY, ts(2026, 7, 6, 8, 59)) != on_call(WEEKLY, ts(2026, 7, 6, 9, 0))


def test_first_turn_is_the_first_member_from_start():
    assert on_call(WEEKLY, ts(2026, 1, 5, 9, 0)) == "alice"
    assert on_call(WEEKLY, ts(2026, 1, 12, 9, 0)) == "carla"
    assert on_call(WEEKLY, ts(2026, 1, 19, 9, 0)) == "alice"


def test_handoff_day_other_than_start_weekday():
    rotation = WEEKLY.model_copy(update={"handoff_day": "wednesday"})
    # First hand-off is the first Wednesday on or after the start: 2026-01-07.
    assert on_call(rotation, ts(2026, 1, 7, 9, 0)) == "alice"
    assert on_call(rotation, ts(2026, 1, 14, 8, 0)) == "alice"
    assert on_call(rotation, ts(2026, 1, 14, 9, 0)) == "carla"


def test_same_instant_different_time_zones():
    # A daily rotation handing off at 08:00 New York time: at 13:30 UTC in
    # November that is 08:30 in New York (after hand-off) but a Paris rotation
    # handing off at 15:00 Paris (14:00 UTC) has not handed off yet.
    ny = RotationConfig(
        members=["bob", "dev"],
        period="daily",
        handoff_time="08:00",
        timezone="America/New_York",
        start="2026-01-01",
    )
    paris = ny.model_copy(update={"timezone": "Europe/Paris", "handoff_time": "15:00"})
    moment = datetime(2026, 11, 23, 13, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    just_before = datetime(2026, 11, 23, 12, 59, tzinfo=ZoneInfo("UTC")).timestamp()
    assert on_call(ny, moment) != on_call(ny, just_before)  # 07:59 → 08:30 New York
    assert on_call(paris, moment) == on_call(paris, just_before)  # both before 15:00 Paris


def test_override_wins_for_its_span():
    config = Config.model_validate(
        {
            "people": {
                "alice": {"name": "Alice"},
                "carla": {"name": "Carla"},
                "erin": {"name": "Erin"},
            },
            "rotations": {"pr": WEEKLY.model_dump()},
            "overrides": [
                {
                    "rotation": "pr",
                    "person": "erin",
                    "start": "2026-11-24T00:00:00+01:00",
                    "end": "2026-11-25T00:00:00+01:00",
                }
            ],
        }
    )
    roster = Roster(config)
    normal = roster.holder("pr", ts(2026, 11, 23, 12))
    assert roster.holder("pr", ts(2026, 11, 24, 12)) == "erin"
    assert roster.holder("pr", ts(2026, 11, 25, 0, 0)) == normal


def test_recipients_expand_roles_teams_and_dedupe():
    config = Config.model_validate(
        {
            "people": {"alice": {"name": "Alice", "email": "a@x"}, "bob": {"name": "Bob"}},
            "teams": {"pr": {"members": ["alice", "bob"], "email": "pr@x"}},
        }
    )
    roster = Roster(config)
    roles = {"incident_commander": "person:alice"}
    got = roster.recipients(["incident_commander", "team:pr", "person:alice"], roles, 0.0)
    assert [r.id for r in got] == ["alice", "bob", "team:pr"]
    assert got[2].email == "pr@x"
