"""The write-ahead journal: what arrived after the last snapshot survives kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import mention, publish, wait_for

from daemon.domain import Mention, MetricPoint
from daemon.journal import Journal

ROOT = Path(__file__).resolve().parent.parent


def test_batches_round_trip_and_a_torn_tail_is_the_end(tmp_path):
    journal = Journal(tmp_path / "j.bin")
    m = Mention(id="1", ts=1.0, brand="b", channel="c", text="hi", sentiment=-0.5)
    p = MetricPoint(ts=2.0, brand="b", channel="", volume=3, interval=300.0)
    journal.append([m, p])
    journal.append([m])
    with (tmp_path / "j.bin").open("ab") as fh:
        fh.write(b"\x10\x00\x00\x00partial")             # the crash cut this one short
    assert list(journal.replay()) == [[m, p], [m]]
    journal.reset()
    assert list(journal.replay()) == []
    journal.close()


def _log_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_mentions_received_before_kill_9_are_replayed_at_restart(mosquitto, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"mqtt:\n  port: {mosquitto.port}\n  client_id: journal-test\n"
        f"state_dir: {tmp_path / 'state'}\nplaybooks:\n  dir: {tmp_path / 'none'}\n"
        "api:\n  enabled: false\n"
    )
    run = [sys.executable, "-m", "daemon", "run", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "first.log"
    with out.open("w") as fh:
        proc = subprocess.Popen(run, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        await wait_for(lambda: '"event": "ready"' in out.read_text(), timeout=20)
        batch = [mention(i) for i in range(40)]
        await publish(mosquitto, [("crisisd/mentions/acme/twitter", batch)])
        journal = tmp_path / "state" / "journal.bin"
        await wait_for(lambda: journal.exists() and journal.stat().st_size > 0, timeout=20)
        await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # The broker has them acknowledged: only the journal still knows them.
    second = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              cwd=tmp_path, text=True)
    try:
        deadline = time.monotonic() + 20
        lines = ""
        while '"event": "ready"' not in lines and time.monotonic() < deadline:
            lines += second.stdout.readline()
        second.send_signal(signal.SIGTERM)
        lines += second.communicate(timeout=20)[0]
    finally:
        if second.poll() is None:
            second.kill()
    events = _log_events(lines)
    replayed = [e for e in events if e["event"] == "replayed the journal after an unclean stop"]
    assert replayed and replayed[0]["mentions"] == 40
    assert journal.stat().st_size == 0                  # folded into the snapshot
