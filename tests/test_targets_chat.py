"""Slack, Teams and the signed generic webhook against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from servers import captured_logs, make_action, target_config
from servers.http import HttpStub, Reply

from daemon.actions import PermanentError, RetryableError, UnknownOutcomeError
from daemon.targets.slack import SlackTarget
from daemon.targets.teams import TeamsTarget
from daemon.targets.webhook import WebhookTarget, sign

HOOK_PATH = "/services/T0000/B0000/XXXXxxxxSECRETxxxxXXXX"
HMAC_SECRET = "whsec_0123456789abcdef"


@pytest.fixture
async def stub():
    server = await HttpStub().start()
    yield server
    await server.stop()


def chat(kind, stub, monkeypatch, **cfg):
    monkeypatch.setenv(f"CRISISD_TARGET_{kind.upper()}_SECRET", stub.url + HOOK_PATH)
    cls = {"slack": SlackTarget, "teams": TeamsTarget}[kind]
    return cls(kind, target_config(type=kind, timeout=0.5, **cfg))


async def test_slack_block_kit_payload_escapes_public_text(stub, monkeypatch):
    target = chat("slack", stub, monkeypatch)
    body = "Top mention: <!channel> & <https://evil.example|click here>"
    await target.deliver(make_action("chat", body=body,
                                     data={"severity": "high", "report_url": "https://r.ex/1"}))
    [req] = stub.requests
    assert (req.method, req.path) == ("POST", HOOK_PATH)
    doc = req.json()
    assert set(doc) == {"text", "blocks"}
    kinds = [b["type"] for b in doc["blocks"]]
    assert kinds == ["header", "section", "context", "actions"]
    header = doc["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= 150
    section = doc["blocks"][1]["text"]
    assert section["type"] == "mrkdwn"
    assert "<!channel>" not in section["text"] and "&lt;!channel&gt; &amp;" in section["text"]
    assert "<!channel>" not in doc["text"]
    assert doc["blocks"][3]["elements"][0]["url"] == "https://r.ex/1"


async def test_slack_long_text_is_split_into_sections(stub, monkeypatch):
    target = chat("slack", stub, monkeypatch)
    await target.deliver(make_action("chat", body="\n".join(["x" * 99] * 70)))
    sections = [b for b in stub.requests[0].json()["blocks"] if b["type"] == "section"]
    assert len(sections) == 3 and all(len(s["text"]["text"]) <= 3000 for s in sections)


async def test_slack_errors_and_secret_url_never_shown(stub, monkeypatch):
    target = chat("slack", stub, monkeypatch)
    stub.fail(429, "rate_limited", Retry_After="3").fail(403, "invalid_token").fail(500)
    messages = []
    with captured_logs() as lines:
        with pytest.raises(RetryableError) as limited:
            await target.deliver(make_action("chat"))
        messages.append(str(limited.value))
        with pytest.raises(PermanentError, match="invalid_token") as denied:
            await target.deliver(make_action("chat"))
        messages.append(str(denied.value))
        with pytest.raises(RetryableError) as broken:  # chat is at-least-once
            await target.deliver(make_action("chat"))
        messages.append(str(broken.value))
    await target.aclose()
    assert limited.value.retry_after == 3.0
    assert not [m for m in messages + lines if "SECRET" in m], messages
    assert "slack webhook 127.0.0.1" in messages[0]


async def test_teams_adaptive_card_payload(stub, monkeypatch):
    stub.default = Reply(202, b"")
    target = chat("teams", stub, monkeypatch)
    receipt = await target.deliver(make_action("chat", body="Mention: **bold** [x](http://e)",
                                               data={"severity": "critical"}))
    doc = stub.requests[0].json()
    assert doc["type"] == "message"
    [att] = doc["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    rich = [b for b in card["body"] if b["type"] == "RichTextBlock"]
    assert rich[1]["inlines"][0]["text"] == "Mention: **bold** [x](http://e)"  # literal
    facts = {f["title"]: f["value"] for f in card["body"][-1]["facts"]}
    assert facts == {"Incident": "inc-1", "Severity": "critical"}
    assert receipt.detail["status"] == 202


async def test_webhook_envelope_signed_with_hmac(stub, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_HOOK_SECRET", HMAC_SECRET)
    target = WebhookTarget("hook", target_config(type="webhook", url=stub.url + "/in"))
    action = make_action("chat")
    with captured_logs() as lines:
        await target.deliver(action)
    [req] = stub.requests
    assert req.path == "/in" and req.headers["content-type"] == "application/json"
    doc = req.json()
    assert doc["key"] == action.key and doc["text"] == action.body and doc["incident"] == "inc-1"
    stamp = req.headers["x-crisisd-timestamp"]
    expected = hmac.new(HMAC_SECRET.encode(), stamp.encode() + b"." + req.body,
                        hashlib.sha256).hexdigest()
    assert req.headers["x-crisisd-signature"] == f"sha256={expected}"
    assert req.headers["idempotency-key"]
    assert not [line for line in lines if HMAC_SECRET in line]


async def test_webhook_step_body_sent_verbatim_with_its_method_and_url(stub):
    target = WebhookTarget("hook", target_config(type="webhook"))
    body = json.dumps({"pause": True, "brand": "northwind"})
    await target.deliver(make_action("webhook", body=body,
                                     data={"url": stub.url + "/pause", "method": "PUT"}))
    [req] = stub.requests
    assert (req.method, req.path, req.body) == ("PUT", "/pause", body.encode())
    assert "x-crisisd-signature" not in req.headers  # no secret configured


async def test_webhook_custom_signature_header_and_file_secret(stub, tmp_path, monkeypatch):
    path = tmp_path / "hmac"
    path.write_text(HMAC_SECRET)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    target = WebhookTarget("hook", target_config(
        type="webhook", url=stub.url, secret_file="hmac", signature_header="X-Hub-Signature-256"))
    await target.deliver(make_action("chat"))
    req = stub.requests[0]
    assert req.headers["x-hub-signature-256"] == sign(
        HMAC_SECRET, req.headers["x-crisisd-timestamp"], req.body)


async def test_webhook_as_public_post_is_at_most_once(stub):
    target = WebhookTarget("hook", target_config(type="webhook", url=stub.url, timeout=0.3))
    stub.hang()
    with pytest.raises(UnknownOutcomeError):
        await target.deliver(make_action("post"))
    stub.fail(502)
    with pytest.raises(UnknownOutcomeError):
        await target.deliver(make_action("post"))
    assert len(stub.requests) == 2


async def test_webhook_without_url_is_permanent():
    target = WebhookTarget("hook", target_config(type="webhook"))
    with pytest.raises(PermanentError, match="no URL"):
        await target.deliver(make_action("chat"))


@pytest.mark.parametrize("kind", ["slack", "teams"])
async def test_secret_that_is_not_a_url_is_permanent_and_not_echoed(kind, monkeypatch):
    monkeypatch.setenv(f"CRISISD_TARGET_{kind.upper()}_SECRET", "fake-token-NOT-A-URL-SECRET")
    cls = {"slack": SlackTarget, "teams": TeamsTarget}[kind]
    with pytest.raises(PermanentError, match="not a webhook URL") as err:
        await cls(kind, target_config(type=kind)).deliver(make_action("chat"))
    assert "SECRET" not in str(err.value)
