"""Public posts (X, Facebook Page, Mastodon) against a real loopback HTTP server.

The rule under test: a post is made at most once. A request that left
crisisd and got no answer is an unknown outcome, never a retry.
"""

from __future__ import annotations

import pytest
from servers import captured_logs, make_action, target_config
from servers.http import HttpStub, Reply

from daemon.actions import PermanentError, RetryableError, UnknownOutcomeError
from daemon.targets.facebook import FacebookTarget
from daemon.targets.mastodon import MastodonTarget
from daemon.targets.x import XTarget, weighted_length

TOKEN = "tok-AAAAbbbbCCCCdddd-0123456789"
STATEMENT = "We're aware of reports about northwind products and are looking into them urgently."


@pytest.fixture
async def stub():
    server = await HttpStub().start()
    yield server
    await server.stop()


def post(**fields):
    data = {"channel": "twitter", "sid": "s1", "brand": "northwind", **fields.pop("data", {})}
    fields.setdefault("body", STATEMENT)
    return make_action("post", key="inc-1/statement/s1/v1/post@t", subject="", data=data,
                       **fields)


def x_target(stub, monkeypatch, timeout=0.5):
    monkeypatch.setenv("CRISISD_TARGET_X_SECRET", TOKEN)
    return XTarget("x", target_config(type="x", url=stub.url, timeout=timeout))


def mastodon_target(stub, monkeypatch, timeout=0.5):
    monkeypatch.setenv("CRISISD_TARGET_MASTO_SECRET", TOKEN)
    return MastodonTarget("masto", target_config(type="mastodon", url=stub.url, timeout=timeout))


def facebook_target(stub, monkeypatch, timeout=0.5):
    monkeypatch.setenv("CRISISD_TARGET_FB_SECRET", TOKEN)
    return FacebookTarget("fb", target_config(type="facebook", url=stub.url + "/v21.0",
                                              account="1234567890", timeout=timeout))


async def test_x_create_post_and_reply(stub, monkeypatch):
    stub.default = Reply(201, {"data": {"id": "1850000000000000001", "text": STATEMENT}})
    target = x_target(stub, monkeypatch)
    receipt = await target.deliver(post())
    reply = await target.deliver(post(data={"reply_to": "https://x.com/someone/status/42"}))
    first, second = stub.requests
    assert (first.method, first.path) == ("POST", "/2/tweets")
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.json() == {"text": STATEMENT}
    assert second.json() == {"text": STATEMENT, "reply": {"in_reply_to_tweet_id": "42"}}
    assert receipt.ref == "1850000000000000001"
    assert receipt.detail["url"].endswith("/1850000000000000001")
    assert reply.detail["in_reply_to"] == "42"


async def test_x_refuses_to_truncate_an_approved_statement(stub, monkeypatch):
    target = x_target(stub, monkeypatch)
    with pytest.raises(PermanentError, match="X allows 280"):
        await target.deliver(post(body="a" * 281))
    assert weighted_length("see https://example.org/a/very/long/path " + "é" * 10) == 4 + 23 + 11
    assert weighted_length("危機") == 4
    assert stub.requests == []


async def test_mastodon_status_reply_and_idempotency_key(stub, monkeypatch):
    stub.default = Reply(200, {"id": "111", "url": "https://m.example/@brand/111"})
    target = mastodon_target(stub, monkeypatch)
    action = post(data={"reply_to": "109999"})
    receipt = await target.deliver(action)
    [req] = stub.requests
    assert (req.method, req.path) == ("POST", "/api/v1/statuses")
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.json() == {"status": STATEMENT, "visibility": "public", "in_reply_to_id": "109999"}
    key = req.headers["idempotency-key"]
    await target.deliver(action)
    assert stub.requests[1].headers["idempotency-key"] == key  # stable per action
    assert receipt.ref == "111" and receipt.detail["url"] == "https://m.example/@brand/111"


async def test_facebook_page_feed_and_comment_reply(stub, monkeypatch):
    stub.default = Reply(200, {"id": "1234567890_555"})
    target = facebook_target(stub, monkeypatch)
    receipt = await target.deliver(post())
    await target.deliver(post(data={"reply_to": "1234567890_777"}))
    feed, comment = stub.requests
    assert (feed.method, feed.path) == ("POST", "/v21.0/1234567890/feed")
    assert feed.headers["content-type"] == "application/x-www-form-urlencoded"
    assert feed.form() == {"message": STATEMENT, "access_token": TOKEN}
    assert feed.query == {}  # the token is never in the URL
    assert comment.path == "/v21.0/1234567890_777/comments"
    assert receipt.ref == "1234567890_555"


@pytest.mark.parametrize("make", [x_target, mastodon_target, facebook_target])
async def test_hanging_post_is_unknown_and_never_sent_twice(stub, monkeypatch, make):
    target = make(stub, monkeypatch, timeout=0.3)
    stub.hang()
    with captured_logs() as lines, pytest.raises(UnknownOutcomeError) as err:
        await target.deliver(post())
    assert not isinstance(err.value, RetryableError)
    assert "may have been published" in str(err.value)
    assert len(stub.requests) == 1
    assert TOKEN not in str(err.value) and not [line for line in lines if TOKEN in line]


@pytest.mark.parametrize("make", [x_target, mastodon_target, facebook_target])
async def test_dropped_connection_and_502_after_sending_are_unknown(stub, monkeypatch, make):
    target = make(stub, monkeypatch)
    stub.then(Reply(kind="close")).fail(502)
    for _ in range(2):
        with pytest.raises(UnknownOutcomeError):
            await target.deliver(post())


@pytest.mark.parametrize("make", [x_target, mastodon_target, facebook_target])
async def test_401_is_permanent_and_token_redacted(stub, monkeypatch, make):
    target = make(stub, monkeypatch)
    stub.fail(401, {"error": {"message": f"Invalid OAuth access token {TOKEN}", "code": 190,
                              "type": "OAuthException"}})
    with pytest.raises(PermanentError) as err:
        await target.deliver(post())
    assert "401" in str(err.value) and TOKEN not in str(err.value)


async def test_rate_limits_are_retryable_with_the_wait(stub, monkeypatch):
    x = x_target(stub, monkeypatch)
    stub.fail(429, {"title": "Too Many Requests"}, Retry_After="12")
    with pytest.raises(RetryableError) as err:
        await x.deliver(post())
    assert err.value.retry_after == 12.0
    masto = mastodon_target(stub, monkeypatch)
    stub.fail(429, X_RateLimit_Reset="2000-01-01T00:00:00Z")
    with pytest.raises(RetryableError) as err:
        await masto.deliver(post())
    assert err.value.retry_after == 0.0
    fb = facebook_target(stub, monkeypatch)
    stub.fail(400, {"error": {"message": "Application request limit reached", "code": 4}})
    with pytest.raises(RetryableError) as err:
        await fb.deliver(post())
    assert err.value.retry_after == 60.0


async def test_connection_refused_is_retryable_even_for_posts(monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_X_SECRET", TOKEN)
    target = XTarget("x", target_config(type="x", url="http://127.0.0.1:9", timeout=0.5))
    with pytest.raises(RetryableError, match="not reached"):
        await target.deliver(post())


async def test_mastodon_422_too_long_is_permanent(stub, monkeypatch):
    stub.fail(422, {"error": "Validation failed: Text character limit of 500 exceeded"})
    with pytest.raises(PermanentError, match="character limit"):
        await mastodon_target(stub, monkeypatch).deliver(post())
