"""YAML loading that remembers where every value came from.

Config and playbooks are edited by people, not programs: an error must say
``file:line:column`` and what was expected. PyYAML's composer knows each
node's position; this module keeps a map from the value's path (the same
tuple of keys and indexes pydantic reports in an error's ``loc``) to it, and
turns pydantic validation errors into located ``Problem`` lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file, located for the person who edits it."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class FileProblems(Exception):
    """Raised when a file (or a set of files) has problems; carries them all."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(slots=True)
class Located:
    """Parsed YAML plus the position of every value in it."""

    file: str
    data: Any
    marks: dict[PathKey, tuple[int, int]]
    key_marks: dict[PathKey, tuple[int, int]]

    def where(self, loc: Iterable[str | int], at_key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the value at ``loc``, or its closest parent.

        ``at_key`` points at the mapping key instead (an unknown setting).
        """
        key = tuple(loc)
        if at_key and key in self.key_marks:
            return self.key_marks[key]
        while key:
            if key in self.marks:
                return self.marks[key]
            key = key[:-1]
        return self.marks.get((), (1, 1))

    def problem(self, loc: Iterable[str | int], message: str, at_key: bool = False) -> Problem:
        """A ``Problem`` at the value (or the key) ``loc`` points to."""
        line, col = self.where(loc, at_key)
        return Problem(self.file, line, col, message)


def _walk(node: yaml.Node, path: PathKey, located: Located) -> None:
    located.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            mark = key_node.start_mark
            located.key_marks[(*path, key)] = (mark.line + 1, mark.column + 1)
            _walk(value_node, (*path, key), located)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), located)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with a date that does not exist an error at its position."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:  # 2026-13-01 matches YAML's date pattern, then fails
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a date ({exc})", node.start_mark) from exc


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def load(path: str | Path, text: str | None = None) -> Located:
    """Parse a YAML file, raising ``FileProblems`` with the position of a syntax error."""
    name = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise FileProblems([Problem(name, 1, 1, f"cannot read file: {exc.strerror}")]) from exc
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # (a safe loader: _Loader is SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise FileProblems([Problem(name, line, col, f"invalid YAML: {exc.problem}")]) from exc
    except yaml.YAMLError as exc:
        raise FileProblems([Problem(name, 1, 1, f"invalid YAML: {exc}")]) from exc
    located = Located(name, {} if data is None else data, {}, {})
    if node is not None:
        _walk(node, (), located)
    return located


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown setting (check its spelling and indentation)"
    elif error["type"] == "missing":
        msg = "required setting is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{loc}: {msg}" if loc else msg


def problems_of(located: Located, error: ValidationError) -> list[Problem]:
    """Turn a pydantic error into one located ``Problem`` per failed value."""
    out = []
    for item in error.errors():
        loc = [part for part in item["loc"] if not str(part).startswith("function-")]
        out.append(located.problem(loc, _describe(item), item["type"] == "extra_forbidden"))
    return out


def validate(located: Located, model: type[M]) -> M:
    """Validate parsed YAML against a pydantic model, with located errors."""
    try:
        return model.model_validate(located.data)
    except ValidationError as exc:
        raise FileProblems(problems_of(located, exc)) from exc
