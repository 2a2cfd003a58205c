"""SIGHUP reload: a valid set replaces the old; an invalid one is rejected, located."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import free_port
from structlog.testing import capture_logs

from daemon import config, service
from daemon.clock import SimClock
from daemon.pipeline import Pipeline
from daemon.sdnotify import Notifier

ROOT = Path(__file__).resolve().parent.parent


def wait_log(proc: subprocess.Popen[str], event: str, lines: list[str], timeout: float = 15):
    """Read the daemon's JSON log lines until one has ``event``; that record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                return record
    raise AssertionError(f"no {event!r} log within {timeout}s:\n{''.join(lines[-20:])}")


def test_sighup_reloads_valid_playbooks_and_keeps_the_last_good_set(mosquitto, tmp_path):
    playbooks = tmp_path / "playbooks"
    shutil.copytree(ROOT / "playbooks", playbooks)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["mqtt"].update(port=mosquitto.port, client_id="reload-test")
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["playbooks"] = {"dir": str(playbooks)}
    cfg["api"] = {"listen": f"127.0.0.1:{free_port()}"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CRISISD_API_TOKEN": "test-token-not-secret"}
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(config)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)

    def crisisd_reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "reload", "-c", str(config)],
                              cwd=tmp_path, capture_output=True, text=True, env=env, timeout=30)

    lines: list[str] = []
    try:
        wait_log(proc, "ready", lines)
        proc.send_signal(signal.SIGHUP)
        shipped = len(list(playbooks.glob("*.yaml")))
        assert wait_log(proc, "reloaded", lines)["playbooks"] == shipped

        broken = playbooks / "catch-all.yaml"
        broken.write_text(broken.read_text().replace("after_quiet: ", "after_quiet: 15 minutes #"))
        proc.send_signal(signal.SIGHUP)
        rejected = wait_log(proc, "reload rejected; the last good configuration keeps running",
                            lines)
        assert any(p.startswith(f"{broken}:") and "duration" in p for p in rejected["problems"])
        assert proc.poll() is None

        answer = crisisd_reload()              # the same through the control API
        assert answer.returncode == 1 and f"{broken}:" in answer.stderr, answer
        broken.write_text(broken.read_text().replace("after_quiet: 15 minutes #", "after_quiet: "))
        answer = crisisd_reload()
        assert answer.returncode == 0 and "reloaded" in answer.stdout, answer

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_reload_keeps_the_running_windows_and_says_so(tmp_path):
    """Buckets already open were cut at the running length: a new length or lateness
    would apply to half the daemon (the watermark) and not the other (the windows)."""
    path = tmp_path / "config.yaml"
    path.write_text(f"playbooks: {{dir: {tmp_path / 'none'}}}\nwindows: {{lateness: 2m}}\n")
    pipeline = Pipeline(config.load(path), SimClock())
    path.write_text(f"playbooks: {{dir: {tmp_path / 'none'}}}\nwindows: {{lateness: 10m}}\n"
                    "incidents: {quiet: 3h}\n")
    with capture_logs() as logs:
        assert service.reload(path, pipeline, None, Notifier(environ={})) == []
    assert pipeline.cfg.windows.lateness == 120.0  # kept as it runs
    assert pipeline.cfg.incidents.quiet == 3 * 3600.0  # the rest applies
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["sections"] == ["windows"]
    pipeline.close()
