"""PagerDuty Events API v2 target against a real loopback HTTP server."""

from __future__ import annotations

import pytest
from servers import captured_logs, make_action, target_config
from servers.http import HttpStub, Reply

from daemon.actions import PermanentError, RetryableError
from daemon.targets.pagerduty import PagerDutyTarget

KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY42"
ACCEPTED = Reply(202, {"status": "success", "message": "Event processed", "dedup_key": "x"})


@pytest.fixture
async def pd(monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_PD_SECRET", KEY)
    stub = await HttpStub(ACCEPTED).start()
    target = PagerDutyTarget("pd", target_config(type="pagerduty", url=stub.url, timeout=1,
                                                 source="crisisd-test"))
    yield stub, target
    await target.aclose()
    await stub.stop()


async def test_trigger_payload_matches_events_v2(pd):
    stub, target = pd
    action = make_action(data={"severity": "critical", "brand": "northwind",
                               "figures": {"volume": 480, "expected": 40},
                               "report_url": "https://crisisd.example/r/inc-1"})
    receipt = await target.deliver(action)
    [req] = stub.requests
    assert (req.method, req.path) == ("POST", "/v2/enqueue")
    assert req.headers["content-type"] == "application/json"
    body = req.json()
    assert body["routing_key"] == KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "crisisd/inc-1"
    payload = body["payload"]
    assert payload["summary"] == action.subject
    assert payload["source"] == "crisisd-test"
    assert payload["severity"] == "critical"
    assert payload["timestamp"].startswith("2026-01-01T00:00:00")
    assert payload["custom_details"]["figures"] == {"volume": 480, "expected": 40}
    assert payload["custom_details"]["incident"] == "inc-1"
    assert body["links"] == [{"href": "https://crisisd.example/r/inc-1",
                              "text": "crisisd incident report"}]
    assert receipt.target == "pd" and receipt.ref == "x"
    assert KEY not in repr(receipt)


@pytest.mark.parametrize(("ours", "theirs"), [("critical", "critical"), ("high", "error"),
                                              ("low", "warning"), ("info", "info"),
                                              ("bogus", "error")])
async def test_severity_mapping(pd, ours, theirs):
    stub, target = pd
    await target.deliver(make_action(data={"severity": ours}))
    assert stub.requests[-1].json()["payload"]["severity"] == theirs


async def test_summary_is_capped_at_1024(pd):
    stub, target = pd
    await target.deliver(make_action(subject="", body="spike " * 600))
    summary = stub.requests[0].json()["payload"]["summary"]
    assert len(summary) == 1024 and summary.endswith("…")


async def test_acknowledge_and_resolve_reuse_the_incident_dedup_key(pd):
    stub, target = pd
    await target.deliver(make_action(key="a@pd"))
    await target.deliver(make_action(key="b@pd", data={"event_action": "acknowledge"}))
    await target.deliver(make_action(key="c@pd", data={"event_action": "resolve"}))
    bodies = [r.json() for r in stub.requests]
    assert [b["event_action"] for b in bodies] == ["trigger", "acknowledge", "resolve"]
    assert {b["dedup_key"] for b in bodies} == {"crisisd/inc-1"}
    assert "payload" not in bodies[1] and "payload" not in bodies[2]


async def test_5xx_and_429_are_retryable_with_retry_after(pd):
    stub, target = pd
    stub.fail(500).fail(429, Retry_After="7")
    with pytest.raises(RetryableError) as first:
        await target.deliver(make_action())
    assert first.value.retry_after is None
    with pytest.raises(RetryableError) as second:
        await target.deliver(make_action())
    assert second.value.retry_after == 7.0
    await target.deliver(make_action())
    assert [r.json()["dedup_key"] for r in stub.requests] == ["crisisd/inc-1"] * 3


async def test_400_is_permanent_and_reports_pagerduty_reason(pd):
    stub, target = pd
    stub.fail(400, {"status": "invalid event", "message": "Event object is invalid",
                    "errors": ["'payload.severity' is invalid"]})
    with pytest.raises(PermanentError) as err:
        await target.deliver(make_action())
    assert "payload.severity" in str(err.value) and "400" in str(err.value)
    assert KEY not in str(err.value)


async def test_401_is_permanent(pd):
    stub, target = pd
    stub.fail(401, "unauthorized")
    with pytest.raises(PermanentError, match="credentials"):
        await target.deliver(make_action())


async def test_missing_routing_key_is_permanent_and_names_where_to_put_it(monkeypatch):
    monkeypatch.delenv("CRISISD_TARGET_PD_SECRET", raising=False)
    target = PagerDutyTarget("pd", target_config(type="pagerduty", url="http://127.0.0.1:9"))
    with pytest.raises(PermanentError, match=r"CRISISD_TARGET_PD_SECRET"):
        await target.deliver(make_action())


async def test_routing_key_from_file_never_logged(pd, tmp_path, monkeypatch):
    stub, _ = pd
    monkeypatch.delenv("CRISISD_TARGET_PD_SECRET")
    secret = tmp_path / "pd.key"
    secret.write_text(KEY + "\n")
    target = PagerDutyTarget("pd", target_config(type="pagerduty", url=stub.url,
                                                 secret_file=str(secret), timeout=0.3))
    stub.fail(500).fail(400, {"message": f"bad key {KEY}"}).hang()
    errors = []
    with captured_logs() as lines:
        for _ in range(3):
            try:
                await target.deliver(make_action())
            except Exception as exc:
                errors.append(f"{exc!r} {exc.__cause__!r} {exc.__context__!r}")
        await target.deliver(make_action())
    await target.aclose()
    assert stub.requests[0].json()["routing_key"] == KEY
    assert len(errors) == 3
    assert all(KEY not in e for e in errors), errors
    assert "***" in errors[1]
    assert lines and not [line for line in lines if KEY in line]


async def test_test_action_is_info_marked_and_separate_from_real_alerts(pd):
    stub, target = pd
    await target.deliver(make_action(key="test-notify/pd/1", test=True, subject="hello"))
    body = stub.requests[0].json()
    assert body["payload"]["severity"] == "info"
    assert body["payload"]["summary"].startswith("[TEST]")
    assert body["dedup_key"] == "crisisd-test/test-notify/pd/1"
