"""``crisisd drill``: every shipped playbook rehearses end to end, sending nothing real."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from daemon import config as config_module
from daemon import drill
from daemon.cli import main
from daemon.domain import IncidentStatus

REPO = Path(__file__).resolve().parent.parent
NAMES = [
    "product-recall",
    "service-outage",
    "data-breach",
    "viral-complaint",
    "brand-scandal",
    "catch-all",
    "influencer-warning",
]


@pytest.fixture(scope="module")
def shipped():
    return config_module.load(REPO / "config.yaml")


@pytest.mark.parametrize("name", NAMES)
async def test_each_shipped_playbook_rehearses(name, shipped, tmp_path, monkeypatch):
    cfg = shipped
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    options = drill.DrillOptions(
        name,
        brand="northwind",
        channel="facebook",
        start=1795435200.0,
        approve_after=480.0,
        keep=tmp_path,
    )
    (incident,) = await drill.run(cfg, options)
    assert incident.playbook == name
    assert incident.status == IncidentStatus.RESOLVED
    kinds = [e.kind for e in incident.timeline]
    assert "role_assigned" in kinds and "statement_posted" in kinds
    posted = next(e for e in incident.timeline if e.kind == "statement_posted")
    assert posted.ts - incident.opened_at <= 900  # the first public answer within 15 minutes
    assert "northwind" in posted.data["text"]
    # delivered when it was posted, not when the replay next let the outbox run
    delivered = [e for e in incident.timeline if e.kind == "posted"]
    assert delivered and {e.ts for e in delivered} == {posted.ts}
    assert (tmp_path / "reports" / f"{incident.id}.html").is_file()
    # Only the test target (a file target in the example config) received anything.
    files = sorted((tmp_path / "outbox").glob("*.json"))
    assert files
    docs = [json.loads(f.read_text()) for f in files]
    assert all(d["test"] for d in docs)
    assert any(d["medium"] == "post" and d["data"]["channel"] == "facebook" for d in docs)
    assert "OPENED" in out.getvalue() and "statement_posted" in out.getvalue()


def test_drill_command_line(capsys, monkeypatch):
    # logs.setup binds structlog to the captured stream, closed after this test.
    monkeypatch.setattr("daemon.logs.setup", lambda *args, **kwargs: None)
    code = main(
        [
            "drill",
            "service-outage",
            "-c",
            str(REPO / "config.yaml"),
            "--playbooks",
            str(REPO / "playbooks"),
            "--brand",
            "acme",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "rehearsing service-outage for acme" in out
    assert "We know some of you are having trouble using acme" in out


def test_schema_command_line(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Playbook"
