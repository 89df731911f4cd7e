"""YAML files written by people: load them keeping where each value stands.

:func:`load` returns the data and a map from each value's path (a tuple of
keys and indexes) to its ``(line, column)``, both 1-based.  Validation
errors can then say ``FILE:LINE:COLUMN: message`` about the exact value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class InvalidFile(ValueError):
    """A file with one or more problems, each naming its line and column."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


@dataclass
class Located:
    """Parsed YAML with the position of every value."""

    file: str
    data: Any
    positions: dict[Path_, tuple[int, int]]

    def where(self, path: Iterable[str | int]) -> tuple[int, int]:
        """Position of ``path``, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self.positions:
                return self.positions[key]
            key = key[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: Iterable[str | int], message: str) -> Problem:
        line, column = self.where(path)
        return Problem(self.file, line, column, message)

    def problems_from(self, error: ValidationError, prefix: Path_ = ()) -> list[Problem]:
        """Turn a pydantic error into located problems, one per error."""
        found = []
        for item in error.errors():
            loc = prefix + tuple(p for p in item["loc"] if isinstance(p, (str, int)))
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            field = ".".join(str(p) for p in loc)
            found.append(self.problem(loc, f"{field}: {message}" if field else message))
        return found


def _construct(node: yaml.Node, path: Path_, positions: dict[Path_, tuple[int, int]]) -> Any:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _SAFE.construct_object(key_node, deep=True)
            if key in result:
                raise InvalidFile([Problem("", key_node.start_mark.line + 1,
                                           key_node.start_mark.column + 1,
                                           f"{key!r} is given twice")])
            result[key] = _construct(value_node, path + (key,), positions)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), positions) for i, child in enumerate(node.value)]
    return _SAFE.construct_object(node, deep=True)


#: Builds Python values from scalar nodes with the safe loader's rules.
_SAFE = yaml.SafeLoader("")


def loads(text: str, file: str) -> Located:
    """Parse ``text``; raise :class:`InvalidFile` for YAML syntax errors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InvalidFile([Problem(file, line, column, f"not valid YAML: {exc.problem}")]) from None
    positions: dict[Path_, tuple[int, int]] = {}
    if node is None:
        return Located(file, None, {(): (1, 1)})
    try:
        data = _construct(node, (), positions)
    except InvalidFile as exc:
        raise InvalidFile([Problem(file, p.line, p.column, p.message) for p in exc.problems]) from None
    return Located(file, data, positions)


def load(path: Path) -> Located:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidFile([Problem(str(path), 1, 1, exc.strerror or str(exc))]) from None
    return loads(text, str(path))
