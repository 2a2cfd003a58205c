"""End to end through the real daemon: ``crisisd run`` as a subprocess against
the fixture broker, fed the demo week over MQTT.

The same stream through ``crisisd replay`` is the reference: live and replay
run the same pipeline, so every incident replay opens before the crisis must
be opened live too, with the same id, series and severity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import Mosquitto

from daemon import demo

CLI = [sys.executable, "-c", "import sys; from daemon.cli import main; sys.exit(main())"]
ROOT = Path(__file__).resolve().parents[1]
# The publisher groups each channel's mentions by ten minutes of event time, so
# channels interleave up to that much out of order: lateness covers it (and
# both runs use the same config, so replay sees the same windows).
CHUNK = 600.0


def write_config(tmp: Path, broker: Mosquitto) -> Path:
    path = tmp / "config.yaml"
    path.write_text(
        "mqtt:\n"
        f"  host: {broker.host}\n"
        f"  port: {broker.port}\n"
        "  client_id: crisisd-live-test\n"
        "  idle_tick: 1h\n"  # the demo week is in the past: no wall-clock ticks
        "  reconnect_min: 100ms\n"
        "  reconnect_max: 1s\n"
        "windows:\n"
        "  lateness: 15m\n"
        f"state_dir: {tmp / 'state'}\n"
        f"playbooks:\n  dir: {tmp / 'no-playbooks'}\n"
    )
    (tmp / "no-playbooks").mkdir(exist_ok=True)
    return path


class Daemon:
    """``crisisd run`` in a subprocess, its JSON-lines log collected live."""

    def __init__(self, config: Path, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*CLI, "run", "-c", str(config)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.lines) if e.get("event") == name]

    async def wait_event(self, name: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events(name):
                if all(e.get(k) == v for k, v in match.items()):
                    return e
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {name!r} {match} in the daemon log:\n{''.join(self.raw[-40:])}")

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def demo_week(tmp_path: Path) -> Path:
    path = tmp_path / "week.jsonl"
    demo.write(path)
    return path


def batches(path: Path) -> Iterator[tuple[str, bytes]]:
    """The stream as MQTT messages: one batch per channel per ten minutes."""
    with path.open() as fh:
        records = [json.loads(line) for line in fh if line.strip()]

    def chunk(r: dict[str, Any]) -> int:
        return int(r["ts"] // CHUNK)

    for _, minute in groupby(records, key=chunk):
        items = sorted(minute, key=lambda r: r["channel"])
        for (brand, channel), group in groupby(items, key=lambda r: (r["brand"], r["channel"])):
            body = [{k: v for k, v in r.items() if k not in ("brand", "channel")} for r in group]
            yield f"crisisd/mentions/{brand}/{channel}", json.dumps(body).encode()


def replay(config: Path, path: Path, cwd: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*CLI, "replay", "-c", str(config), "--json", str(path)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


async def test_mentions_over_mqtt_open_the_incidents_replay_opens(
    mosquitto: Mosquitto, tmp_path: Path, demo_week: Path
) -> None:
    config = write_config(tmp_path, mosquitto)
    expected = [e for e in replay(config, demo_week, tmp_path) if e["event"] == "incident_opened"]
    crises = [e for e in expected if e["at"] >= demo.CRISIS_AT - 300]
    assert crises, f"replay opened no incident at the demo crisis: {expected}"
    crisis = crises[0]
    assert crisis["severity"] in ("high", "critical"), crisis

    daemon = Daemon(config, tmp_path)
    try:
        await daemon.wait_event("mqtt_subscribed")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for topic, body in batches(demo_week):
                await client.publish(topic, body, qos=1)
        opened = await daemon.wait_event("incident opened", timeout=60, incident=crisis["incident"])
        assert opened["series"] == crisis["origin"]
        assert opened["severity"] == crisis["severity"]
        # Everything replay opened up to the crisis was opened live, the same way.
        live = [
            (e["incident"], e["series"], e["severity"]) for e in daemon.events("incident opened")
        ]
        upto = [(e["incident"], e["origin"], e["severity"]) for e in expected]
        upto = upto[: upto.index((crisis["incident"], crisis["origin"], crisis["severity"])) + 1]
        assert live[: len(upto)] == upto
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    stopped = daemon.events("stopped")
    assert stopped, "".join(daemon.raw[-20:])
    assert stopped[-1]["invalid"] == 0


async def test_sigterm_exits_0_even_while_the_broker_is_away(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    config = write_config(tmp_path, mosquitto)
    daemon = Daemon(config, tmp_path)
    try:
        await daemon.wait_event("mqtt_subscribed")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish("crisisd/mentions/acme/x", b"{broken", qos=1)
            await client.publish(
                "crisisd/mentions/acme/x", json.dumps(demo_mention()).encode(), qos=1
            )
            an_hour_fast = {**demo_mention(), "id": "two", "ts": time.time() + 3600}
            await client.publish("crisisd/mentions/acme/x", json.dumps(an_hour_fast).encode())
        await daemon.wait_event("payload_rejected", reason="bad_json")
        await daemon.wait_event("payload_rejected", reason="bad_timestamp")
        mosquitto.stop()
        await daemon.wait_event("mqtt_disconnected")
        started = time.monotonic()
        assert daemon.terminate() == 0
        assert time.monotonic() - started < 10
    finally:
        daemon.kill()
    (stopped,) = daemon.events("stopped")
    assert stopped["invalid"] == 2  # the broken payload, and the mention from the future
    assert stopped["mentions"] == 1


def demo_mention() -> dict[str, Any]:
    return {"id": "one", "ts": time.time(), "text": "hello from the test", "followers": 3}
