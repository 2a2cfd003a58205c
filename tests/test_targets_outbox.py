"""The real integrations driven by the real outbox and store, against loopback servers.

These check the delivery guarantees end to end: a page or email retried
after 5xx/4xx reaches the platform exactly once under one dedup key or
Message-ID; a post whose request hung is marked ``unknown`` and never sent
again; 401 fails the action for good; ``Retry-After`` pushes the next try
back; no secret lands in the database (errors, receipts).
"""

from __future__ import annotations

from collections import deque

import pytest
from servers import captured_logs, make_action, target_config
from servers.http import HttpStub, Reply
from servers.smtp import SmtpStub

from daemon.outbox import Outbox
from daemon.store import Store
from daemon.targets import make

SECRET = "SeCrEt-0123456789-abcdefghij"


class Wall:
    """A wall clock the test moves, so backoff waits take no real time."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stub():
    server = await HttpStub().start()
    yield server
    await server.stop()


@pytest.fixture
def harness(tmp_path, monkeypatch):
    def build(name, secret=SECRET, **cfg):
        monkeypatch.setenv(f"CRISISD_TARGET_{name.upper()}_SECRET", secret)
        target = make(name, target_config(**cfg), tmp_path)
        store = Store(tmp_path / "state.db")
        results = []
        wall = Wall()
        outbox = Outbox(store, {name: target}, base_delay=1.0, max_attempts=5, wall=wall,
                        on_result=lambda a, outcome, detail: results.append((outcome, detail)))
        return target, store, outbox, wall, results

    return build


async def run(outbox, wall, rounds=6):
    """Deliver what is due, then jump the wall clock past the next retry, repeatedly."""
    for _ in range(rounds):
        await outbox.deliver_due()
        nxt = outbox.store.next_try()
        if nxt is None:
            return
        wall.now = max(wall.now, nxt) + 0.001


def dump(store):
    return "\n".join(store.db.iterdump())


async def test_page_after_500s_is_delivered_once_with_one_dedup_key(stub, harness):
    stub.default = Reply(202, {"status": "success", "dedup_key": "crisisd/inc-1"})
    stub.fail(500, n=2)
    target, store, outbox, wall, results = harness("pd", type="pagerduty", url=stub.url)
    store.enqueue(make_action("page", target="pd", key="inc-1/page@pd"))
    with captured_logs() as lines:
        await run(outbox, wall)
    [row] = store.actions()
    assert row.status == "delivered" and row.attempts == 3
    assert [r.json()["dedup_key"] for r in stub.requests] == ["crisisd/inc-1"] * 3
    assert results == [("delivered", "crisisd/inc-1")]
    assert SECRET not in dump(store)
    assert not [line for line in lines if SECRET in line]
    await target.aclose()


async def test_email_deferred_then_accepted_once(tmp_path, harness):
    server = SmtpStub("none").start()
    try:
        server.handler.script = deque(["451 4.3.0 later", "451 4.3.0 later"])
        _, store, outbox, wall, _ = harness(
            "mail", type="smtp", host="127.0.0.1", port=server.port, tls="none",
            sender="crisisd@example.org", username=None)
        store.enqueue(make_action("email", target="mail", key="inc-1/brief@mail"))
        await run(outbox, wall)
        assert store.actions()[0].status == "delivered"
        ids = {r.message["Message-ID"] for r in server.handler.received}
        assert len(server.handler.received) == 3 and len(ids) == 1
        assert len(server.handler.accepted) == 1
    finally:
        server.stop()


async def test_hanging_post_is_unknown_and_not_posted_twice(stub, harness):
    stub.hang()
    _, store, outbox, wall, results = harness("x", type="x", url=stub.url, timeout=0.3)
    store.enqueue(make_action("post", target="x", key="inc-1/statement/s1/v1/post@x",
                              subject="", body="We are looking into it."))
    await run(outbox, wall)
    wall.now += 3600
    await outbox.deliver_due()
    outbox.recover()  # a restart finds nothing to resume either
    await outbox.deliver_due()
    [row] = store.actions()
    assert row.status == "unknown" and row.attempts == 1
    assert len(stub.requests) == 1
    assert [o for o, _ in results] == ["unknown"]
    assert "may have been published" in results[0][1]
    assert SECRET not in dump(store)


async def test_401_fails_for_good(stub, harness):
    stub.fail(401, {"detail": "Unauthorized"}, n=5)
    _, store, outbox, wall, results = harness("masto", type="mastodon", url=stub.url)
    store.enqueue(make_action("post", target="masto", body="Statement."))
    await run(outbox, wall)
    [row] = store.actions()
    assert row.status == "failed" and "401" in row.last_error
    assert len(stub.requests) == 1
    assert results[0][0] == "failed"


async def test_retry_after_is_honoured(stub, harness):
    stub.fail(429, "slow down", Retry_After="120")
    target, store, outbox, wall, _ = harness(
        "slack", secret=stub.url + "/services/T/B/" + SECRET, type="slack")
    store.enqueue(make_action("chat", target="slack"))
    start = wall.now
    await outbox.deliver_due()
    assert store.next_try() >= start + 120
    wall.now = start + 119
    await outbox.deliver_due()
    assert len(stub.requests) == 1  # not before the platform said
    wall.now = start + 121
    await outbox.deliver_due()
    assert store.actions()[0].status == "delivered" and len(stub.requests) == 2
    assert SECRET not in dump(store)
    await target.aclose()
