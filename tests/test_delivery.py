"""Delivery guarantees end to end: the real engine and outbox, real targets, loopback servers.

A crisis response must reach people even when a platform misbehaves: a
pager alert is acknowledged and resolved under the trigger's dedup key (and
never before it), a failed or unknown delivery is brought to the incident
commander through *another* target, a human retries or cancels it, the
per-target concurrency and rate limits hold and ``Retry-After`` pauses the
whole target.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playbook_fixtures import ROSTER, T0, anomaly, write
from servers import make_action, target_config
from servers.http import HttpStub, Reply
from servers.smtp import SmtpStub

from daemon import config as config_module
from daemon.clock import SimClock
from daemon.domain import Incident, IncidentEvent, Sample, TimelineEntry
from daemon.engine import ActionError, Engine, UnknownActionError
from daemon.incidents import IncidentManager
from daemon.outbox import Limits, Outbox
from daemon.playbook import PlaybookRouter, load
from daemon.store import Store
from daemon.targets import make

PD_KEY = "pd-routing-key-0123456789"
X_TOKEN = "x-token-abcdefghijklmnop"
MENTION_ID = "1790000000000000001"

PLAYBOOK = """
name: recall
title: Product recall
priority: 10
match:
  terms_any: [recall]
roles:
  incident_commander: {rotation: pr-primary}
steps:
  - page: {to: incident_commander}
  - email: {to: [team:pr], template: incident-brief}
  - post_statement:
      id: holding
      text: "We're looking into reports about {{ brand }} products."
      approval: auto
      reply: true
resolve:
  after_quiet: 1h
  cooldown: 30m
  notify: [team:pr]
"""


def config_text(tmp: Path, pd_url: str, smtp_port: int, x_url: str, x_timeout: float) -> str:
    """The harness's roster with three real targets on loopback (pager, mail, X)."""
    targets = (
        "targets:\n"
        f"  pd: {{type: pagerduty, url: '{pd_url}', timeout: 30}}\n"
        f"  mail: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, tls: none,"
        " sender: crisisd@example.org, timeout: 10}\n"
        f"  x: {{type: x, url: '{x_url}', timeout: {x_timeout}}}\n"
    )
    roster = ROSTER.replace("targets:\n  rec: {type: log}\n", targets)
    assert roster != ROSTER
    return roster + f"state_dir: {tmp / 'state'}\n"


def build_engine(tmp: Path, clock: SimClock, on_entry: Any = None) -> Engine:
    """The real engine over the config and playbook written in ``tmp`` (restart: same files)."""
    config = config_module.load(tmp / "config.yaml")
    playbooks = load(tmp / "playbooks", config)
    engine = Engine(config, playbooks, clock, Store.in_dir(config.state_dir), on_entry)
    engine.outbox.base_delay = 0.05  # keep retries of 5xx/4xx answers quick in tests
    return engine


def write_setup(tmp: Path, pd_url: str, smtp_port: int, x_url: str, x_timeout: float) -> None:
    write(tmp, "config.yaml", config_text(tmp, pd_url, smtp_port, x_url, x_timeout))
    write(tmp / "playbooks", "recall.yaml", PLAYBOOK)


def recall(at: float = T0) -> Any:
    """A recall anomaly on acme/twitter whose loudest mention is ``MENTION_ID``."""
    samples = [
        Sample("1790000000000000009", at - 30, "small", 10, "recall?", -0.5),
        Sample(MENTION_ID, at - 20, "big", 90_000, "acme recall, kids hurt", -0.9,
               f"https://x.com/big/status/{MENTION_ID}"),
    ]
    return anomaly(at, terms=("recall",), samples=samples)


@dataclass
class World:
    """Loopback PagerDuty, SMTP and X stand-ins, and the engine delivering to them."""

    tmp: Path
    pd: HttpStub
    smtp: SmtpStub
    x: HttpStub
    clock: SimClock
    engine: Engine
    manager: IncidentManager
    entries: list[TimelineEntry] = field(default_factory=list)

    def open(self) -> Incident:
        events = self.manager.observe(recall())
        for event in events:
            self.engine.handle(event)
        return events[0].incident

    def kinds(self) -> list[str]:
        return [e.kind for e in self.entries]

    def pd_events(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.pd.requests]

    def mails(self) -> list[Any]:
        return [r.message for r in self.smtp.handler.received]


@pytest.fixture
async def world(tmp_path, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_PD_SECRET", PD_KEY)
    monkeypatch.setenv("CRISISD_TARGET_X_SECRET", X_TOKEN)
    pd = await HttpStub(Reply(202, {"status": "success", "message": "Event processed"})).start()
    x = await HttpStub(Reply(201, {"data": {"id": "1800000000000000001", "text": "ok"}})).start()
    smtp = SmtpStub("none").start()
    write_setup(tmp_path, pd.url, smtp.port, x.url, 0.3)
    clock = SimClock(T0)
    entries: list[TimelineEntry] = []
    engine = build_engine(tmp_path, clock, lambda incident, entry: entries.append(entry))
    manager = IncidentManager(PlaybookRouter(engine.playbooks), lambda a: None)
    yield World(tmp_path, pd, smtp, x, clock, engine, manager, entries)
    await engine.stop(drain=1.0)
    engine.store.close()
    await pd.stop()
    await x.stop()
    smtp.stop()


async def test_pager_lifecycle_reply_and_resolve_mail(world):
    incident = world.open()
    await world.engine.outbox.deliver_due()
    [trigger] = world.pd_events()
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == PD_KEY
    assert trigger["dedup_key"] == f"crisisd/{incident.id}"
    assert trigger["payload"]["severity"] == "error"  # crisisd high → PagerDuty error
    # The holding statement answers the loudest mention of the first anomaly.
    [post] = [r.json() for r in world.x.requests]
    assert post["reply"] == {"in_reply_to_tweet_id": MENTION_ID}
    assert all(a.data.get("severity") == "high" for a in world.engine.store.actions())

    world.engine.acknowledge(incident.id, "alice")
    await world.engine.outbox.deliver_due()
    world.engine.resolve(incident.id, "alice")
    await world.engine.outbox.deliver_due()
    events = world.pd_events()
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {f"crisisd/{incident.id}"}
    assert "payload" not in events[1] and "payload" not in events[2]  # the documented form

    resolved = [m for m in world.mails() if "Resolved" in m["Subject"]]
    [mail] = resolved
    html = mail.get_body(("html",)).get_content()
    assert "cid:" in html  # the report's chart, inline
    [chart] = [p for p in mail.walk() if p.get_content_type() == "image/svg+xml"]
    assert b"<svg" in chart.get_payload(decode=True)
    assert "report" in mail.get_body(("plain",)).get_content().lower()


async def test_acknowledge_never_overtakes_a_retried_trigger(world):
    world.pd.fail(500, n=1)
    incident = world.open()
    await world.engine.outbox.deliver_due()
    assert len(world.pd.requests) == 1  # the trigger met a 500 and waits to retry
    world.engine.acknowledge(incident.id, "alice")
    await world.engine.outbox.deliver_due()
    assert len(world.pd.requests) == 1  # the acknowledge waits for the trigger
    await asyncio.sleep(0.06)
    await world.engine.outbox.deliver_due()
    assert [e["event_action"] for e in world.pd_events()] == ["trigger", "trigger", "acknowledge"]


async def test_permanent_post_failure_is_escalated_through_other_targets(world):
    world.x.fail(401, {"title": "Unauthorized"}, n=3)
    incident = world.open()
    await world.engine.outbox.deliver_due()
    await world.engine.outbox.deliver_due()
    assert len(world.x.requests) == 1  # never retried by itself
    [post] = world.engine.store.actions(incident.id, status="failed")
    assert "401" in post.last_error
    kinds = world.kinds()
    assert "delivery_failed" in kinds and "delivery_escalated" in kinds
    stored = [e.kind for e in world.engine.store.timeline(incident.id)]
    assert "delivery_failed" in stored and "delivery_escalated" in stored
    alerts = [e for e in world.pd_events() if "failed for good" in e["payload"]["summary"]]
    assert len(alerts) == 1 and alerts[0]["dedup_key"] == f"crisisd/{incident.id}"
    assert f"action {post.id}" in alerts[0]["payload"]["custom_details"]["message"]
    [mail] = [m for m in world.mails() if "DELIVERY FAILED" in m["Subject"]]
    assert "alice@example.com" in mail["To"]  # the incident commander this week
    assert X_TOKEN not in str(world.engine.store.timeline(incident.id))


async def test_unknown_post_tells_the_commander_and_a_human_decides(world):
    world.x.hang()
    incident = world.open()
    await world.engine.outbox.deliver_due()
    await world.engine.outbox.deliver_due()
    [post] = world.engine.store.actions(incident.id, status="unknown")
    assert len(world.x.requests) == 1
    assert "post_unknown" in world.kinds() and "delivery_escalated" in world.kinds()
    [alert] = [e for e in world.pd_events() if "outcome unknown" in e["payload"]["summary"]]
    assert "NOT re-posted" in alert["payload"]["summary"]
    assert [m for m in world.mails() if "DELIVERY UNKNOWN" in m["Subject"]]
    assert post.id is not None

    # The human checked: it was not published. Retry it, once.
    world.engine.retry_action(post.id, "alice")
    await world.engine.outbox.deliver_due()
    assert world.engine.store.action(post.id).status == "delivered"
    assert len(world.x.requests) == 2
    with pytest.raises(ActionError, match="delivered"):
        world.engine.retry_action(post.id, "alice")
    with pytest.raises(ActionError, match="delivered"):
        world.engine.cancel_action(post.id, "alice")
    with pytest.raises(UnknownActionError):
        world.engine.retry_action(99_999, "alice")
    with pytest.raises(KeyError):  # the control API answers 404 for this one
        world.engine.cancel_action(99_999, "alice")
    stored = world.engine.store.timeline(incident.id)
    [retried] = [e for e in stored if e.kind == "delivery_retried"]
    assert retried.data["by"] == "alice" and retried.data["action_id"] == post.id


async def test_cancel_a_failed_action_is_recorded(world):
    world.x.fail(403, "forbidden")
    incident = world.open()
    await world.engine.outbox.deliver_due()
    [post] = world.engine.store.actions(incident.id, status="failed")
    world.engine.cancel_action(post.id, "bob")
    assert world.engine.store.action(post.id).status == "cancelled"
    with pytest.raises(ValueError, match="cancelled"):
        world.engine.retry_action(post.id, "bob")
    assert [e.message for e in world.entries if e.kind == "delivery_cancelled"] == [
        f"post via x (action {post.id}) cancelled by bob"
    ]


async def test_stop_closes_the_targets_connection_pools(world):
    world.open()
    await world.engine.outbox.deliver_due()
    pager = world.engine.targets["pd"]
    assert pager._client is not None  # type: ignore[attr-defined]
    await world.engine.stop(drain=1.0)
    assert pager._client is None  # type: ignore[attr-defined]


# ------------------------------------------------------------ limits (outbox)


@pytest.fixture
async def hook():
    server = await HttpStub(Reply(200, "ok", delay=0.15)).start()
    yield server
    await server.stop()


def webhook_outbox(tmp_path: Path, url: str, **limits: Any) -> Outbox:
    target = make("hook", target_config(type="webhook", url=url + "/hook"), tmp_path)
    store = Store(tmp_path / "db.sqlite")
    return Outbox(store, {"hook": target}, base_delay=0.05, limits={"hook": Limits(**limits)})


def queue(outbox: Outbox, n: int) -> None:
    for i in range(n):
        outbox.store.enqueue(make_action("chat", target="hook", key=f"inc-1/chat/{i}@hook"))


async def drain(outbox: Outbox, timeout: float = 10.0) -> None:
    """Run the real worker until nothing is pending or sending."""
    await outbox.start()
    deadline = time.monotonic() + timeout
    while [a for a in outbox.store.actions() if a.status in ("pending", "sending")]:
        assert time.monotonic() < deadline, "outbox did not drain"
        await asyncio.sleep(0.02)
    await outbox.stop()


async def test_concurrency_limit_is_respected(tmp_path, hook):
    outbox = webhook_outbox(tmp_path, hook.url, concurrency=2)
    queue(outbox, 6)
    await drain(outbox)
    assert len(hook.answered) == 6 and hook.peak == 2
    assert {a.status for a in outbox.store.actions()} == {"delivered"}


async def test_rate_limit_spaces_requests(tmp_path, hook):
    hook.default = Reply(200, "ok")
    outbox = webhook_outbox(tmp_path, hook.url, concurrency=4, rate_per_minute=600)
    target = outbox.targets["hook"]
    starts: list[float] = []
    deliver = target.deliver

    async def timed(action: Any) -> Any:
        starts.append(time.monotonic())  # when the request leaves the outbox
        return await deliver(action)

    target.deliver = timed  # type: ignore[method-assign]
    queue(outbox, 4)
    await drain(outbox)
    assert len(hook.answered) == 4
    # 600 a minute: starts 0.1 s apart (unlimited, all four start within a millisecond).
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.095


async def test_retry_after_pauses_the_whole_target(tmp_path, hook):
    hook.default = Reply(200, "ok")
    hook.fail(429, "slow down", Retry_After="1")
    outbox = webhook_outbox(tmp_path, hook.url, concurrency=1)
    queue(outbox, 3)
    await drain(outbox)
    first, *rest = hook.requests
    assert len(rest) == 3  # the 429'd one again, and the two others, once each
    assert min(r.at for r in rest) - first.at >= 0.95  # nobody tried before the platform said
    assert sorted(r.json()["key"] for r, status in hook.answered if status == 200) == [
        f"inc-1/chat/{i}@hook" for i in range(3)
    ]
    delivered = sorted(a.key for a in outbox.store.actions(status="delivered"))
    assert delivered == [f"inc-1/chat/{i}@hook" for i in range(3)]


async def test_events_are_all_answered_through_the_engine_handle(world):
    """handle() of an OPENED event queues page, mail and post in one transaction."""
    events: list[IncidentEvent] = world.manager.observe(recall())
    assert len(events) == 1
    world.engine.handle(events[0])
    media = {a.medium for a in world.engine.store.actions()}
    assert media == {"email", "page", "post"}


async def test_reply_goes_only_to_the_mentions_own_platform(world, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_MASTO_SECRET", "masto-token-0123456789")
    # A Mastodon account that also answers crises on Twitter (opted in with channels).
    world.engine.config.targets["masto"] = target_config(
        type="mastodon", url=world.x.url, channels=["twitter", "mastodon"]
    )
    world.engine.targets["masto"] = make("masto", world.engine.config.targets["masto"],
                                         world.tmp)
    world.open()
    await world.engine.outbox.deliver_due()
    by_path = {r.path: r.json() for r in world.x.requests}
    assert by_path["/2/tweets"]["reply"] == {"in_reply_to_tweet_id": MENTION_ID}
    assert "in_reply_to_id" not in by_path["/api/v1/statuses"]  # a tweet id means nothing there


async def test_a_statement_is_posted_only_where_the_crisis_is(world, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_MASTO_SECRET", "masto-token-0123456789")
    world.engine.config.targets["masto"] = target_config(type="mastodon", url=world.x.url)
    world.engine.targets["masto"] = make("masto", world.engine.config.targets["masto"],
                                         world.tmp)
    world.open()
    await world.engine.outbox.deliver_due()
    paths = [r.path for r in world.x.requests]
    assert "/2/tweets" in paths and "/api/v1/statuses" not in paths


def test_backoff_is_capped_exponential_with_jitter(tmp_path):
    outbox = Outbox(Store(tmp_path / "db.sqlite"), {}, base_delay=1.0, max_delay=300.0)
    for attempts, (low, high) in {1: (0.5, 1.0), 3: (2.0, 4.0), 12: (150.0, 300.0)}.items():
        waits = {outbox.backoff(attempts) for _ in range(50)}
        assert all(low <= w <= high for w in waits) and len(waits) > 1  # jittered, bounded
