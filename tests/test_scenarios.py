"""End to end on generated brands: every crisis kind opens its playbook, nothing else pages.

The scenarios of ``bench/bench_scenarios.py`` at one brand size, replayed
through the whole pipeline with the shipped ``config.yaml`` and playbooks
(the bench runs three sizes and two traffic shapes and prints the table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_scenarios  # noqa: E402

FAST = {"complaints", "recall", "outage", "breach", "boycott", "influencer"}


@pytest.fixture(scope="module")
def outcomes():
    found, _ = bench_scenarios.run([10.0], seeds=1, days=6)
    return {o.brand.scenario.name: o for o in found}


def test_a_normal_week_and_a_launch_page_nobody(outcomes):
    for name in ("normal", "launch"):
        assert outcomes[name].incidents == [], name


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_sudden_crisis_opens_its_playbook_within_half_an_hour(outcomes, name):
    o = outcomes[name]
    assert o.ok, (name, o.incidents)
    assert o.delay is not None and o.delay <= 30, (name, o.delay)
    assert len(o.incidents) == 1, o.incidents  # one incident, not one per signal


@pytest.mark.parametrize("name", ["turn", "burn"])
def test_a_turn_at_normal_volume_and_a_slow_burn_are_caught(outcomes, name):
    o = outcomes[name]
    assert o.ok, (name, o.incidents)
