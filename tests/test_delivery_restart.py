"""SIGKILL while deliveries are pending: after a restart, nothing lost, no post twice.

The daemon's response side (engine, outbox, store, real targets) runs in a
child process (this file run as a script), delivering to loopback PagerDuty,
SMTP and X stand-ins served by the test. It is killed with SIGKILL while
the page hangs in flight, the mail waits to retry after a 451 and the
holding statement hangs in flight. A second process on the same state
directory must then deliver the page and the mail exactly once each, never
send the post again, and tell the incident commander that the post's fate
is unknown, by page and email.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from servers.http import HttpStub, Reply
from servers.smtp import SmtpStub

HERE = Path(__file__).resolve().parent


async def _child(tmp: Path, phase: str) -> None:
    """Phase ``crash``: open the incident and deliver until killed. ``restart``: drain, exit."""
    from playbook_fixtures import T0
    from test_delivery import build_engine, recall

    from daemon.clock import SimClock
    from daemon.incidents import IncidentManager
    from daemon.playbook import PlaybookRouter

    engine = build_engine(tmp, SimClock(T0 + (0 if phase == "crash" else 60)))
    engine.outbox.base_delay = 0.2  # a deferred mail is retried a few times before the kill
    if phase == "crash":
        manager = IncidentManager(PlaybookRouter(engine.playbooks), lambda a: None)
        for event in manager.observe(recall()):
            engine.handle(event)
        await engine.start()
        print("delivering", flush=True)
        await asyncio.Event().wait()  # until SIGKILL
    engine.outbox.base_delay = 0.05
    await engine.start()
    while engine.store.actions(status="pending") or engine.store.actions(status="sending"):
        await asyncio.sleep(0.02)
    await engine.stop()
    engine.store.close()


async def _spawn(tmp: Path, phase: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "CRISISD_TARGET_PD_SECRET": "pd-routing-key-0123456789",
           "CRISISD_TARGET_X_SECRET": "x-token-abcdefghijklmnop", "NO_PROXY": "127.0.0.1"}
    log = (tmp / f"{phase}.log").open("wb")  # a file: a full pipe would stall the child
    return await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), str(tmp), phase,
        cwd=str(HERE), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
    )


def _log(tmp: Path, phase: str) -> str:
    path = tmp / f"{phase}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


async def _until(predicate, proc: asyncio.subprocess.Process, tmp: Path,
                 timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if proc.returncode is not None:
            pytest.fail(f"child exited {proc.returncode}: {_log(tmp, 'crash')}")
        if loop.time() > deadline:
            proc.kill()
            pytest.fail(f"the child did not get there in time: {_log(tmp, 'crash')}")
        await asyncio.sleep(0.02)


async def test_sigkill_with_pending_deliveries_then_restart(tmp_path):
    from test_delivery import write_setup

    pd = await HttpStub(Reply(202, {"status": "success"})).start()
    x = await HttpStub(Reply(201, {"data": {"id": "1800000000000000001"}})).start()
    smtp = SmtpStub("none").start()
    try:
        pd.hang()  # the first page is in flight when the kill comes
        x.hang()  # so is the holding statement
        # Every mail is deferred until the kill (however slow this machine is).
        smtp.handler.script.extend(["451 4.3.0 try again later"] * 50)
        write_setup(tmp_path, pd.url, smtp.port, x.url, 30.0)

        first = await _spawn(tmp_path, "crash")
        await _until(lambda: len(pd.requests) == 1 and len(x.requests) == 1
                     and any(r.answer.startswith("451") for r in smtp.handler.received),
                     first, tmp_path)
        first.kill()  # SIGKILL: no drain, no cleanup
        await first.wait()
        assert not pd.answered and not smtp.handler.accepted
        deferred = {r.message["Message-ID"] for r in smtp.handler.received}
        smtp.handler.script.clear()

        second = await _spawn(tmp_path, "restart")
        await asyncio.wait_for(second.wait(), 30)
        assert second.returncode == 0, _log(tmp_path, "restart")
    finally:
        await pd.stop()
        await x.stop()
        smtp.stop()

    # The page: answered exactly once per action; the post: never sent again.
    accepted = Counter(r.json()["payload"]["custom_details"]["action_key"]
                       for r, status in pd.answered if status == 202)
    assert set(accepted.values()) == {1}
    assert any(key.endswith("/page@pd") for key in accepted)
    assert len(x.requests) == 1
    # Every mail accepted once; the deferred one after the restart, same Message-ID.
    accepted_ids = Counter(r.message["Message-ID"] for r in smtp.handler.accepted)
    assert set(accepted_ids.values()) == {1} and deferred <= set(accepted_ids)
    # The commander is told the post's outcome is unknown, by page and by email.
    unknown_pages = [r.json() for r, _ in pd.answered
                     if "outcome unknown" in r.json()["payload"]["summary"]]
    assert len(unknown_pages) == 1
    assert [r for r in smtp.handler.accepted if "DELIVERY UNKNOWN" in r.message["Subject"]]
    assert x.requests[0].json()["reply"]["in_reply_to_tweet_id"] == "1790000000000000001"

    from daemon.store import Store

    store = Store.in_dir(tmp_path / "state")
    statuses = Counter((a.medium, a.status) for a in store.actions())
    assert statuses[("post", "unknown")] == 1
    assert not [a for a in store.actions() if a.status in ("pending", "sending", "failed")]
    [incident] = store.incidents()
    kinds = [e.kind for e in incident.timeline]
    assert "post_unknown" in kinds and "delivery_escalated" in kinds
    store.close()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    asyncio.run(_child(Path(sys.argv[1]), sys.argv[2]))
