"""The response side wired as the pipeline uses it: router, silences, engine, one store."""

from __future__ import annotations

from pathlib import Path

import pytest
from playbook_fixtures import T0, anomaly

from daemon import config as config_module
from daemon.clock import SimClock
from daemon.incidents import IncidentManager
from daemon.response import Response
from daemon.store import Store
from daemon.yamlfile import FileProblems

REPO = Path(__file__).resolve().parent.parent


async def test_shipped_playbooks_with_an_empty_config_in_tolerant_mode(tmp_path):
    cfg = config_module.Config(state_dir=tmp_path)
    clock = SimClock(T0)
    seen = []
    response = Response.build(
        cfg,
        clock,
        lambda i, e: seen.append(e.kind),
        store=Store(":memory:"),
        tolerant=True,
        playbooks_dir=REPO / "playbooks",
    )
    assert response.warnings  # the example rotations are not in an empty config
    manager = IncidentManager(response.router, response.silences.matches)
    await response.start()
    for event in manager.observe(anomaly(T0, terms=("recall",))):
        response.engine.handle(event)
    (incident,) = manager.open.values()
    assert incident.playbook == "product-recall"
    assert "role_assigned" in seen and "statement_drafted" in seen
    await response.stop()


def test_strict_mode_refuses_unknown_rotations(tmp_path):
    cfg = config_module.Config(state_dir=tmp_path)
    with pytest.raises(FileProblems):
        Response.build(cfg, SimClock(T0), playbooks_dir=REPO / "playbooks")


async def test_restore_into_a_new_manager(tmp_path):
    cfg = config_module.load(REPO / "config.yaml").model_copy(
        update={"state_dir": tmp_path}
    )
    first = Response.build(cfg, SimClock(T0), playbooks_dir=REPO / "playbooks")
    manager = IncidentManager(first.router, first.silences.matches)
    for event in manager.observe(anomaly(T0, terms=("breach",))):
        first.engine.handle(event)
    await first.stop()
    second = Response.build(cfg, SimClock(T0 + 60), playbooks_dir=REPO / "playbooks")
    fresh = IncidentManager(second.router, second.silences.matches)
    (restored,) = second.restore_into(fresh)
    assert restored.playbook == "data-breach" and fresh.open[restored.id] is restored
    # A further anomaly enriches the resumed incident instead of opening another.
    assert [e.change for e in fresh.observe(anomaly(T0 + 120, "reach", terms=("breach",)))] == [
        "updated"
    ]
    await second.stop()


async def test_reload_keeps_the_last_good_set(tmp_path):
    import shutil

    directory = tmp_path / "playbooks"
    shutil.copytree(REPO / "playbooks", directory)
    cfg = config_module.load(REPO / "config.yaml").model_copy(
        update={"state_dir": tmp_path, "playbooks": config_module.PlaybooksConfig(dir=directory)}
    )
    response = Response.build(cfg, SimClock(T0))
    shipped = len(response.playbooks)
    broken = directory / "catch-all.yaml"
    broken.write_text(broken.read_text().replace("after_quiet: 2h", "after_quiet: 2 hours"))
    problems = response.reload(cfg)
    assert problems and problems[0].file.endswith("catch-all.yaml")
    assert len(response.playbooks) == shipped  # still the old set
    broken.write_text(
        broken.read_text().replace("2 hours", "2h").replace("priority: 0", "priority: 1")
    )
    assert response.reload(cfg) == []
    assert response.router.playbooks.get("catch-all").priority == 1
    assert response.engine.playbooks is response.playbooks
    await response.stop()
