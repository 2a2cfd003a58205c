"""``crisisd incidents …`` and ``crisisd silence …`` against a live control API.

The API runs in the test's event loop (see ``test_api.rig``); the command
line is synchronous httpx, so it runs in a worker thread while the loop
serves it, as it would against the daemon.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from pathlib import Path

import pytest
from playbook_fixtures import T0
from test_api import TOKEN, Rig, rig  # noqa: F401  (the fixture)

from daemon.cli import main
from daemon.domain import Bucket, SeriesKey


@pytest.fixture
def env(rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    monkeypatch.setenv("CRISISD_API_URL", f"http://127.0.0.1:{rig.api.port}")
    monkeypatch.setenv("CRISISD_API_TOKEN", TOKEN)
    monkeypatch.setenv("CRISISD_USER", "alice")
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'cli-state'}\n")
    return cfg


async def crisisd(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_list_show_ack_resolve(rig: Rig, env: Path, capsys) -> None:  # noqa: F811
    assert await crisisd("incidents", "-c", str(env), "list") == 0
    out = capsys.readouterr().out
    assert rig.incident in out and "product-recall" in out
    assert await crisisd("incidents", "-c", str(env), "show", rig.incident) == 0
    out = capsys.readouterr().out
    assert "statement holding (pending" in out and "stop using it" in out and "timeline" in out
    assert await crisisd("incidents", "-c", str(env), "ack", rig.incident) == 0
    assert "acknowledged by alice" in capsys.readouterr().out
    assert await crisisd("incidents", "-c", str(env), "ack", rig.incident) == 1
    assert "already acknowledged" in capsys.readouterr().err
    assert await crisisd("incidents", "-c", str(env), "resolve", rig.incident,
                         "--reason", "all clear") == 0
    assert await crisisd("incidents", "-c", str(env), "list") == 0
    assert "no open incidents" in capsys.readouterr().out
    assert await crisisd("incidents", "-c", str(env), "show", "nope") == 1


async def test_approve_shows_the_exact_text_and_sends_its_hash(
    rig: Rig, env: Path, capsys, monkeypatch  # noqa: F811
) -> None:
    (st,) = rig.response.engine.statements(rig.incident)
    approver = rig.response.engine.approvers(rig.incident, st.sid)[0]
    # Not a terminal and no --yes: refuse rather than approve unseen.
    assert await crisisd("incidents", "-c", str(env), "approve", rig.incident,
                         "--by", approver) == 2
    out = capsys.readouterr()
    assert st.text.split()[0] in out.out and "--yes" in out.err
    # A person answering "n" approves nothing.
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(builtins, "input", lambda prompt: "n")
    assert await crisisd("incidents", "-c", str(env), "approve", rig.incident,
                         "--by", approver) == 1
    assert rig.response.engine.statements(rig.incident)[0].status == "pending"
    capsys.readouterr()
    monkeypatch.setattr(builtins, "input", lambda prompt: "y")
    assert await crisisd("incidents", "-c", str(env), "approve", rig.incident, "holding",
                         "--by", approver) == 0
    out = capsys.readouterr().out
    shown = "\n".join(line.strip() for line in out.splitlines())
    assert st.text in shown.replace("\n", " ") or all(w in out for w in st.text.split())
    assert f"sha256 {st.sha256}" in out
    after = rig.response.engine.statements(rig.incident)[0]
    assert after.status in ("approved", "posted") and after.approved_by == approver
    # Nothing pending any more: approve must be told which statement.
    assert await crisisd("incidents", "-c", str(env), "approve", rig.incident, "--yes") == 2


async def test_retry_cancel_report_what_the_daemon_says(
    rig: Rig, env: Path, capsys  # noqa: F811
) -> None:
    await rig.response.engine.outbox.deliver_due()
    await rig.response.engine.outbox.stop()  # no worker racing the states set below
    action = rig.response.store.actions(rig.incident)[0]
    assert await crisisd("incidents", "-c", str(env), "retry", str(action.id)) == 1
    assert "delivered" in capsys.readouterr().err  # the daemon's reason, passed on
    rig.response.store.mark(action.id, "failed", error="made to fail by the test")
    assert await crisisd("incidents", "-c", str(env), "retry", str(action.id)) == 0
    assert "now pending" in capsys.readouterr().out
    assert await crisisd("incidents", "-c", str(env), "cancel", str(action.id)) == 0
    assert "now cancelled" in capsys.readouterr().out
    assert await crisisd("incidents", "-c", str(env), "cancel", "999999") == 1


async def test_writes_without_the_token_are_refused(
    rig: Rig, env: Path, capsys, monkeypatch  # noqa: F811
) -> None:
    monkeypatch.setenv("CRISISD_API_TOKEN", "wrong")
    assert await crisisd("incidents", "-c", str(env), "ack", rig.incident) == 4
    assert "bearer token" in capsys.readouterr().err


async def test_silence_through_the_api_and_offline(
    rig: Rig, env: Path, capsys, monkeypatch  # noqa: F811
) -> None:
    assert await crisisd("silence", "-c", str(env), "add", "--brand", "northwind",
                         "--for", "2h", "--reason", "launch") == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("silence ")]
    sid = line.split()[1].rstrip(":")
    assert [s.id for s in rig.response.silences.list()] == [sid]  # the daemon's store
    assert await crisisd("silence", "-c", str(env), "list") == 0
    assert "launch" in capsys.readouterr().out
    assert await crisisd("silence", "-c", str(env), "expire", sid) == 0
    assert await crisisd("silence", "-c", str(env), "expire", sid) == 1
    assert rig.response.silences.list() == []
    # The daemon is not answering: the store of the config's state_dir is used.
    monkeypatch.setenv("CRISISD_API_URL", "http://127.0.0.1:9")
    capsys.readouterr()
    assert await crisisd("silence", "-c", str(env), "add", "--for", "1h") == 0
    captured = capsys.readouterr()
    assert "using the store directly" in captured.err and "silence " in captured.out
    assert (env.parent / "cli-state" / "crisisd.sqlite").exists()


async def test_series_show_what_is_watched_warm_and_normal(rig: Rig, env: Path,  # noqa: F811
                                                           capsys) -> None:
    stage, day = rig.pipeline.detect, 86400.0
    for k in range(int(1.1 * day / 60)):  # a day of acme; a first bucket of northwind
        t = T0 - 1.1 * day + 60 * k
        buckets = [Bucket(SeriesKey("acme", "twitter"), t, t + 60, volume=3 + k % 4,
                          negative=k % 2, sentiment_n=3, sentiment_sum=0.3)]
        if k == int(1.1 * day / 60) - 1:
            buckets.append(Bucket(SeriesKey("northwind", "x"), t, t + 60, volume=2))
        stage.process(buckets)
    assert await crisisd("series", "-c", str(env)) == 0
    out = capsys.readouterr().out.splitlines()
    acme = next(line for line in out if line.startswith("acme/twitter"))
    north = next(line for line in out if line.startswith("northwind/x"))
    assert " 1m " in acme and "warming up" not in acme and "volume" in acme
    assert "4.5 (" in acme  # the volume expected now, with its band
    assert "(still learning)" in north and "none warm; warming up: " in north
    assert await crisisd("series", "-c", str(env), "--brand", "north*", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["series"] == "northwind/x" and row["signals"]["volume"]["warm"] is False
    assert await crisisd("series", "-c", str(env), "--brand", "nobody") == 0
    assert "no series watched yet of nobody" in capsys.readouterr().out
