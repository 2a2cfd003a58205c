"""Crashes and broker outages during a crisis: ``crisisd run`` as a subprocess.

The demo week (with its product-safety crisis on day six) is published to
the fixture mosquitto, then a sentinel mention a day later pushes the
watermark past the end so every bucket closes and every incident resolves on
event time. Pages go to a real loopback HTTP server through the PagerDuty
target (so a page sent twice would be seen twice), everything else to a
``file`` target. The daemon's own control API (``/metrics``, ``/healthz``)
says how far it got and when its outbox is empty.

* kill -9 at random points (as the crisis breaks, with pages in flight, and
  at random before it or while it resolves) and restart: the same incidents
  and the same delivered actions as an uninterrupted run run side by side,
  no action twice, no incident opened twice;
* the broker restarted three times during the crisis, each time with
  messages still queued: the crisis incident opens once and every page is
  sent exactly once.

What the kills do *not* test: a kill while the daemon holds a backlog of
received messages not yet taken into the pipeline. The MQTT source
acknowledges on receipt and the journal (``daemon.journal``) records a batch
as it enters the windows, so messages queued in between would be lost; each
kill here waits until the input so far is processed (and so journaled), not
for a snapshot: what came after the last snapshot is replayed from the journal.

Set ``CRISISD_ROBUST_SEED`` to replay a failing run's kill points.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import yaml
from conftest import Mosquitto, free_port
from servers.http import HttpStub, Reply
from test_live import Daemon, batches

from daemon import demo
from daemon.config import TargetConfig

REPO = Path(__file__).resolve().parent.parent
PAGE_ACCEPTED = Reply(202, {"status": "success", "message": "Event processed"}, delay=0.2)
"""PagerDuty answers slowly enough that a kill can land in the middle of the pages."""
KEY = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY42"


def write_config(tmp: Path, broker: Mosquitto, pager_url: str) -> tuple[Path, int]:
    """The shipped config and playbooks, pointed at the fixture broker and loopback targets."""
    doc = yaml.safe_load((REPO / "config.yaml").read_text())
    port = free_port()
    doc.update(
        mqtt={"host": broker.host, "port": broker.port, "client_id": "crisisd-robust",
              "idle_tick": "1h", "reconnect_min": "100ms", "reconnect_max": "500ms"},
        windows={"lateness": "15m", "max_ahead": None},  # the week is mostly in the future
        # snapshots every 2 s, forked while the week streams in: a kill lands before, during
        # or after one, and the journal must carry exactly what the last one does not hold
        detection={"snapshot_interval": "2s"},
        state_dir=str(tmp / "state"),
        playbooks={"dir": str(REPO / "playbooks")},
        targets={"pd": {"type": "pagerduty", "url": pager_url, "timeout": "2s"},
                 "files": {"type": "file", "path": str(tmp / "out"),
                           "media": ["email", "chat", "post", "webhook"]}},
        api={"listen": f"127.0.0.1:{port}"},
    )
    doc["log"] = {"level": "info", "format": "json"}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, port


def shift_now() -> float:
    """Seconds to add to the demo week so its crisis broke two minutes ago.

    Timers (approval deadline 10m, escalations 15m, updates 30m) run on the
    real clock from the incident's event time: with the crisis in March they
    would all be overdue and fire in a race with the stream; with it two
    minutes old none fires during the test, in every run alike.
    """
    return (time.time() - 120 - demo.CRISIS_AT) // 60 * 60


def week(tmp: Path, shift: float) -> tuple[list[tuple[str, bytes]], float]:
    """The demo week shifted by ``shift`` as MQTT messages, plus the sentinel; its time."""
    path = tmp / "week.jsonl"
    demo.write(path)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps({**r, "ts": r["ts"] + shift}) + "\n" for r in records))
    messages = list(batches(path))
    sentinel = demo.START + 8 * demo.DAY + shift
    body = json.dumps([{"id": "sentinel", "ts": sentinel, "text": "end of the test stream"}])
    messages.append(("crisisd/mentions/zz-sentinel/web", body.encode()))
    return messages, sentinel


def first_ts(body: bytes) -> float:
    return float(json.loads(body)[0]["ts"])


async def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="robust-publisher") as c:
        for topic, body in messages:
            await c.publish(topic, body, qos=1)


async def progress(port: int) -> tuple[float, int] | None:
    """(newest event time, outbox backlog) from the daemon's API; None if not answering."""
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                     timeout=2) as http:
            text = (await http.get("/metrics")).text
            backlog = (await http.get("/healthz")).json()["outbox_backlog"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    lag = [line for line in text.splitlines() if line.startswith("crisisd_event_lag_seconds ")]
    newest = time.time() - float(lag[0].split()[1]) if lag else float("-inf")
    return newest, backlog


async def wait_until(port: int, daemon: Daemon, reached: float, *, idle: bool,
                     timeout: float = 90.0) -> None:
    """Until the daemon has seen event time ``reached`` (and, with ``idle``, has no backlog)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise AssertionError("the daemon exited:\n" + "".join(daemon.raw[-30:]))
        got = await progress(port)
        if got is not None and got[0] >= reached - 1 and (not idle or got[1] == 0):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the daemon did not reach {reached} in {timeout}s: {got}\n"
                         + "".join(daemon.raw[-30:]))


async def wait_count(daemon: Daemon, name: str, count: int, timeout: float = 10.0) -> None:
    """Until the daemon has logged ``name`` at least ``count`` times."""
    deadline = time.monotonic() + timeout
    while len(daemon.events(name)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} {name!r}:\n" + "".join(daemon.raw[-20:]))
        await asyncio.sleep(0.05)


def page_id(event: dict[str, Any]) -> str:
    """One page: a trigger's action key, or the alert's resolve/acknowledge."""
    details = event.get("payload", {}).get("custom_details", {})
    return details.get("action_key") or f"{event['dedup_key']}/{event['event_action']}"


def outcome(tmp: Path, stub: HttpStub) -> dict[str, Any]:
    """What a run left behind: incidents, outbox rows, files written, pages received."""
    db = sqlite3.connect(tmp / "state" / "crisisd.sqlite")
    incidents = sorted(db.execute("SELECT id, status, playbook FROM incidents"))
    actions = sorted(db.execute("SELECT key, status FROM outbox"))
    db.close()
    files = sorted(p.name for p in (tmp / "out").glob("*.json"))
    pages = Counter(page_id(r.json()) for r in stub.requests if r.path.endswith("/v2/enqueue"))
    return {"incidents": incidents, "actions": actions, "files": files, "pages": pages}


async def run_crisis(
    tmp: Path,
    kills: list[tuple[float, bool]] = (),
    broker_restarts: list[float] = (),
    rng: random.Random | None = None,
    shift: float = 0.0,
) -> dict[str, Any]:
    """Publish the week; kill -9 the daemon or restart the broker at the given event times.

    ``kills`` are (event time, wait for the outbox to drain first). The stream
    is published in chunks ending at each kill point, and the kill waits until
    the daemon has taken the chunk in (journaled it): crisisd's MQTT source
    acknowledges messages on receipt (see the module docstring of
    ``daemon.sources.mqtt``), so a kill while it holds a backlog it has not
    yet journaled loses that backlog; these kills test what must survive a
    crash at any moment once the input is in (incidents, outbox, timers,
    detector state and windows via snapshot plus journal), including a kill
    in the middle of deliveries.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    rng = rng or random.Random(0)
    broker = Mosquitto(tmp / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    stub = await HttpStub(PAGE_ACCEPTED).start()
    config, port = write_config(tmp, broker, stub.url)
    messages, sentinel = week(tmp, shift)
    daemons = [Daemon(config, tmp)]
    try:
        await daemons[-1].wait_event("mqtt_subscribed")
        sent = 0
        for at, drain in sorted(kills):
            at += shift
            chunk = [m for m in messages[sent:] if first_ts(m[1]) < at]
            await publish(broker, chunk)
            sent += len(chunk)
            await wait_until(port, daemons[-1], first_ts(chunk[-1][1]), idle=drain)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            daemons[-1].kill()  # SIGKILL: no drain, no snapshot, no goodbye
            daemons.append(Daemon(config, tmp))
            await daemons[-1].wait_event("mqtt_subscribed")
        for at in sorted(broker_restarts):
            # Publish up to the restart point and stop the broker at once: some of it is
            # still queued in the broker or in flight, and must come through the restart.
            at += shift
            chunk = [m for m in messages[sent:] if first_ts(m[1]) < at]
            await publish(broker, chunk)
            sent += len(chunk)
            subscribed = len(daemons[-1].events("mqtt_subscribed"))
            broker.stop()
            await asyncio.sleep(0.2)
            broker.start()
            await wait_count(daemons[-1], "mqtt_subscribed", subscribed + 1)
        await publish(broker, messages[sent:])
        await wait_until(port, daemons[-1], sentinel, idle=True)
        assert daemons[-1].terminate() == 0
        result = outcome(tmp, stub)
        result["logs"] = [line for d in daemons for line in d.lines]
        return result
    finally:
        for d in daemons:
            d.kill()
        await stub.stop()
        broker.stop()


@pytest.fixture
def robust_env(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/usr/sbin/mosquitto") and not os.environ.get("CRISISD_MOSQUITTO"):
        import shutil

        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto not installed")
    monkeypatch.setenv("CRISISD_TARGET_PD_SECRET", KEY)
    monkeypatch.delenv("CRISISD_API_TOKEN", raising=False)


def crisis_opened(logs: list[dict[str, Any]]) -> list[str]:
    return [e["incident"] for e in logs if e.get("event") == "incident opened"
            and e.get("incident", "").startswith(demo.BRAND)]


async def test_kill_9_at_random_points_changes_nothing(robust_env: None, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRISISD_ROBUST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    phases = [
        (demo.START + rng.uniform(1.5, 4.5) * demo.DAY, True),  # a quiet weekday
        (demo.CRISIS_AT + rng.uniform(600, 2400), False),  # as it breaks: pages in flight
        (demo.CRISIS_AT + rng.uniform(2, 20) * 3600, rng.random() < 0.5),  # while it resolves
    ]
    # Two kills a run (a restart costs seconds of imports), in two of the three phases;
    # the crisis itself is always one of them.
    kills = [phases[1], rng.choice([phases[0], phases[2]])]
    shift = shift_now()
    # Side by side (own broker, state and targets each) to keep the test short.
    reference, crashed = await asyncio.gather(
        run_crisis(tmp_path / "reference", shift=shift),
        run_crisis(tmp_path / "crashed", kills=kills, rng=rng, shift=shift),
    )
    why = f"CRISISD_ROBUST_SEED={seed}"
    assert any(pb == "product-recall" for _, _, pb in reference["incidents"]), reference
    assert crashed["incidents"] == reference["incidents"], why
    assert crashed["actions"] == reference["actions"], why
    assert all(status == "delivered" for _, status in crashed["actions"]), why
    assert crashed["files"] == reference["files"], why
    assert set(crashed["pages"]) == set(reference["pages"]), why
    # Pages are at least once by design (a kill mid-request repeats it, with the same
    # dedup_key): a repeat is only possible for a request the kill interrupted, and at
    # most the target's concurrency limit of requests are in flight at once.
    repeats = sum(n - 1 for n in crashed["pages"].values())
    in_flight = TargetConfig(type="pagerduty").concurrency
    assert repeats <= len(kills) * in_flight, (why, crashed["pages"])
    assert max(reference["pages"].values()) == 1
    # One "incident opened" per incident across every incarnation of the daemon.
    opened = crisis_opened(crashed["logs"])
    assert len(opened) == len(set(opened)), (why, opened)
    # ... and the forked snapshots ran while the week streamed in, none failing
    saved = [e for e in crashed["logs"] if e.get("event") == "detector snapshot saved"
             and "seconds" in e]
    assert saved, why
    assert not [e for e in crashed["logs"] if "snapshot" in e.get("event", "")
                and e.get("level") in ("warning", "error")], why


async def test_broker_restarted_three_times_during_the_crisis(
    robust_env: None, tmp_path: Path
) -> None:
    restarts = [demo.CRISIS_AT - 600, demo.CRISIS_AT + 900, demo.CRISIS_AT + 3 * 3600]
    result = await run_crisis(tmp_path, broker_restarts=restarts, shift=shift_now())
    crisis = [i for i in result["incidents"] if i[2] == "product-recall"]
    assert len(crisis) == 1, result["incidents"]
    opened = crisis_opened(result["logs"])
    assert opened.count(crisis[0][0]) == 1, opened
    assert result["pages"], "no page was sent"
    assert max(result["pages"].values()) == 1, result["pages"]  # every page exactly once
    page_rows = [k for k, _ in result["actions"] if k.endswith("@pd")]
    assert sum(result["pages"].values()) == len(page_rows)  # one request per page action
    assert all(status == "delivered" for _, status in result["actions"]), result["actions"]
    reconnects = [e for e in result["logs"] if e.get("event") == "mqtt_subscribed"]
    assert len(reconnects) >= 4  # the first subscription and one per restart
