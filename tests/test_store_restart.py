"""Durability: restarts mid-incident, the outbox's delivery guarantees, the store."""

from __future__ import annotations

from playbook_fixtures import T0, Harness, RecordingTarget, anomaly

from daemon.actions import Action, PermanentError, RetryableError
from daemon.domain import IncidentStatus, Sample
from daemon.outbox import Outbox
from daemon.store import Store, incident_doc, incident_from_doc

INCIDENT = "acme-20261123-1200"


async def test_restart_between_approval_request_and_deadline(tmp_path):
    first = Harness.build(tmp_path)
    first.feed(anomaly(T0, terms=("recall",)))
    await first.engine.start()
    await first.flush()
    first.clock.advance(T0 + 300)
    await first.engine.stop()
    sent_before = [a.key for a in first.target.delivered]
    assert any("approval" in k for k in sent_before)
    first.close()  # the daemon is killed here: 5 minutes into a 15-minute deadline

    second = Harness.build(tmp_path, start=T0 + 300)
    await second.engine.start()
    incident = second.engine.incidents[INCIDENT]
    assert incident.status == IncidentStatus.OPEN and incident.roles
    assert second.manager.open[INCIDENT] is incident  # the manager resumes it too
    second.advance(T0 + 899)
    await second.flush()
    assert not [e for e in second.entries if e[1] == "escalation"]
    second.advance(T0 + 900)
    await second.flush()
    escalations = [e for e in second.entries if e[1] == "escalation"]
    assert [e[2] for e in escalations] == [T0 + 900, T0 + 900]  # page and email, on time
    sent_after = [a.key for a in second.target.delivered]
    assert not set(sent_before) & set(sent_after)  # nothing sent twice
    assert len([k for k in sent_after if "escalation" in k]) == 2
    await second.engine.stop()
    second.close()

    # A third start after the deadline does not escalate again.
    third = Harness.build(tmp_path, start=T0 + 1000)
    await third.engine.start()
    third.advance(T0 + 1100)
    await third.flush()
    assert not [a for a in third.target.delivered if "deadline" in a.key]
    await third.engine.stop()
    timeline = [e.kind for e in third.store.timeline(INCIDENT)]
    assert timeline.count("escalation") == 2
    third.close()


async def test_actions_queued_before_a_crash_are_delivered_after_restart(tmp_path):
    first = Harness.build(tmp_path)
    first.feed(anomaly(T0, terms=("recall",)))
    first.close()  # crashed before the worker delivered anything
    queued = len(Store.in_dir(tmp_path / "state").actions(status="pending"))
    assert queued >= 5

    second = Harness.build(tmp_path, start=T0 + 60)
    await second.engine.start()
    await second.engine.stop()  # stop drains
    assert len(second.target.delivered) == queued
    assert second.store.actions(status="pending") == []
    second.close()


def _action(key: str, medium: str = "email") -> Action:
    return Action(key, "i1", medium, "rec", [{"id": "a"}], "s", "b", T0)  # type: ignore[arg-type]


async def test_interrupted_post_is_flagged_not_reposted_and_email_is_retried(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    post, mail = _action("post-1", "post"), _action("mail-1")
    store.enqueue(post)
    store.enqueue(mail)
    store.mark(post.id, "sending", attempts=1)  # a crash mid-request
    store.mark(mail.id, "sending", attempts=1)
    target = RecordingTarget()
    results = []
    outbox = Outbox(store, {"rec": target}, on_result=lambda a, o, d: results.append((a.key, o)))
    flagged = outbox.recover()
    assert [a.key for a in flagged] == ["post-1"]
    await outbox.deliver_due()
    assert [a.key for a in target.delivered] == ["mail-1"]
    assert store.actions(status="unknown")[0].key == "post-1"
    assert ("post-1", "unknown") in results
    store.close()


async def test_retryable_errors_back_off_and_permanent_errors_fail(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    now = [1000.0]
    target = RecordingTarget()
    target.fail = [RetryableError("503"), RetryableError("503")]
    outbox = Outbox(store, {"rec": target}, wall=lambda: now[0], base_delay=10)
    store.enqueue(_action("mail-1"))
    await outbox.deliver_due()
    (pending,) = store.actions(status="pending")
    assert pending.attempts == 1 and pending.last_error == "503"
    await outbox.deliver_due()  # not due yet: nothing happens
    assert store.actions(status="pending")[0].attempts == 1
    now[0] += 10
    await outbox.deliver_due()
    now[0] += 20
    await outbox.deliver_due()
    assert [a.key for a in target.delivered] == ["mail-1"]
    assert store.actions(status="delivered")[0].attempts == 3

    target.fail = [PermanentError("no such user")]
    store.enqueue(_action("mail-2"))
    await outbox.deliver_due()
    (failed,) = store.actions(status="failed")
    assert failed.key == "mail-2" and failed.last_error == "no such user"
    store.close()


async def test_post_with_unexpected_error_is_not_retried(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    target = RecordingTarget()
    target.fail = [TimeoutError("read timed out")]
    outbox = Outbox(store, {"rec": target})
    store.enqueue(_action("post-1", "post"))
    await outbox.deliver_due()
    assert store.actions(status="unknown")[0].key == "post-1"
    await outbox.deliver_due()
    assert target.delivered == []
    store.close()


async def test_idempotency_key_is_queued_once(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    assert store.enqueue(_action("k"))
    assert not store.enqueue(_action("k"))
    assert len(store.actions()) == 1
    store.close()


async def test_failed_delivery_is_in_the_timeline(tmp_path):
    target = RecordingTarget()
    target.fail = [PermanentError("bad address")] * 20
    h = Harness.build(tmp_path, target=target)
    h.feed(anomaly(T0, terms=("recall",)))
    await h.flush()
    assert any(k == "delivery_failed" and "bad address" in m for _, k, _, m in h.entries)
    h.close()


def test_incident_round_trips_through_the_store(tmp_path):
    h = Harness.build(tmp_path)
    sample = Sample("m1", T0, "someone", 10, "text", -0.5, "https://x.example/1")
    h.feed(anomaly(T0, terms=("recall",), samples=[sample]))
    incident = h.engine.incidents[INCIDENT]
    again = incident_from_doc(incident_doc(incident), incident.timeline)
    assert again == incident
    stored = h.store.incident(INCIDENT)
    assert stored is not None and stored.anomalies == incident.anomalies
    assert [e.kind for e in stored.timeline] == [e.kind for e in incident.timeline]
    h.close()


def test_store_uses_wal(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    try:
        with store.transaction():
            store.enqueue(_action("k"))
            raise RuntimeError("crash mid-change")
    except RuntimeError:
        pass
    assert store.actions() == []
    store.close()


async def test_live_clock_escalates_and_delivers_in_real_time(tmp_path):
    import asyncio
    import time

    from playbook_fixtures import RECALL, make_config, make_playbooks

    from daemon.clock import RealClock
    from daemon.engine import Engine
    from daemon.incidents import IncidentManager
    from daemon.playbook import PlaybookRouter

    fast = RECALL.replace("deadline: 15m", "deadline: 200ms")
    cfg = make_config(tmp_path)
    playbooks = make_playbooks(tmp_path, cfg, fast)
    store = Store.in_dir(cfg.state_dir)
    target = RecordingTarget()
    engine = Engine(cfg, playbooks, RealClock(), store, targets={"rec": target})
    manager = IncidentManager(PlaybookRouter(playbooks))
    await engine.start()
    now = time.time()
    for event in manager.observe(anomaly(now, terms=("recall",))):
        engine.handle(event)
    for _ in range(100):  # the worker delivers without being asked; the deadline passes
        await asyncio.sleep(0.02)
        if any("not approved" in a.body for a in target.delivered):
            break
    escalation = [a for a in target.delivered if "not approved" in a.body]
    assert escalation and escalation[0].created_at >= now + 0.2
    assert any(a.medium == "chat" for a in target.delivered)
    await engine.stop()
    store.close()


async def test_resolved_keys_for_cooldowns_after_restart(tmp_path):
    h = Harness.build(tmp_path)
    h.feed(anomaly(T0, terms=("recall",)))
    h.engine.resolve(INCIDENT, by="alice")
    assert h.store.resolved_keys(T0 - 1) == {"acme:product-recall": T0}
    assert h.store.resolved_keys(T0 + 1) == {}
    h.close()
