"""``crisisd test-notify TARGET`` against loopback servers, in-process and as a real command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque

import pytest
from servers.http import HttpStub, Reply
from servers.smtp import SmtpStub

from daemon import config as config_mod
from daemon.actions import PermanentError
from daemon.testnotify import Refused, send

TOKEN = "pd-routing-key-0123456789abcdef"


@pytest.fixture
async def stub():
    server = await HttpStub(Reply(202, {"status": "success", "message": "Event processed"}))\
        .start()
    yield server
    await server.stop()


def write_config(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


async def crisisd(*args, env=None):
    """Run the real ``crisisd`` command while this loop keeps serving the stubs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_pagerduty_test_is_triggered_then_resolved(stub, tmp_path):
    cfg = write_config(tmp_path, f"targets:\n  pd:\n    type: pagerduty\n    url: {stub.url}\n")
    code, out, err = await crisisd("test-notify", "pd", "-c", str(cfg),
                                   env={"CRISISD_TARGET_PD_SECRET": TOKEN})
    assert code == 0, err
    assert out.count("delivered, receipt") == 2
    trigger, resolve = (r.json() for r in stub.requests)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["dedup_key"].startswith("crisisd-test/")
    assert trigger["payload"]["severity"] == "info"
    assert "TEST" in trigger["payload"]["summary"]
    assert TOKEN not in out + err


async def test_cli_prints_the_exact_error_and_exits_1(stub, tmp_path):
    stub.fail(400, {"status": "invalid event", "message": "Event object is invalid",
                    "errors": ["'routing_key' is invalid"]})
    cfg = write_config(tmp_path, f"targets:\n  pd:\n    type: pagerduty\n    url: {stub.url}\n")
    code, out, err = await crisisd("test-notify", "pd", "-c", str(cfg),
                                   env={"CRISISD_TARGET_PD_SECRET": TOKEN})
    assert code == 1
    assert "FAILED (permanent, PermanentError)" in err
    assert "'routing_key' is invalid" in err and "400" in err
    assert TOKEN not in out + err


async def test_unknown_target_and_missing_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_PD_SECRET", "")
    config = config_mod.load(write_config(tmp_path, "targets:\n  pd:\n    type: pagerduty\n"))
    with pytest.raises(Refused, match=r"no target named 'nope'.*configured: pd"):
        await send(config, "nope")
    with pytest.raises(PermanentError, match="CRISISD_TARGET_PD_SECRET"):
        await send(config, "pd")  # fails before any request leaves


async def test_public_post_needs_public_flag(stub, tmp_path, monkeypatch):
    monkeypatch.setenv("CRISISD_TARGET_MASTO_SECRET", TOKEN)
    stub.default = Reply(200, {"id": "9", "url": "https://m.example/@b/9"})
    config = config_mod.load(write_config(
        tmp_path, f"targets:\n  masto:\n    type: mastodon\n    url: {stub.url}\n"))
    with pytest.raises(Refused, match="--public"):
        await send(config, "masto")
    assert stub.requests == []
    [receipt] = await send(config, "masto", public=True)
    assert receipt.ref == "9"
    assert "Test message from crisisd" in stub.requests[0].json()["status"]


async def test_email_test_message_goes_to_the_given_address(tmp_path):
    server = SmtpStub("none").start()
    try:
        config = config_mod.load(write_config(tmp_path, (
            "targets:\n  mail:\n    type: smtp\n    host: 127.0.0.1\n"
            f"    port: {server.port}\n    tls: none\n    sender: crisisd@example.org\n")))
        [receipt] = await send(config, "mail", to="oncall@example.org")
        [got] = server.handler.accepted
        assert got.rcpt_tos == ["oncall@example.org"]
        assert got.message["Subject"].startswith("[TEST]")
        assert receipt.ref == got.message["Message-ID"]
        server.handler.script = deque(["550 5.1.1 no such user"])
        with pytest.raises(Exception, match="550"):
            await send(config, "mail", to="ghost@example.org")
    finally:
        server.stop()
