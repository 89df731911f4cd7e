"""YAML files written by people: load them keeping where each value stands.

:func:`load` returns the data and a map from each value's path (a tuple of
keys and indexes) to its ``(line, column)``, both 1-based.  Validation
errors can then say ``FILE:LINE:COLUMN: message`` about the exact value.
"""

from __future__ import annotations

import stat
from collections.abc import Hashable, Iterable, Sequence
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
    #: 1-based; 0 when only the line is known (a template's): then written FILE:LINE: message.
    column: int
    message: str

    def __str__(self) -> str:
        if not self.column:
            return f"{self.file}:{self.line}: {self.message}"
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


#: Bytes a configuration file may have.
MAX_FILE_BYTES = 1_000_000
#: Values (mappings, lists and scalars) one file may make, aliases expanded: a few lines of
#: nested aliases (``&a [*b, *b, …]``) otherwise expand to billions.
MAX_VALUES = 100_000
#: Levels of nesting one file may have.
MAX_DEPTH = 50


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node


def _construct(node: yaml.Node, path: Path_, positions: dict[Path_, tuple[int, int]]) -> Any:
    if len(positions) >= MAX_VALUES:
        raise _TooBig(node, f"the file makes more than {MAX_VALUES:,} values (YAML aliases "
                            "repeat what they name); write it out plainly")
    if len(path) > MAX_DEPTH:
        raise _TooBig(node, f"nested more than {MAX_DEPTH} levels deep")
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, Hashable) or isinstance(key, list | dict):
                raise _TooBig(key_node, "a key must be a plain name (a list or a mapping "
                                        "cannot be a key)")
            if key in result:
                raise InvalidFile([Problem("", key_node.start_mark.line + 1,
                                           key_node.start_mark.column + 1,
                                           f"{key!r} is given twice")])
            result[key] = _construct(value_node, path + (key,), positions)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), positions) for i, child in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    """A node's value by the safe loader's rules; what it cannot make (a tag of its own such
    as ``!foo``, a merge key ``<<``, ``!!float x``, a number of thousands of digits) is a
    problem at the node, not an error out of the loader."""
    try:
        return _SAFE.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        tag = node.tag.rsplit(":", 1)[-1] if node.tag else ""
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if node.tag == "tag:yaml.org,2002:merge":
            why = "a merge key (<<) is not supported: write the settings out"
        elif node.tag and not node.tag.startswith("tag:yaml.org,2002:"):
            why = f"the tag {node.tag} is not supported: write a plain value"
        elif tag:
            why = f"this value cannot be read as {tag}: {why}"
        raise _TooBig(node, why[:300]) from None


#: Builds Python values from scalar nodes with the safe loader's rules.
_SAFE = yaml.SafeLoader("")


def _indent(text: str, line: int) -> int:
    """The spaces before the first character of ``line`` (0-based) of ``text``."""
    lines = text.splitlines()
    row = lines[line] if 0 <= line < len(lines) else ""
    return len(row) - len(row.lstrip(" "))


def _spaces(count: int) -> str:
    return f"{count} space{'s' if count != 1 else ''}"


def plain_words(exc: yaml.MarkedYAMLError, text: str) -> str:
    """PyYAML's error said in plain words for the people who write flow files: a tab, a line
    indented unlike its neighbours, a colon inside a value, a bracket or quote left open.
    (The caller puts FILE:LINE:COLUMN in front: the problem's mark.)"""
    problem = exc.problem or ""
    mark, context = exc.problem_mark, exc.context_mark
    if "'\\t'" in problem or "\t" in problem:
        return ("a tab character: YAML indents with spaces only; replace the tab with spaces "
                "(as many as the lines above use)")
    if problem.startswith("expected <block end>") and mark is not None and context is not None:
        here, there = _indent(text, mark.line), context.column
        if "'?'" in problem or "'-'" in problem or "block collection" in (exc.context or ""):
            if text.splitlines()[mark.line].lstrip(" ").startswith("-"):
                return (f"this list item is indented by {_spaces(here)}, but the items above it "
                        f"(from line {context.line + 1}) by {_spaces(there)}: indent every item "
                        "of one list alike")
            return (f"this line is indented by {_spaces(here)} and is not a list item: the "
                    f"list above it (from line {context.line + 1}) has its items at "
                    f"{_spaces(there)}, each starting with '- '; indent this line as far as the "
                    "settings of the item above, or start it with '- '")
        return (f"this line is indented by {_spaces(here)}, but the settings above it (from "
                f"line {context.line + 1}) by {_spaces(there)}: the keys of one mapping start "
                "in the same column (and a line indented further belongs under a key that "
                "ends with a colon)")
    if problem == "mapping values are not allowed here":
        return ("a colon and a space inside a value, or a key indented under a value: put a "
                "value that holds ': ' in quotes (description: \"Note: …\"), or check the "
                "indentation of this line")
    if problem.startswith(("expected ',' or '}'", "expected ',' or ']'")) and context:
        bracket = "{" if "}" in problem else "["
        closer = "}" if bracket == "{" else "]"
        return (f"the {bracket} opened at line {context.line + 1}, column {context.column + 1} "
                f"is not closed with {closer} (or a comma is missing between its items)")
    if "quoted scalar" in (exc.context or "") and context is not None:
        return (f"the quote opened at line {context.line + 1}, column {context.column + 1} is "
                "never closed")
    if "that cannot start any token" in problem:
        return (f"not valid YAML: {problem}; a value that starts with @, ` or % must be put "
                "in quotes")
    if "'<stream end>'" in problem:
        return ("the file ends too early: a [ or { is not closed, or a value is missing "
                f"(not valid YAML: {problem})")
    return f"not valid YAML: {problem}"


def loads(text: str, file: str) -> Located:
    """Parse ``text``; raise :class:`InvalidFile` for YAML syntax errors."""
    if len(text) > MAX_FILE_BYTES:
        raise InvalidFile([Problem(file, 1, 1, f"the file has {len(text):,} characters; a "
                                               f"configuration file has at most "
                                               f"{MAX_FILE_BYTES:,}")])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise InvalidFile([Problem(file, 1, 1, f"nested more than {MAX_DEPTH} levels "
                                               "deep")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InvalidFile([Problem(file, line, column, plain_words(exc, text))]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line, column = _line_column(text, exc.position)
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise InvalidFile([Problem(file, line, column, (
            f"the character {character!r} is not allowed in a YAML file (a control character: "
            "delete it)"))]) from None
    except yaml.YAMLError as exc:
        raise InvalidFile([Problem(file, 1, 1, f"not valid YAML: {exc}")]) from None
    positions: dict[Path_, tuple[int, int]] = {}
    if node is None:
        return Located(file, None, {(): (1, 1)})
    try:
        data = _construct(node, (), positions)
    except _TooBig as exc:
        mark = exc.node.start_mark
        raise InvalidFile([Problem(file, mark.line + 1, mark.column + 1, str(exc))]) from None
    except RecursionError:
        raise InvalidFile([Problem(file, 1, 1, f"nested more than {MAX_DEPTH} levels "
                                               "deep")]) from None
    except InvalidFile as exc:
        raise InvalidFile([Problem(file, p.line, p.column, p.message) for p in exc.problems]) from None
    return Located(file, data, positions)


def _line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of the character at ``position`` of ``text``."""
    before = text[:max(position, 0)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def load(path: Path) -> Located:
    """Read (:func:`read_text`) and parse a configuration file."""
    return loads(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A configuration file's text: a regular file of at most 4 × :data:`MAX_FILE_BYTES` bytes
    of UTF-8 (a device, a pipe or a link to one is refused before it is read, and no more
    than that is ever read); every other case is :class:`InvalidFile` at its place."""
    limit = 4 * MAX_FILE_BYTES  # (UTF-8: up to 4 bytes a character)
    too_big = (f"the file has more than {limit:,} bytes; a configuration file has at most "
               f"{MAX_FILE_BYTES:,} characters")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InvalidFile([Problem(str(path), 1, 1, "not a regular file (a directory, a "
                                                        "device or a pipe): a configuration "
                                                        "file is a plain text file")])
        if info.st_size > limit:
            raise InvalidFile([Problem(str(path), 1, 1, too_big)])
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidFile([Problem(str(path), 1, 1, exc.strerror or str(exc))]) from None
    if len(raw) > limit:
        raise InvalidFile([Problem(str(path), 1, 1, too_big)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InvalidFile([Problem(str(path), line, 1, (
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} on this line cannot be "
            "read): save it as UTF-8"))]) from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte order mark some editors write
