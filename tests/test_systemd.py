"""systemd integration: the sd_notify protocol on a real socket, the unit file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "crisisd.service"


def receive(sock: socket.socket, timeout: float) -> list[str]:
    """Datagrams that arrive within ``timeout`` seconds."""
    out = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


def wait_datagram(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    """Datagrams up to and including the first that contains ``wanted``."""
    seen = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen.append(message)
        if wanted in message.split("\n"):
            return seen
    raise AssertionError(f"no {wanted} within {timeout}s; got {seen}")


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield path, sock
    sock.close()


def test_ready_after_subscription_watchdog_pings_and_stopping(mosquitto, notify_socket, tmp_path):
    path, sock = notify_socket
    mosquitto.stop()                        # READY must wait for the broker
    config = tmp_path / "config.yaml"
    config.write_text(
        f"mqtt:\n  port: {mosquitto.port}\n  client_id: sdnotify-test\n"
        f"  reconnect_min: 100ms\n  reconnect_max: 200ms\nstate_dir: {tmp_path / 'state'}\n"
        f"playbooks:\n  dir: {tmp_path / 'no-playbooks'}\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        early = receive(sock, 1.5)
        assert not any("READY=1" in m for m in early), early
        mosquitto.start()
        wait_datagram(sock, "READY=1", timeout=10)
        pings = [m for m in receive(sock, 1.2) if m == "WATCHDOG=1"]
        assert 4 <= len(pings) <= 8, pings           # every 0.2 s: half of WATCHDOG_USEC
        proc.send_signal(signal.SIGTERM)
        wait_datagram(sock, "STOPPING=1", timeout=10)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0].decode()
    assert '"event": "ready"' in output


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_verifies_and_is_hardened(tmp_path):
    unit = tmp_path / "crisisd.service"
    crisisd = Path(sys.executable).with_name("crisisd")
    unit.write_text(UNIT.read_text().replace("/opt/crisisd/.venv/bin/crisisd", str(crisisd)))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                              capture_output=True, text=True)
    line = next(x for x in security.stdout.splitlines() if "Overall exposure level" in x)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 1.5, line
