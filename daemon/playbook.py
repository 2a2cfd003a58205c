"""Crisis playbooks: the YAML models, their validation and which one runs.

Playbooks are written by PR, care and legal people, so every mistake —
a misspelt key, ``15 minutes`` for a duration, a role or rotation that does
not exist, a template that does not compile, two files with the same
playbook name — is reported with ``file:line:column`` and what was expected,
all at once, before anything runs. The models also generate the JSON Schema
that editors use to complete and check the files as they are typed.

Matching: each playbook has match conditions and a priority; the
highest-priority match runs. An incident that later gains a stronger signal
(recall terms appear in a complaint storm) switches to the more specific
playbook once.
"""

from __future__ import annotations

import fnmatch
import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon import yamlfile
from daemon.config import Config, Duration, Section
from daemon.domain import Anomaly, Incident, Severity
from daemon.incidents import Route, is_crisis_like
from daemon.roster import parse_instant, zone
from daemon.templating import Templates
from detectors.terms import load_lexicon

SCHEMA_FILE = "playbook.schema.json"
STEP_KINDS = ("page", "email", "chat", "post_statement", "escalate", "update", "webhook")
SIGNALS = ("volume", "negative_share", "negative_volume", "sentiment", "reach", "terms")

_REF = r"^((team|person|rotation):)?[A-Za-z0-9_.-]+$"


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Ref = Annotated[str, Field(pattern=_REF)]
Refs = Annotated[
    list[Ref],
    BeforeValidator(_listify),
    Field(description="role names, or team:<id>, person:<id>, rotation:<id>"),
]


class Match(Section):
    """When a playbook applies to an anomaly; every listed condition must hold."""

    signals: list[str] = Field(
        default_factory=list,
        description="signals that can open it (volume, negative_share, negative_volume, "
        "sentiment, reach, terms or term:<word>); empty means any",
    )
    min_severity: Literal["low", "high", "critical"] = "low"
    terms_any: list[str] = Field(
        default_factory=list,
        description="at least one of these trending terms (globs allowed), "
        "or a term signal of one of `categories`",
    )
    terms_all: list[str] = Field(default_factory=list, description="all of these terms")
    categories: list[str] = Field(
        default_factory=list,
        description="crisis-lexicon categories (safety, security, outage, legal, boycott); "
        "a term signal of one of them matches, as an alternative to terms_any",
    )
    brands: list[str] = Field(default_factory=lambda: ["*"], description="brand globs")
    channels: list[str] = Field(default_factory=lambda: ["*"], description="channel globs")
    tones: list[Literal["negative", "neutral"]] = Field(
        default_factory=lambda: ["negative", "neutral"],
        description="bucket tones that count; a positive spike (a launch) is never a crisis",
    )


class RoleSpec(Section):
    """Where a role's holder comes from: exactly one of rotation, team, person."""

    rotation: str | None = None
    team: str | None = None
    person: str | None = None
    notify: bool = Field(True, description="tell the holder they hold the role")

    @model_validator(mode="after")
    def _one_source(self) -> RoleSpec:
        given = [k for k in ("rotation", "team", "person") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a role needs exactly one of rotation, team or person")
        return self

    def ref(self) -> str:
        """The spec as a recipient reference (``rotation:x`` …)."""
        for kind in ("rotation", "team", "person"):
            value = getattr(self, kind)
            if value:
                return f"{kind}:{value}"
        raise AssertionError("validated")


class _Message(Section):
    """A message given inline (``text``) or by template name (``template``)."""

    text: str | None = Field(None, description="inline Jinja2 template")
    template: str | None = Field(None, description="template name in playbooks/templates/")


class PageStep(_Message):
    """Page someone now (pager targets are at-least-once, deduplicated downstream)."""

    to: Refs
    urgency: Literal["high", "low"] = "high"


class EmailStep(_Message):
    """Email a briefing."""

    to: Refs
    subject: str | None = Field(None, description="Jinja2 template of the subject line")


class ChatStep(_Message):
    """A chat message (Slack, Teams, or a webhook) to people or team channels."""

    to: Refs


class PostStatementStep(Section):
    """A public holding statement, posted on the crisis channel once approved."""

    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$", description="statement id")
    channel: str = Field("origin", description="'origin' posts where the crisis is happening")
    text: str = Field(description="Jinja2 template of the statement")
    approval: str = Field(
        description="'auto' for pre-approved wording, else who approves: a role or person:<id>",
        pattern=_REF,
    )
    deadline: Duration = Field(900.0, description="escalate if not approved by then")
    escalate_to: Refs = Field(
        default_factory=list, description="who is told when the deadline passes"
    )
    reply: bool = Field(
        False,
        description="post as a reply to the mention that triggered the incident "
        "(its highest-reach sample) where the platform allows it",
    )


class EscalateStep(_Message):
    """After a delay, tell more people unless the condition has been met."""

    after: Duration
    unless: Literal["acknowledged", "approved", "posted", "resolved"] = "acknowledged"
    to: Refs


class UpdateStep(_Message):
    """A status update with the current figures every interval until resolved."""

    every: Duration = Field(description="at least 1m")
    to: Refs
    via: Literal["email", "chat"] = "email"

    @field_validator("every")
    @classmethod
    def _not_spam(cls, value: float) -> float:
        if value < 60:
            raise ValueError("an update interval must be at least 1m")
        return value


class WebhookStep(Section):
    """Call a URL, e.g. to pause scheduled marketing posts while a crisis is open."""

    url: str = Field(pattern=r"^https?://")
    method: Literal["POST", "PUT", "PATCH", "DELETE", "GET"] = "POST"
    body: str | None = Field(None, description="Jinja2 template of the JSON body")
    when: Literal["open", "resolve"] = Field("open", description="on opening or on resolution")


class Step(Section):
    """One step: a mapping with exactly one key naming its kind."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    page: PageStep | None = None
    email: EmailStep | None = None
    chat: ChatStep | None = None
    post_statement: PostStatementStep | None = None
    escalate: EscalateStep | None = None
    update: UpdateStep | None = None
    webhook: WebhookStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        if sum(getattr(self, k) is not None for k in STEP_KINDS) != 1:
            raise ValueError(f"a step is a mapping with exactly one of {', '.join(STEP_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        """The step's kind (its single key)."""
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    @property
    def body(self) -> Any:
        """The step's settings."""
        return getattr(self, self.kind)


class Resolve(Section):
    """How the incident ends: quiet period, cooldown, who is told, the report."""

    after_quiet: Duration = Field(
        7200.0, description="auto-resolve after this long without anomalies"
    )
    cooldown: Duration = Field(1800.0, description="the same crisis re-opens only after this")
    notify: Refs = Field(default_factory=list)
    report: bool = True
    template: str = "resolved"


class Playbook(Section):
    """A crisis playbook (one per file in ``playbooks/``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="unique id, e.g. product-recall")
    title: str
    description: str = ""
    priority: int = Field(0, description="the highest-priority matching playbook runs")
    match: Match = Match()
    roles: dict[str, RoleSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(default_factory=list)
    resolve: Resolve = Resolve()

    _file: str = PrivateAttr("")

    @property
    def file(self) -> str:
        """The file this playbook was read from."""
        return self._file

    def matches(self, anomaly: Anomaly) -> bool:
        """Whether ``anomaly`` satisfies every match condition."""
        m = self.match
        if anomaly.severity < Severity.parse(m.min_severity) or anomaly.tone not in m.tones:
            return False
        if not _any_glob(anomaly.series.brand, m.brands):
            return False
        if not _any_glob(anomaly.series.channel, m.channels):
            return False
        if m.signals and not any(_signal_matches(anomaly.signal, s) for s in m.signals):
            return False
        terms = terms_of(anomaly)
        if m.terms_any or m.categories:
            by_term = any(_any_glob_in(t, terms) for t in m.terms_any)
            by_category = anomaly.category is not None and anomaly.category in m.categories
            if not (by_term or by_category):
                return False
        return all(_any_glob_in(t, terms) for t in m.terms_all)

    def statements(self) -> Iterator[tuple[int, PostStatementStep]]:
        """The post_statement steps with their index."""
        for index, step in enumerate(self.steps):
            if step.post_statement is not None:
                yield index, step.post_statement


def statement_id(index: int, step: PostStatementStep) -> str:
    """The id of a statement step: its own or ``s<index>``."""
    return step.id or f"s{index}"


def terms_of(anomaly: Anomaly) -> set[str]:
    """The trending terms an anomaly carries (its top terms and a term signal)."""
    terms = {t.lower() for t, _ in anomaly.top_terms}
    if anomaly.signal.startswith("term:"):
        terms.add(anomaly.signal[5:].lower())
    return terms


def _any_glob(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def _any_glob_in(pattern: str, values: set[str]) -> bool:
    return any(fnmatch.fnmatchcase(v, pattern.lower()) for v in values)


def _signal_matches(signal: str, pattern: str) -> bool:
    if pattern == "terms":
        return signal.startswith("term:")
    return fnmatch.fnmatchcase(signal, pattern)


# --------------------------------------------------------------------- loading


class Playbooks:
    """The loaded, cross-checked playbooks, highest priority first."""

    def __init__(self, playbooks: Iterable[Playbook]) -> None:
        self.ordered = sorted(playbooks, key=lambda p: (-p.priority, p.name))
        self.by_name = {p.name: p for p in self.ordered}

    def get(self, name: str) -> Playbook | None:
        """A playbook by name."""
        return self.by_name.get(name)

    def best(self, anomaly: Anomaly) -> Playbook | None:
        """The highest-priority playbook matching ``anomaly``."""
        return next((p for p in self.ordered if p.matches(anomaly)), None)

    def __len__(self) -> int:
        return len(self.ordered)

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self.ordered)


def _step_kind_problems(located: yamlfile.Located) -> dict[tuple[str | int, ...], str]:
    """Messages for step keys that are not a step kind, by their location."""
    out: dict[tuple[str | int, ...], str] = {}
    data = located.data
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        return out
    for index, step in enumerate(steps):
        if isinstance(step, dict):
            for key in step:
                if key not in STEP_KINDS:
                    out[("steps", index, key)] = (
                        f"steps.{index}: unknown step kind {key!r}; "
                        f"expected one of {', '.join(STEP_KINDS)}"
                    )
    return out


def parse(located: yamlfile.Located) -> Playbook:
    """Validate one parsed playbook file (structure only), with located errors."""
    if not isinstance(located.data, dict):
        raise yamlfile.FileProblems([located.problem((), "expected a playbook mapping")])
    kinds = _step_kind_problems(located)
    try:
        playbook = Playbook.model_validate(located.data)
    except ValidationError as exc:
        problems = []
        for error, problem in zip(exc.errors(), yamlfile.problems_of(located, exc), strict=True):
            loc = tuple(p for p in error["loc"] if not str(p).startswith("function-"))
            if loc in kinds:
                problem = located.problem(loc, kinds[loc], at_key=True)
            problems.append(problem)
        raise yamlfile.FileProblems(problems) from exc
    playbook._file = located.file
    return playbook


def _check_ref(
    ref: str, playbook: Playbook, config: Config, allow_roles: bool = True
) -> str | None:
    kind, _, name = ref.partition(":")
    if not name:
        if allow_roles and ref in playbook.roles:
            return None
        roles = ", ".join(sorted(playbook.roles)) or "none defined"
        return f"unknown role {ref!r} (roles of this playbook: {roles}; or use team:/person:)"
    table = {"team": config.teams, "person": config.people, "rotation": config.rotations}[kind]
    if name not in table:
        known = ", ".join(sorted(table)) or "none in config.yaml"
        return f"unknown {kind} {name!r} (known: {known})"
    return None


def cross_check(
    located: yamlfile.Located,
    playbook: Playbook,
    config: Config,
    templates: Templates,
    warnings: list[yamlfile.Problem] | None = None,
) -> list[yamlfile.Problem]:
    """Problems a schema cannot see: references to roles, people, rotations, templates.

    With a ``warnings`` list, references to people, teams and rotations that
    ``config.yaml`` does not define go there instead (a demo or replay with
    an empty config still runs, addressing placeholders); unknown roles,
    templates and the rest stay errors.
    """
    problems: list[yamlfile.Problem] = []

    def roster_problem(loc: tuple[str | int, ...], message: str, is_role: bool) -> None:
        problem = located.problem(loc, message)
        (problems if warnings is None or is_role else warnings).append(problem)

    def ref(loc: tuple[str | int, ...], value: str) -> None:
        message = _check_ref(value, playbook, config)
        if message:
            is_role = ":" not in value
            roster_problem(loc, ".".join(map(str, loc)) + ": " + message, is_role)

    def refs(loc: tuple[str | int, ...], values: list[str]) -> None:
        for index, value in enumerate(values):
            ref((*loc, index), value)

    def template(loc: tuple[str | int, ...], source: str | None, name: str | None) -> None:
        if name is not None and name not in templates.names():
            problems.append(
                located.problem(
                    (*loc, "template"),
                    f"unknown template {name!r} (known: {', '.join(sorted(templates.names()))})",
                )
            )
            return
        if source is not None or name is not None:
            message = templates.check(source=source, name=name)
            if message:
                key = "template" if name is not None else "text"
                problems.append(located.problem((*loc, key), message))

    for signal in playbook.match.signals:
        if signal not in SIGNALS and not signal.startswith("term:"):
            index = playbook.match.signals.index(signal)
            problems.append(
                located.problem(
                    ("match", "signals", index),
                    f"unknown signal {signal!r} (expected one of {', '.join(SIGNALS)} "
                    "or term:<word>)",
                )
            )
    if playbook.match.categories:
        where, known = _lexicon_categories(config.detection.lexicon)
        for index, category in enumerate(playbook.match.categories):
            if known is not None and category not in known:
                problems.append(
                    located.problem(
                        ("match", "categories", index),
                        f"unknown category {category!r} (the lexicon {where} has "
                        f"{', '.join(sorted(known)) or 'none'})",
                    )
                )
    for role, spec in playbook.roles.items():
        kind = spec.ref().partition(":")[0]
        message = _check_ref(spec.ref(), playbook, config, allow_roles=False)
        if message:
            roster_problem(("roles", role, kind), f"roles.{role}: {message}", False)
    seen_ids: dict[str, int] = {}
    for index, step in enumerate(playbook.steps):
        loc: tuple[str | int, ...] = ("steps", index, step.kind)
        body = step.body
        if isinstance(body, PostStatementStep):
            sid = statement_id(index, body)
            if sid in seen_ids:
                problems.append(
                    located.problem((*loc, "id"), f"statement id {sid!r} is used twice")
                )
            seen_ids[sid] = index
            if body.approval != "auto":
                ref((*loc, "approval"), body.approval)
            refs((*loc, "escalate_to"), body.escalate_to)
            template(loc, body.text, None)
        elif isinstance(body, WebhookStep):
            if body.body is not None:
                message = templates.check(source=body.body)
                if message:
                    problems.append(located.problem((*loc, "body"), message))
        else:
            refs((*loc, "to"), body.to)
            template(loc, body.text, body.template)
            if isinstance(body, EmailStep) and body.subject is not None:
                message = templates.check(source=body.subject)
                if message:
                    problems.append(located.problem((*loc, "subject"), message))
            if (
                isinstance(body, EscalateStep)
                and body.unless in ("approved", "posted")
                and not any(True for _ in playbook.statements())
            ):
                problems.append(
                    located.problem(
                        (*loc, "unless"),
                        f"unless: {body.unless} needs a post_statement step in this playbook",
                    )
                )
    refs(("resolve", "notify"), playbook.resolve.notify)
    template(("resolve",), None, playbook.resolve.template)
    return problems


@functools.lru_cache(maxsize=4)
def _lexicon_categories(path: Path | None) -> tuple[str, frozenset[str] | None]:
    """Where the crisis lexicon is, and its categories (None if it cannot be read).

    A category no lexicon term belongs to can never match: a typo there
    would leave a playbook silent through the very crisis it is for. Read
    once per process, as the detectors read it: a changed lexicon takes a
    restart.
    """
    where = str(path) if path is not None else "detectors/lexicon.yaml"
    try:
        return where, frozenset(load_lexicon(path).category.values())
    except (OSError, ValueError):  # the detectors report an unreadable lexicon themselves
        return where, None


def config_problems(located: yamlfile.Located, config: Config) -> list[yamlfile.Problem]:
    """Cross-references inside ``config.yaml``: members, rotations, time zones, overrides."""
    problems: list[yamlfile.Problem] = []
    for team_id, team in config.teams.items():
        for index, member in enumerate(team.members):
            if member not in config.people:
                problems.append(
                    located.problem(
                        ("teams", team_id, "members", index), f"unknown person {member!r}"
                    )
                )
    for rot_id, rotation in config.rotations.items():
        for index, member in enumerate(rotation.members):
            if member not in config.people:
                problems.append(
                    located.problem(
                        ("rotations", rot_id, "members", index), f"unknown person {member!r}"
                    )
                )
        try:
            zone(rotation.timezone)
        except ValueError as exc:
            problems.append(located.problem(("rotations", rot_id, "timezone"), str(exc)))
    for person_id, person in config.people.items():
        try:
            zone(person.timezone)
        except ValueError as exc:
            problems.append(located.problem(("people", person_id, "timezone"), str(exc)))
    for index, override in enumerate(config.overrides):
        loc: tuple[str | int, ...] = ("overrides", index)
        if override.rotation not in config.rotations:
            problems.append(
                located.problem((*loc, "rotation"), f"unknown rotation {override.rotation!r}")
            )
        if override.person not in config.people:
            problems.append(
                located.problem((*loc, "person"), f"unknown person {override.person!r}")
            )
        for key in ("start", "end"):
            try:
                parse_instant(getattr(override, key))
            except ValueError as exc:
                problems.append(located.problem((*loc, key), str(exc)))
    for name, target in config.targets.items():
        if target.type == "file" and target.path is None:
            problems.append(
                located.problem(("targets", name, "type"), "a file target needs a path")
            )
    return problems


def playbook_files(directory: Path) -> list[Path]:
    """The playbook files of a directory (``*.yaml`` and ``*.yml``), sorted."""
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_located(
    sources: Iterable[yamlfile.Located],
    config: Config,
    templates: Templates,
    warnings: list[yamlfile.Problem] | None = None,
) -> Playbooks:
    """Validate parsed playbook files together; raise every problem at once.

    ``warnings`` makes unknown people, teams and rotations warnings (see
    ``cross_check``).
    """
    problems: list[yamlfile.Problem] = []
    loaded: list[Playbook] = []
    names: dict[str, yamlfile.Problem] = {}
    for located in sources:
        try:
            playbook = parse(located)
        except yamlfile.FileProblems as exc:
            problems.extend(exc.problems)
            continue
        problems.extend(cross_check(located, playbook, config, templates, warnings))
        first = names.get(playbook.name)
        if first is not None:
            problems.append(
                located.problem(
                    ("name",),
                    f"playbook name {playbook.name!r} is already used in {first.file}:{first.line}",
                )
            )
            continue
        names[playbook.name] = located.problem(("name",), "")
        loaded.append(playbook)
    if problems:
        raise yamlfile.FileProblems(problems)
    return Playbooks(loaded)


def load(
    directory: Path,
    config: Config,
    templates: Templates | None = None,
    warnings: list[yamlfile.Problem] | None = None,
) -> Playbooks:
    """Read and validate every playbook in ``directory``.

    Raises ``yamlfile.FileProblems`` with every problem of every file, so
    one ``crisisd validate`` run shows all there is to fix. Pass a
    ``warnings`` list to tolerate people, teams and rotations missing from
    ``config.yaml`` (demo, replay); ``crisisd validate`` and ``run`` should not.
    """
    templates = templates or Templates(directory / "templates")
    sources: list[yamlfile.Located] = []
    problems: list[yamlfile.Problem] = []
    for path in playbook_files(directory):
        try:
            sources.append(yamlfile.load(path))
        except yamlfile.FileProblems as exc:
            problems.extend(exc.problems)
    try:
        playbooks = load_located(sources, config, templates, warnings)
    except yamlfile.FileProblems as exc:
        problems.extend(exc.problems)
    if problems:
        raise yamlfile.FileProblems(problems)
    return playbooks


def validate_all(config_path: str | Path | None, directory: Path | None = None) -> list[str]:
    """Every problem of ``config.yaml`` and the playbooks, as ``file:line:col: message`` lines.

    This is what ``crisisd validate`` prints (and exits 1 when non-empty).
    """
    from daemon import config as config_module

    try:
        config = config_module.load(config_path)
    except yamlfile.FileProblems as exc:
        return [str(p) for p in exc.problems]
    problems: list[yamlfile.Problem] = []
    if config_path is not None:
        problems.extend(config_problems(yamlfile.load(config_path), config))
    try:
        load(directory or config.playbooks.dir, config)
    except yamlfile.FileProblems as exc:
        problems.extend(exc.problems)
    return [str(p) for p in problems]


def schema() -> dict[str, Any]:
    """The JSON Schema of a playbook file, for editors (``crisisd schema``)."""
    out = Playbook.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://crisisd.dev/schema/playbook.schema.json",
        **out,
    }


def schema_command(write_to: str | None) -> int:
    """``crisisd schema [--write DIR]``: print the schema, or write it next to the playbooks."""
    if write_to:
        print(write_schema(Path(write_to)))
    else:
        print(json.dumps(schema(), indent=2))
    return 0


def write_schema(directory: Path) -> Path:
    """Write the schema next to the playbooks, where their header points."""
    path = directory / SCHEMA_FILE
    path.write_text(json.dumps(schema(), indent=2) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- routing


class PlaybookRouter:
    """The incident stage's router: which playbook an anomaly belongs to.

    One open incident per brand gathers the brand's anomalies (one crisis,
    not a page storm). A new anomaly that matches a higher-priority playbook
    than the incident's switches it — once, so a response under way is not
    reorganised again and again. An incident still at ``low`` severity is a
    warning (a big account complaining, before any storm): the playbook it
    leaves had not called anyone out, so that switch does not count.
    """

    def __init__(self, playbooks: Playbooks) -> None:
        self.playbooks = playbooks

    def _route(self, playbook: Playbook, key: str, merge_into: str | None = None) -> Route:
        r = playbook.resolve
        return Route(playbook.name, key, r.after_quiet, r.cooldown, merge_into)

    def route(self, anomaly: Anomaly, open_incidents: list[Incident]) -> Route | None:
        """Route ``anomaly``: merge, switch once, open, or ``None`` (no crisis)."""
        if not is_crisis_like(anomaly):
            return None
        best = self.playbooks.best(anomaly)
        if open_incidents:
            incident = min(open_incidents, key=lambda i: i.opened_at)
            current = self.playbooks.get(incident.playbook)
            switched = any(e.kind == "playbook_switched" and e.data.get("severity") != "low"
                           for e in incident.timeline)
            if (
                best is not None
                and current is not None
                and best.priority > current.priority
                and not switched
            ):
                return self._route(best, incident.key, incident.id)
            if current is not None:
                return self._route(current, incident.key, incident.id)
        if best is None:
            return None
        return self._route(best, f"{anomaly.series.brand}:{best.name}")

    def route_of(self, incident: Incident) -> Route:
        """The route of a restored incident (for ``IncidentManager.restore``)."""
        playbook = self.playbooks.get(incident.playbook)
        if playbook is None:
            return Route(incident.playbook, incident.key, 7200.0, 1800.0)
        return self._route(playbook, incident.key)
