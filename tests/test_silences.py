"""Silences: stored, matched by glob and time, counted, visible across processes."""

from __future__ import annotations

from playbook_fixtures import T0, anomaly, write

from daemon.cli import main
from daemon.silences import Silences
from daemon.store import Store


def test_globs_and_time_span(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    silences = Silences(store)
    s = silences.add(T0, T0 + 3600, brand="north*", channel="twitter", signal="term:*")
    assert silences.matches(anomaly(T0 + 10, "term:recall", brand="northwind")).id == s.id
    assert silences.matches(anomaly(T0 + 10, "volume", brand="northwind")) is None
    assert silences.matches(anomaly(T0 + 10, "term:recall", brand="acme")) is None
    assert silences.matches(anomaly(T0 + 10, "term:x", brand="northwind", channel="fb")) is None
    assert silences.matches(anomaly(T0 + 3600, "term:x", brand="northwind")) is None  # ended
    assert silences.list()[0].suppressed == 1
    store.close()


def test_a_silence_added_by_another_process_applies_at_once(tmp_path):
    daemon_store = Store(tmp_path / "db.sqlite")
    running = Silences(daemon_store)
    assert running.matches(anomaly(T0)) is None
    cli_store = Store(tmp_path / "db.sqlite")
    Silences(cli_store).add(T0 - 60, T0 + 60, brand="acme", reason="launch")
    cli_store.close()
    hit = running.matches(anomaly(T0))
    assert hit is not None and hit.reason == "launch"
    daemon_store.close()


def test_silence_command_line(tmp_path, capsys):
    cfg = write(tmp_path, "config.yaml", f"state_dir: {tmp_path / 'state'}\n")
    assert (
        main(
            [
                "silence",
                "-c",
                str(cfg),
                "add",
                "--brand",
                "acme",
                "--for",
                "2h",
                "--reason",
                "launch",
            ]
        )
        == 0
    )
    silence_id = capsys.readouterr().out.split()[1].rstrip(":")
    assert main(["silence", "-c", str(cfg), "list"]) == 0
    assert "launch" in capsys.readouterr().out
    assert main(["silence", "-c", str(cfg), "remove", silence_id]) == 0
    assert main(["silence", "-c", str(cfg), "remove", silence_id]) == 1
    assert main(["silence", "-c", str(cfg), "add", "--for", "2 hours"]) == 2
