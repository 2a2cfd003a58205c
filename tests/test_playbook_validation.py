"""Playbook validation: every error names file, line, column and what was expected."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playbook_fixtures import CATCH_ALL, RECALL, make_config, write

from daemon import config as config_module
from daemon import playbook, yamlfile
from daemon.templating import Templates

REPO = Path(__file__).resolve().parent.parent

BASE = """\
name: test
title: Test
roles:
  incident_commander: {rotation: pr-primary}
steps:
  - page: {to: incident_commander}
"""


def problems(tmp_path: Path, *texts: str) -> list[yamlfile.Problem]:
    cfg = make_config(tmp_path)
    directory = tmp_path / "pb"
    for index, text in enumerate(texts):
        write(directory, f"p{index}.yaml", text)
    with pytest.raises(yamlfile.FileProblems) as info:
        playbook.load(directory, cfg)
    return info.value.problems


def one(tmp_path: Path, text: str) -> yamlfile.Problem:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_valid_playbooks_load(tmp_path):
    cfg = make_config(tmp_path)
    write(tmp_path / "pb", "a.yaml", RECALL)
    write(tmp_path / "pb", "b.yml", CATCH_ALL)
    loaded = playbook.load(tmp_path / "pb", cfg)
    assert [p.name for p in loaded] == ["product-recall", "catch-all"]
    assert loaded.get("product-recall").file.endswith("a.yaml")


def test_unknown_role(tmp_path):
    p = one(tmp_path, BASE + "  - email: {to: [comms_lead]}\n")
    assert (p.line, p.column) == (7, 18)
    assert "unknown role 'comms_lead'" in p.message
    assert "incident_commander" in p.message
    assert p.file.endswith("p0.yaml")


def test_unknown_rotation(tmp_path):
    text = BASE.replace("pr-primary", "pr-secondary")
    p = one(tmp_path, text)
    assert (p.line, p.column) == (4, 34)  # at the rotation name
    assert "unknown rotation 'pr-secondary'" in p.message
    assert "pr-primary" in p.message  # says what exists


def test_unknown_team_in_recipients(tmp_path):
    p = one(tmp_path, BASE + "  - email:\n      to: [incident_commander, team:marketing]\n")
    assert p.line == 8
    assert "unknown team 'marketing'" in p.message


def test_bad_duration(tmp_path):
    p = one(tmp_path, BASE + "  - escalate: {after: 15 minutes, to: [incident_commander]}\n")
    assert p.line == 7
    assert "expected a duration such as 90s, 15m" in p.message
    assert "15 minutes" in p.message


def test_update_interval_must_be_sane(tmp_path):
    p = one(tmp_path, BASE + "  - update: {every: 0s, to: incident_commander}\n")
    assert p.line == 7 and "at least 1m" in p.message


def test_escalate_unless_posted_needs_a_statement(tmp_path):
    p = one(tmp_path, BASE + "  - escalate: {after: 5m, unless: posted, to: incident_commander}\n")
    assert p.line == 7 and "needs a post_statement" in p.message


def test_template_does_not_compile(tmp_path):
    text = BASE + "  - chat:\n      to: [incident_commander]\n      text: 'Hi {{ brand '\n"
    p = one(tmp_path, text)
    assert p.line == 9
    assert "template does not work" in p.message


def test_template_that_raises_on_a_sample(tmp_path):
    text = BASE + "  - chat:\n      to: [incident_commander]\n      text: '{{ 1 // 0 }}'\n"
    p = one(tmp_path, text)
    assert p.line == 9
    assert "ZeroDivisionError" in p.message


def test_template_unknown_variable(tmp_path):
    text = BASE + "  - chat:\n      to: [incident_commander]\n      text: 'Hi {{ brnad }}'\n"
    p = one(tmp_path, text)
    assert p.line == 9
    assert "'brnad' is undefined" in p.message


def test_unknown_template_name(tmp_path):
    p = one(tmp_path, BASE + "  - email: {to: [incident_commander], template: brief}\n")
    assert p.line == 7
    assert "unknown template 'brief'" in p.message
    assert "incident-brief" in p.message


def test_unknown_step_kind(tmp_path):
    p = one(tmp_path, BASE + "  - sms: {to: incident_commander}\n")
    assert (p.line, p.column) == (7, 5)
    assert "unknown step kind 'sms'" in p.message
    assert "post_statement" in p.message


def test_step_with_two_kinds(tmp_path):
    text = BASE + "  - page: {to: incident_commander}\n    chat: {to: incident_commander}\n"
    p = one(tmp_path, text)
    assert p.line == 7
    assert "exactly one of" in p.message


def test_duplicate_name_across_files(tmp_path):
    found = problems(tmp_path, BASE, "# another file\n" + BASE)
    assert len(found) == 1
    assert found[0].file.endswith("p1.yaml")
    assert found[0].line == 2
    assert "already used in" in found[0].message and "p0.yaml:1" in found[0].message


def test_unknown_setting_and_missing_field(tmp_path):
    found = problems(tmp_path, BASE.replace("title: Test\n", "titel: Test\n"))
    messages = {(p.line, p.message.split(":")[0]) for p in found}
    assert (2, "titel") in messages  # the misspelt key, at its line
    assert any("title" in p.message and "missing" in p.message for p in found)


def test_approval_by_unknown_role(tmp_path):
    text = BASE + "  - post_statement:\n      text: hi\n      approval: legal\n"
    p = one(tmp_path, text)
    assert p.line == 9
    assert "unknown role 'legal'" in p.message


def test_unknown_lexicon_category(tmp_path):
    """A misspelt category would match nothing: the playbook would stay silent."""
    text = BASE.replace("title: Test\n", "title: Test\nmatch:\n  categories: [safety, securty]\n")
    p = one(tmp_path, text)
    assert (p.line, p.column) == (4, 24)
    assert "unknown category 'securty'" in p.message
    assert "security" in p.message and "detectors/lexicon.yaml" in p.message


def test_categories_come_from_the_configured_lexicon(tmp_path):
    lexicon = write(tmp_path, "lexicon.yaml", "allergens:\n  - peanut\n  - gluten\n")
    cfg = make_config(tmp_path, f"detection:\n  lexicon: {lexicon}\n")
    text = BASE.replace("title: Test\n", "title: Test\nmatch:\n  categories: [allergens]\n")
    write(tmp_path / "ok", "p.yaml", text)
    assert len(playbook.load(tmp_path / "ok", cfg)) == 1
    write(tmp_path / "bad", "p.yaml", text.replace("[allergens]", "[safety]"))
    with pytest.raises(yamlfile.FileProblems) as info:
        playbook.load(tmp_path / "bad", cfg)
    (p,) = info.value.problems
    assert "unknown category 'safety'" in p.message and "allergens" in p.message


def test_yaml_syntax_error_is_located(tmp_path):
    p = one(tmp_path, BASE + "  - page: {to: [incident_commander}\n")
    assert p.line == 7
    assert "invalid YAML" in p.message


def test_every_problem_of_every_file_at_once(tmp_path):
    bad1 = BASE + "  - sms: {}\n"
    bad2 = BASE.replace("name: test", "name: other") + "  - escalate: {after: soon, to: x}\n"
    found = problems(tmp_path, bad1, bad2)
    assert {Path(p.file).name for p in found} == {"p0.yaml", "p1.yaml"}
    assert len(found) == 2


def test_unknown_references_are_warnings_when_tolerated(tmp_path):
    cfg = config_module.Config()
    write(tmp_path / "pb", "a.yaml", BASE)
    warnings: list[yamlfile.Problem] = []
    loaded = playbook.load(tmp_path / "pb", cfg, warnings=warnings)
    assert len(loaded) == 1
    assert warnings and warnings[0].line == 4


def test_config_cross_references(tmp_path):
    path = write(
        tmp_path,
        "config.yaml",
        """
        people:
          alice: {name: Alice}
        teams:
          pr: {members: [alice, bob]}
        rotations:
          r1: {members: [alice], timezone: Mars/Olympus}
        overrides:
          - {rotation: r2, person: alice, start: "2026-01-01T00:00", end: "tomorrow"}
        """,
    )
    cfg = config_module.load(path)
    found = playbook.config_problems(yamlfile.load(path), cfg)
    text = [str(p) for p in found]
    assert any(":4:" in t and "unknown person 'bob'" in t for t in text), text
    assert any(":6:" in t and "unknown time zone" in t for t in text), text
    assert any(":8:" in t and "unknown rotation 'r2'" in t for t in text), text
    assert any(":8:" in t and "ISO date-time" in t for t in text), text


def test_shipped_playbooks_validate_with_the_example_config():
    assert playbook.validate_all(REPO / "config.yaml", REPO / "playbooks") == []
    cfg = config_module.load(REPO / "config.yaml")
    loaded = playbook.load(REPO / "playbooks", cfg)
    assert {p.name for p in loaded} == {
        "product-recall",
        "service-outage",
        "data-breach",
        "viral-complaint",
        "brand-scandal",
        "catch-all",
        "influencer-warning",
    }
    for path in playbook.playbook_files(REPO / "playbooks"):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=./playbook.schema.json", path


def test_shipped_statements_answer_within_the_hour():
    cfg = config_module.load(REPO / "config.yaml")
    for pb in playbook.load(REPO / "playbooks", cfg):
        statements = list(pb.statements())
        assert statements, pb.name
        for _, step in statements:
            assert step.approval == "auto" or step.deadline <= 1800, pb.name
            text = Templates().render({"brand": "Northwind Home"}, source=step.text)
            assert len(text) <= 280, (pb.name, len(text))  # one post on X


def test_schema_is_generated_and_committed():
    committed = json.loads((REPO / "playbooks" / playbook.SCHEMA_FILE).read_text())
    assert committed == playbook.schema()
    assert committed["properties"]["steps"]["type"] == "array"


def test_schema_describes_steps_and_durations():
    schema = playbook.schema()
    step = schema["$defs"]["Step"]
    assert step["minProperties"] == 1 and step["maxProperties"] == 1
    assert set(step["properties"]) == set(playbook.STEP_KINDS)
    after = schema["$defs"]["EscalateStep"]["properties"]["after"]
    assert after["type"] == "string" and "pattern" in after


# ------------------------------------------------------------------ hypothesis

keys = st.sampled_from(
    [
        "name",
        "title",
        "priority",
        "match",
        "roles",
        "steps",
        "resolve",
        "to",
        "after",
        "every",
        "text",
        "approval",
        "deadline",
        "page",
        "email",
        "chat",
        "post_statement",
        "escalate",
        "update",
        "webhook",
        "rotation",
        "team",
        "unless",
        "url",
        "terms_any",
    ]
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100),
    st.sampled_from(
        [
            "15m",
            "15 minutes",
            "x",
            "incident_commander",
            "team:pr",
            "{{ brand }}",
            "{{ brand",
            "{% if %}",
            "auto",
            "https://x.example",
            "acked",
            "",
        ]
    ),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=12,
)
playbook_like = st.fixed_dictionaries(
    {"name": st.sampled_from(["fuzz", "Bad Name", 3]), "title": st.just("T")},
    optional={
        "roles": st.dictionaries(
            st.sampled_from(["incident_commander", "x"]),
            st.one_of(
                st.fixed_dictionaries({"rotation": st.sampled_from(["pr-primary", "no"])}), values
            ),
            max_size=2,
        ),
        "steps": st.lists(st.dictionaries(keys, values, min_size=1, max_size=2), max_size=4),
        "match": values,
        "resolve": values,
        "priority": values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(playbook_like, values))
def test_random_playbook_yaml_validates_or_fails_clearly(doc):
    cfg = fuzz_config()
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        located = yamlfile.load("fuzz.yaml", text)
        playbook.load_located([located], cfg, FUZZ_TEMPLATES)
    except yamlfile.FileProblems as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file == "fuzz.yaml" and p.line >= 1 and p.column >= 1 and p.message


FUZZ_TEMPLATES = Templates()
_FUZZ_CONFIG: list[config_module.Config] = []


def fuzz_config() -> config_module.Config:
    if not _FUZZ_CONFIG:
        _FUZZ_CONFIG.append(
            config_module.Config.model_validate(
                yaml.safe_load(
                    textwrap.dedent(
                        """
                        people: {alice: {name: Alice}}
                        teams: {pr: {members: [alice]}}
                        rotations: {pr-primary: {members: [alice]}}
                        """
                    )
                )
            )
        )
    return _FUZZ_CONFIG[0]


def test_templates_directory_adds_and_overrides(tmp_path):
    write(tmp_path / "pb" / "templates", "incident-brief.j2", "Custom brief for {{ brand }}")
    write(tmp_path / "pb" / "templates", "legal-note.j2", "Legal: {{ incident.id }}")
    write(tmp_path / "pb" / "templates", "broken.j2", "{{ oops")
    templates = Templates(tmp_path / "pb" / "templates")
    assert {"incident-brief", "legal-note", "broken", "status-update"} <= templates.names()
    context = {"brand": "acme", "incident": {"id": "i1"}}
    assert templates.render(context, name="incident-brief") == "Custom brief for acme"
    assert templates.render(context, name="legal-note") == "Legal: i1"
    cfg = make_config(tmp_path)
    write(
        tmp_path / "pb", "a.yaml", BASE + "  - email: {to: incident_commander, template: broken}\n"
    )
    with pytest.raises(yamlfile.FileProblems) as info:
        playbook.load(tmp_path / "pb", cfg)
    (problem,) = info.value.problems
    assert problem.line == 7 and "template 'broken' does not work" in problem.message
