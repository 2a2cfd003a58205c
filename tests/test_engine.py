"""The playbook engine on a simulated clock: every step kind, approvals, timers, lifecycle."""

from __future__ import annotations

from pathlib import Path

import pytest
from playbook_fixtures import CATCH_ALL, RECALL, T0, Harness, RecordingTarget, anomaly

from daemon.domain import IncidentChange, Sample, Severity
from daemon.engine import ApprovalError
from daemon.templating import sha256

INCIDENT = "acme-20261123-1200"


@pytest.fixture
async def h(tmp_path):
    harness = Harness.build(tmp_path)
    yield harness
    harness.close()


def entries(h, kind):
    return [e for e in h.entries if e[1] == kind]


async def test_opening_runs_every_immediate_step_in_order(h):
    events = h.feed(anomaly(T0, terms=("recall",)))
    assert [e.change for e in events] == [IncidentChange.OPENED]
    await h.flush()
    kinds = h.kinds()
    assert kinds[:9] == [
        "playbook",
        "role_assigned",
        "role_assigned",
        "page",
        "email",
        "chat",
        "statement_drafted",
        "approval_requested",
        "webhook",
    ]
    assert all(ts == T0 for _, _, ts, _ in h.entries)
    delivered = {a.medium for a in h.target.delivered}
    assert delivered == {"page", "email", "chat", "webhook"}  # no post: awaiting approval
    page = h.target.media("page")[0]
    assert "acme" in page.body and "You are incident_commander" in page.body
    brief = next(a for a in h.target.media("email") if "Incident brief" in a.subject)
    assert "incident_commander: Alice" in brief.body
    assert "Why it alerted:\n  - volume: 200 (expected 20, normal 0–40)" in brief.body
    assert {r["id"] for r in brief.to} == {"grace", "alice", "carla", "team:pr"}
    hook = h.target.media("webhook")[0]
    assert hook.data["url"] == "http://127.0.0.1:9/pause" and hook.body == '{"brand": "acme"}'
    # Everything is in the audit log on disk, manager's entries included.
    stored = [e.kind for e in h.store.timeline(INCIDENT)]
    assert stored[0] == "opened" and "approval_requested" in stored


async def test_roles_are_told_and_recorded(h):
    h.feed(anomaly(T0, terms=("recall",)))
    await h.flush()
    incident = h.engine.incidents[INCIDENT]
    # Monday 2026-11-23 12:00 UTC is after the 09:00 Paris hand-off: 47th week → alice.
    assert incident.roles == {"incident_commander": "person:alice", "legal_reviewer": "team:legal"}
    told = [a for a in h.target.media("email") if a.data.get("role")]
    assert {a.data["role"] for a in told} == {"incident_commander", "legal_reviewer"}
    assert h.store.incident(INCIDENT).roles == incident.roles


async def test_role_holder_follows_the_incident_time_across_a_handoff(tmp_path):
    # 07:59 UTC Monday = 08:59 Paris: the previous week's holder (carla).
    early = Harness.build(tmp_path / "a", start=T0 - 4 * 3600 - 60)
    early.feed(anomaly(T0 - 4 * 3600 - 60, terms=("recall",)))
    late = Harness.build(tmp_path / "b", start=T0 - 4 * 3600)
    late.feed(anomaly(T0 - 4 * 3600, terms=("recall",)))
    (a,) = early.engine.incidents.values()
    (b,) = late.engine.incidents.values()
    assert a.roles["incident_commander"] == "person:carla"
    assert b.roles["incident_commander"] == "person:alice"
    # The holder stays recorded for the whole incident, even after the next hand-off.
    late.advance(T0 + 7 * 86400)
    assert any("Alice" in m for _, k, _, m in late.entries if k == "role_assigned")
    early.close()
    late.close()


async def test_approving_the_exact_text_posts_once_on_the_origin_channel(h):
    h.feed(anomaly(T0, terms=("recall",), channel="facebook"))
    (st,) = h.engine.statements(INCIDENT)
    assert st.status == "pending" and st.channel == "facebook"
    assert st.text == "We're looking into reports about acme products."
    h.advance(T0 + 300)
    h.engine.approve(INCIDENT, st.sid, st.sha256[:12], by="grace")
    await h.flush()
    posts = h.target.media("post")
    assert len(posts) == 1
    assert posts[0].body == st.text and posts[0].data["channel"] == "facebook"
    assert next(e for e in h.entries if e[1] == "statement_posted")[2] == T0 + 300
    # The deadline passes quietly: no escalation about the statement.
    h.advance(T0 + 1000)
    await h.flush()
    assert not [e for e in h.entries if e[1] == "escalation" and "statement" in e[3]]
    with pytest.raises(ApprovalError):
        h.engine.approve(INCIDENT, st.sid, st.sha256, by="grace")  # already posted
    assert len(h.target.media("post")) == 1
    assert any(e[1] == "posted" for e in h.entries)  # the delivery is in the timeline


async def test_editing_voids_the_approval_of_the_old_text(h):
    h.feed(anomaly(T0, terms=("recall",)))
    (st,) = h.engine.statements(INCIDENT)
    new_text = "We are investigating reports about acme kettles. Please stop using them."
    new_sha = h.engine.edit_statement(INCIDENT, st.sid, new_text, by="alice")
    assert new_sha == sha256(new_text)
    with pytest.raises(ApprovalError, match="text changed"):
        h.engine.approve(INCIDENT, st.sid, st.sha256, by="grace")  # approves the old words
    h.engine.approve(INCIDENT, st.sid, new_sha, by="grace")
    await h.flush()
    assert [p.body for p in h.target.media("post")] == [new_text]
    requests = [a for a in h.target.media("email") if "APPROVE" in a.subject]
    assert len(requests) == 2 and new_text in requests[1].body  # re-requested with new text


async def test_only_the_approver_may_approve(h):
    h.feed(anomaly(T0, terms=("recall",)))
    (st,) = h.engine.statements(INCIDENT)
    assert h.engine.approvers(INCIDENT, st.sid) == ["grace"]
    with pytest.raises(ApprovalError, match="may not approve"):
        h.engine.approve(INCIDENT, st.sid, st.sha256, by="alice")
    h.engine.approve(INCIDENT, st.sid, st.sha256, by="erin", force=True)
    approval = entries(h, "approval_granted")[0]
    assert approval[3] == "statement holding approved by erin"
    assert h.engine.statements(INCIDENT)[0].status == "posted"


async def test_approve_refuses_a_too_short_digest(h):
    h.feed(anomaly(T0, terms=("recall",)))
    (st,) = h.engine.statements(INCIDENT)
    with pytest.raises(ApprovalError):
        h.engine.approve(INCIDENT, st.sid, st.sha256[:4], by="grace")


async def test_unapproved_statement_escalates_at_its_deadline(h):
    h.feed(anomaly(T0, terms=("recall",)))
    h.advance(T0 + 899)
    assert not entries(h, "escalation")
    h.advance(T0 + 900)
    await h.flush()
    esc = entries(h, "escalation")
    assert len(esc) == 2 and all(e[2] == T0 + 900 for e in esc)  # page + email
    page = [a for a in h.target.media("page") if "not approved" in a.body]
    assert len(page) == 1
    assert {r["id"] for r in page[0].to} == {"grace", "alice"}  # approver + commander
    assert not h.target.media("post")  # never posted without approval


async def test_auto_approval_posts_at_once(tmp_path):
    h = Harness.build(tmp_path)
    h.feed(anomaly(T0))  # no recall terms: the catch-all
    await h.flush()
    (post,) = h.target.media("post")
    assert post.body == "We're seeing a lot of conversation about acme."
    assert entries(h, "approval_granted")[0][3] == "statement s1 is pre-approved"
    h.close()


async def test_escalation_unless_acknowledged(h):
    h.feed(anomaly(T0, terms=("recall",)))
    h.advance(T0 + 1200)
    await h.flush()
    exec_pages = [a for a in h.target.media("page") if a.to[0]["id"] == "erin"]
    assert len(exec_pages) == 1 and "not acknowledged after 20m" in exec_pages[0].body


async def test_acknowledgement_cancels_the_escalation(h):
    h.feed(anomaly(T0, terms=("recall",)))
    h.advance(T0 + 600)
    h.engine.acknowledge(INCIDENT, by="alice")
    h.advance(T0 + 1300)
    await h.flush()
    assert not [a for a in h.target.media("page") if a.to and a.to[0]["id"] == "erin"]
    assert entries(h, "escalation_cancelled")
    # The pager alert people were woken by is acknowledged too (one alert per incident).
    (ack,) = [a for a in h.target.media("page") if a.data.get("event_action")]
    assert ack.data["event_action"] == "acknowledge" and ack.created_at == T0 + 600


async def test_updates_every_interval_with_figures_until_resolved(h):
    h.feed(anomaly(T0, terms=("recall",)))
    h.feed(anomaly(T0 + 3000, "negative_share", terms=("recall",), volume=350))
    h.advance(T0 + 2 * 3600 + 10)
    await h.flush()
    updates = [a for a in h.target.media("email") if "Status update" in a.subject]
    assert [a.created_at for a in updates] == [T0 + 3600, T0 + 7200]
    assert "350 mentions" in updates[0].body
    h.engine.resolve(INCIDENT, by="alice")
    h.advance(T0 + 6 * 3600)
    await h.flush()
    assert len([a for a in h.target.media("email") if "Status update" in a.subject]) == 2


async def test_auto_resolve_notifies_with_report_and_cooldown(h):
    h.feed(
        anomaly(
            T0,
            terms=("recall",),
            samples=[
                Sample("m1", T0, "bigaccount", 50000, "My kettle <burned> me {{ 7*7 }}", -0.9)
            ],
        )
    )
    h.feed(anomaly(T0 + 600, "negative_share", terms=("recall",), volume=300))
    h.advance(T0 + 600 + 2 * 3600)  # quiet period of the recall playbook
    await h.flush()
    assert h.engine.incidents[INCIDENT].status == "resolved"
    (report,) = entries(h, "report_written")
    html_path = report[3].split(": ", 1)[1]
    html = Path(html_path).read_text(encoding="utf-8")
    assert "<svg" in html and "polyline" in html and "statement_drafted" not in html[:200]
    assert "&lt;burned&gt;" in html and "<burned>" not in html  # public text escaped
    md = Path(html_path.replace(".html", ".md")).read_text(encoding="utf-8")
    assert "Time to first public answer | none posted" in md
    (notice,) = [a for a in h.target.media("email") if "Resolved" in a.subject]
    assert html_path in notice.body
    assert notice.data["report_url"].startswith("file://")
    assert Path(notice.data["chart"]).read_text().startswith("<svg")
    assert notice.data["severity"] == "high" and notice.data["brand"] == "acme"
    resolved_page = [a for a in h.target.media("page") if a.data.get("event_action")]
    assert [a.data["event_action"] for a in resolved_page] == ["resolve"]
    assert {r["id"] for r in notice.to} == {"alice", "carla", "team:pr", "grace"}
    # Within the cooldown the same crisis does not re-open; after it, it does.
    h.feed(anomaly(T0 + 600 + 2 * 3600 + 600, terms=("recall",)))
    assert len(h.engine.incidents) == 1
    h.feed(anomaly(T0 + 600 + 2 * 3600 + 1900, terms=("recall",)))
    assert len(h.engine.incidents) == 2


async def test_resolve_voids_pending_statement_and_stops_timers(h):
    h.feed(anomaly(T0, terms=("recall",)))
    h.engine.resolve(INCIDENT, by="alice")
    assert h.engine.statements(INCIDENT)[0].status == "voided"
    h.advance(T0 + 86400)
    await h.flush()
    assert not entries(h, "escalation") and not entries(h, "update")


async def test_public_text_is_data_not_template(h):
    evil = Sample("m1", T0, "troll", 10, "{{ brand.__class__ }} <@channel> & {% raw %}", -1)
    h.feed(anomaly(T0, terms=("recall",), samples=[evil]))
    await h.flush()
    brief = next(a for a in h.target.media("email") if "Incident brief" in a.subject)
    assert "{{ brand.__class__ }} <@channel> & {% raw %}" in brief.body  # shown, not run


async def test_chat_escapes_mrkdwn(tmp_path):
    chat = RECALL.replace(
        "text: \"Recall talk about {{ brand }}: {{ top_terms | join(', ') }}\"",
        'text: "Top: {{ samples[0].text }}"',
    )
    h = Harness.build(tmp_path, chat, CATCH_ALL)
    evil = Sample("m1", T0, "troll", 10, "<!channel> pwn & more", -1)
    h.feed(anomaly(T0, terms=("recall",), samples=[evil]))
    await h.flush()
    (msg,) = h.target.media("chat")
    assert msg.body == "Top: &lt;!channel&gt; pwn &amp; more"
    h.close()


async def test_positive_launch_spike_opens_nothing(h):
    assert h.feed(anomaly(T0, tone="positive", terms=("recall",))) == []
    assert h.feed(anomaly(T0 + 60, "sentiment", direction=1)) == []
    assert h.engine.incidents == {}


async def test_low_severity_without_terms_matches_no_playbook(h):
    assert h.feed(anomaly(T0, severity=Severity.LOW)) == []
    assert h.manager.counts["not_routed"] == 1


async def test_silence_suppresses_and_counts(h):
    silence = h.silences.add(T0 - 60, T0 + 3600, brand="acme", signal="volume", reason="launch")
    assert h.feed(anomaly(T0, terms=("recall",))) == []
    assert h.feed(anomaly(T0 + 60, terms=("recall",), brand="other")) != []
    assert h.silences.list()[0].suppressed == 1
    assert h.manager.counts["suppressed"] == 1
    assert h.silences.matches(anomaly(T0 + 3600, terms=("recall",))) is None  # ended
    assert h.feed(anomaly(T0 + 120, "negative_share", terms=("recall",))) != []  # other signal
    assert h.silences.remove(silence.id)


async def test_playbook_switch_to_the_more_specific_playbook(tmp_path):
    h = Harness.build(tmp_path)
    h.feed(anomaly(T0))  # unexplained spike → catch-all
    incident = h.engine.incidents["acme-20261123-1200"]
    assert incident.playbook == "catch-all"
    events = h.feed(anomaly(T0 + 600, "term:recall", terms=("recall",)))
    assert IncidentChange.PLAYBOOK_SWITCHED in [e.change for e in events]
    assert incident.playbook == "product-recall"
    await h.flush()
    kinds = h.kinds()
    switch_at = kinds.index("playbook", 1)
    assert kinds[switch_at : switch_at + 3] == ["playbook", "role_assigned", "role_assigned"]
    # The recall playbook's roles take over: its commander comes from pr-primary.
    assert incident.roles == {
        "incident_commander": "person:alice",
        "legal_reviewer": "team:legal",
    }
    # The catch-all's auto-approved statement was already posted; the recall one waits.
    assert [s.status for s in h.engine.statements(incident.id)] == ["posted", "pending"]
    assert any(e.kind == "playbook_switched" for e in h.store.timeline(incident.id))
    h.close()


async def test_playbook_switches_only_once(tmp_path):
    breach = (
        "name: data-breach\ntitle: Breach\npriority: 60\nmatch: {terms_any: [breach]}\n"
        "steps:\n  - chat: {to: [team:pr], text: breach}\n"
    )
    h = Harness.build(tmp_path, RECALL, CATCH_ALL, breach)
    h.feed(anomaly(T0))
    h.feed(anomaly(T0 + 600, "term:recall", terms=("recall",)))
    incident = h.engine.incidents[INCIDENT]
    assert incident.playbook == "product-recall"
    events = h.feed(anomaly(T0 + 900, "term:breach", terms=("breach",)))
    assert [e.change for e in events] == [IncidentChange.UPDATED]  # enriched, not switched
    assert incident.playbook == "product-recall"
    assert len(h.engine.incidents) == 1
    h.close()


async def test_a_warning_gives_way_without_using_up_the_switch(tmp_path):
    warning = (
        "name: influencer-warning\ntitle: Big account\npriority: -10\n"
        "match: {signals: [reach], min_severity: low, tones: [negative]}\n"
        "steps:\n  - chat: {to: [team:pr], text: heads-up}\n"
    )
    h = Harness.build(tmp_path, RECALL, CATCH_ALL, warning)
    h.feed(anomaly(T0, "reach", severity=Severity.LOW))  # a big account, no echo yet
    incident = h.engine.incidents[INCIDENT]
    assert incident.playbook == "influencer-warning"
    h.feed(anomaly(T0 + 300))  # the echo: an unexplained spike
    assert incident.playbook == "catch-all"
    h.feed(anomaly(T0 + 600, "term:recall", terms=("recall",)))  # then what it is about
    assert incident.playbook == "product-recall"
    switches = [e for e in h.store.timeline(incident.id) if e.kind == "playbook_switched"]
    assert [e.data["severity"] for e in switches] == ["low", "high"]
    h.close()


async def test_drill_sends_only_to_test_targets(tmp_path):
    test_target = RecordingTarget("drill")
    h = Harness.build(
        tmp_path,
        drill=True,
        extra_config="  drill: {type: file, path: drill, test: true}\n",
    )
    h.engine.targets["drill"] = test_target
    h.engine.outbox.targets["drill"] = test_target
    h.feed(anomaly(T0, terms=("recall",)))
    await h.flush()
    assert h.target.delivered == []  # the real target got nothing
    assert test_target.delivered and all(a.test for a in test_target.delivered)
    assert all(e.data.get("drill") for e in h.engine.incidents[INCIDENT].timeline[1:])
    h.close()


async def test_webhook_on_resolve(tmp_path):
    text = RECALL + ("  - webhook: {url: 'http://127.0.0.1:9/resume', when: resolve}\n").join(
        ["", ""]
    )
    text = RECALL.replace(
        "resolve:\n",
        "  - webhook: {url: 'http://127.0.0.1:9/resume', when: resolve}\nresolve:\n",
    )
    h = Harness.build(tmp_path, text, CATCH_ALL)
    h.feed(anomaly(T0, terms=("recall",)))
    await h.flush()
    assert [a.data["url"] for a in h.target.media("webhook")] == ["http://127.0.0.1:9/pause"]
    h.engine.resolve(INCIDENT, by="x")
    await h.flush()
    assert [a.data["url"] for a in h.target.media("webhook")][-1] == "http://127.0.0.1:9/resume"
    h.close()


async def test_report_chart_has_the_lead_up_and_names(h):
    from daemon.domain import Bucket, SeriesKey

    series = SeriesKey("acme", "twitter")
    for minute in range(-30, 0):
        h.engine.observe_bucket(Bucket(series, T0 + minute * 60 - 60, T0 + minute * 60, volume=20))
    h.feed(anomaly(T0, terms=("recall",)))
    for minute in range(1, 10):
        h.engine.observe_bucket(
            Bucket(series, T0 + minute * 60 - 60, T0 + minute * 60, volume=300, negative=200)
        )
    points = h.store.points(INCIDENT)
    assert points[0][0] == T0 - 30 * 60 and points[-1] == (T0 + 540, 300.0, 200 / 300)
    h.advance(T0 + 600)
    h.engine.resolve(INCIDENT, by="alice")
    md = (h.engine.report_dir() / f"{INCIDENT}.md").read_text()
    assert "- **incident_commander**: Alice" in md
    html = (h.engine.report_dir() / f"{INCIDENT}.html").read_text()
    assert html.count("<rect") >= 40  # background + 39 buckets


async def test_category_of_a_term_signal_matches_like_a_term(tmp_path):
    text = RECALL.replace(
        "  terms_any: [recall, unsafe]", "  terms_any: [recall]\n  categories: [safety]"
    )
    h = Harness.build(tmp_path, text, CATCH_ALL)
    a = anomaly(T0, "term:salmonella", terms=("salmonella",))
    a.category = "safety"
    h.feed(a)
    assert h.engine.incidents[INCIDENT].playbook == "product-recall"
    other = anomaly(T0, "term:refund", terms=("refund",), brand="other")
    other.category = "complaint"
    h.feed(other)
    assert {i.playbook for i in h.engine.incidents.values()} == {"product-recall", "catch-all"}
    h.close()


async def test_a_statement_that_fails_to_render_is_never_auto_posted(tmp_path):
    text = CATCH_ALL.replace(
        "We're seeing a lot of conversation about {{ brand }}.",
        "{{ 100 // (figures.volume - 200) }}",  # fine on the sample, fails on this one
    )
    h = Harness.build(tmp_path, RECALL, text)
    h.feed(anomaly(T0))
    await h.flush()
    assert h.target.media("post") == []
    (st,) = h.engine.statements("acme-20261123-1200")
    assert st.status == "pending" and st.approver == "incident_commander"
    assert any("did not render" in m for _, k, _, m in h.entries if k == "warning")
    h.close()


def test_long_incident_chart_is_downsampled_and_keeps_the_peak():
    from daemon import report
    from daemon.domain import Incident, SeriesKey

    incident = Incident("i1", "k", "acme", SeriesKey("acme", "x"), T0, Severity.HIGH)
    points = [(T0 + 60 * i, 10.0, 0.1) for i in range(10_000)]
    points[5000] = (T0 + 60 * 5000, 999.0, 0.9)
    svg = report.chart(incident, points, T0 + 600_000)
    assert svg.count("<rect") <= report.MAX_BARS + 1
    assert ": 999 mentions" in svg


async def test_approvers_with_a_pager_are_paged_to_read_the_request(tmp_path):
    text = CATCH_ALL.replace("approval: auto", "approval: incident_commander")
    h = Harness.build(tmp_path, RECALL, text)
    h.feed(anomaly(T0))
    await h.flush()
    pages = [a for a in h.target.media("page") if "Approve the acme" in a.body]
    assert len(pages) == 1 and pages[0].to[0]["pager"]
    assert len([a for a in h.target.media("email") if "APPROVE" in a.subject]) == 1
    h.close()
