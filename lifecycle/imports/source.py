"""Reading import files: CSV with a header or JSON Lines, from a path or stdin.

Each record carries the line it started on, so every error can be reported
as ``FILE:LINE: reason``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

FORMATS = ("csv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class SourceError(ValueError):
    """The file as a whole cannot be read (missing, no header, unknown format)."""


class Record(NamedTuple):
    line: int
    fields: dict[str, Any]


class BadRecord(NamedTuple):
    """A line that is not a record at all (e.g. broken JSON)."""

    line: int
    reason: str


class _CountingReader(io.RawIOBase):
    """Wraps a binary stream and reports bytes read, for the progress bar."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None] | None) -> None:
        self._raw = raw
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if self._on_read is not None and n:
            self._on_read(n)
        return n


class _Prefixed(io.RawIOBase):
    """A stream that first gives back the bytes already read to sniff the format."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


@dataclass
class Source:
    """An import file: its display name, format and size (None for stdin)."""

    name: str
    format: str
    size: int | None
    _binary: IO[bytes]

    def text(self, on_read: Callable[[int], None] | None = None) -> IO[str]:
        """The file as text (UTF-8, BOM dropped, line ends kept for CSV)."""
        raw = io.BufferedReader(_CountingReader(self._binary, on_read), buffer_size=1 << 16)
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")

    def records(self, on_read: Callable[[int], None] | None = None) -> Iterator[Record | BadRecord]:
        """The file's records; :class:`SourceError` when it is not UTF-8 text (nothing of it
        may then be trusted: the import stops and writes nothing)."""
        text = self.text(on_read)
        try:
            if self.format == "csv":
                yield from _csv_records(self.name, text)
            else:
                yield from jsonl_records(text)
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{self.name}: is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be "
                "read); save it as UTF-8 — in Excel, as \"CSV UTF-8\"") from None

    def close(self) -> None:
        if self.size is not None:  # a file we opened, not stdin
            self._binary.close()


def open_source(path: str, fmt: str | None = None) -> Source:
    """Open ``path`` (``-`` for stdin); the format comes from ``fmt`` or the name."""
    if fmt is not None and fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}; use csv or jsonl")
    if path == "-":
        binary: IO[bytes] = sys.stdin.buffer
        if fmt is None:
            head = b""
            while not head.strip():  # the first non-blank byte tells the format
                chunk = binary.read1(4096) if hasattr(binary, "read1") else binary.read(4096)
                if not chunk:
                    break
                head += chunk
            fmt = "jsonl" if head.lstrip().startswith(b"{") else "csv"
            binary = _Prefixed(head, binary)
        return Source("<stdin>", fmt, None, binary)
    file = Path(path)
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(file.suffix.lower())
        if fmt is None:
            raise SourceError(f"{path}: cannot tell the format from the name; "
                              "use --format csv or --format jsonl")
    try:
        binary = file.open("rb")
        size = file.stat().st_size
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    return Source(path, fmt, size, binary)


def _normalise_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


#: Separators a CSV file may use: commas, semicolons (what Excel writes where the decimal mark is a
#: comma: German, Nordic and Polish shops) and tabs; the header line tells which.
DELIMITERS = (",", ";", "\t")


def delimiter_of(header_line: str) -> str:
    """The separator of a CSV file from its header line: the one of :data:`DELIMITERS` it has
    most often outside quotes (a comma on a tie, and for a single column)."""
    outside = "".join(header_line.split('"')[::2])
    return max(DELIMITERS, key=lambda d: (outside.count(d), d == ","))


def csv_header(name: str, lines: Iterator[str], delimiter: str = ",") -> list[str]:
    """Read and check the header line; return the normalised column names."""
    try:
        header = next(csv.reader(lines, delimiter=delimiter))
    except StopIteration:
        raise SourceError(f"{name}:1: the file is empty; a header line is needed") from None
    except csv.Error as exc:
        raise SourceError(f"{name}:1: {exc}") from None
    columns = [_normalise_header(h) for h in header]
    if not any(columns):
        raise SourceError(f"{name}:1: the header line is empty")
    seen: set[str] = set()
    for col in columns:
        if col in seen and col:
            raise SourceError(f"{name}:1: column {col!r} appears twice in the header")
        seen.add(col)
    return columns


def csv_rows(columns: list[str], lines: Iterable[str], first_line: int,
             delimiter: str = ",") -> Iterator[Record | BadRecord]:
    """Parse CSV ``lines`` (the first of which is line ``first_line`` of the file)."""
    reader = csv.reader(lines, delimiter=delimiter)
    offset = first_line - 1
    previous_end = 0
    width = len(columns)
    unnamed = "" in columns
    while True:
        start = offset + previous_end + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous_end = reader.line_num
            yield BadRecord(start, f"not readable as CSV: {exc}")
            continue
        previous_end = reader.line_num
        if len(row) > width:
            yield BadRecord(start, f"{len(row)} fields but the header has {width}")
            continue
        if not any(row) or all(not cell.strip() for cell in row):
            continue
        fields = dict(zip(columns, row))
        if unnamed:
            fields.pop("", None)
        yield Record(start, fields)


def _csv_records(name: str, text: IO[str]) -> Iterator[Record | BadRecord]:
    first = text.readline()
    delimiter = delimiter_of(first)
    columns = csv_header(name, iter([first]), delimiter)
    yield from csv_rows(columns, text, 2, delimiter)


def jsonl_records(lines: Iterable[str], first_line: int = 1) -> Iterator[Record | BadRecord]:
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadRecord(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(value, dict):
            yield BadRecord(number, "each line must be a JSON object")
            continue
        yield Record(number, {_normalise_header(str(k)): v for k, v in value.items()})
