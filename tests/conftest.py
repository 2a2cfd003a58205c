"""Shared fixtures: a real mosquitto broker, and small generic helpers.

Tests talk to a real broker rather than a mock because what matters here
(persistent sessions, QoS 1 redelivery after a restart, reconnects) is broker
behaviour a mock would only imitate. Each test gets its own broker on a free
loopback port with persistence in its tmp_path, so tests never share state
and never touch anything outside 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

MOSQUITTO = (
    os.environ.get("CRISISD_MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
)
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"mosquitto did not listen on {HOST}:{port} within {timeout}s")


@dataclass
class Mosquitto:
    """A mosquitto process under test control; restarts keep port and data.

    The queue limits are generous by default so tests of other things never
    meet them; ``max_queued=1000, max_inflight=20`` are mosquitto's own
    defaults, what a deployment gets unless it says otherwise.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = HOST
    max_queued: int = 100_000
    max_inflight: int = 100
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_conf(self) -> None:
        """Persistence on, so queued QoS 1 messages survive a broker restart."""
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            # Run as root, mosquitto would switch to user "mosquitto", which
            # cannot write to tmp_path: stay whoever runs the tests.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            f"max_queued_messages {self.max_queued}\n"
            f"max_inflight_messages {self.max_inflight}\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )

    def start(self, timeout: float = 5.0) -> None:
        """Start (or restart) the broker on the same port and wait until it listens."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.write_conf()
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(self.port, timeout, self.proc)
        except RuntimeError as exc:
            log = self.log.read_text() if self.log.exists() else ""
            self.stop()
            raise RuntimeError(f"{exc}\n{log}") from None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (SIGTERM: the broker saves its persistence file)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh mosquitto on a free loopback port, stopped at teardown."""
    if not (os.path.isfile(MOSQUITTO) and os.access(MOSQUITTO, os.X_OK)):
        pytest.skip(
            f"mosquitto binary not found ({MOSQUITTO}); install it "
            "(apt-get install mosquitto) or set CRISISD_MOSQUITTO"
        )
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.workdir.mkdir()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def payload(obj: Any) -> bytes:
    """JSON bytes of ``obj`` (bytes and str pass through, for bad payloads)."""
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    return json.dumps(obj).encode()


async def publish(
    broker: Mosquitto,
    messages: Iterable[tuple[str, Any]],
    *,
    qos: int = 1,
    client_id: str | None = None,
) -> int:
    """Publish ``(topic, payload)`` pairs and wait until the broker has them.

    At QoS 1 each publish waits for the PUBACK, so once this returns the
    broker holds every message (queued for offline persistent sessions too).
    """
    count = 0
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id) as client:
        for topic, body in messages:
            await client.publish(topic, payload(body), qos=qos)
            count += 1
    return count


def mention(i: int, **fields: Any) -> dict[str, Any]:
    """A valid mention object ``m<i>``, one second after the previous one.

    ``fields`` override or add fields (also invalid ones, for rejection tests).
    """
    return {"id": f"m{i}", "ts": 1_700_000_000.0 + i, "text": f"mention number {i}", **fields}


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate()`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
