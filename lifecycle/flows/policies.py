"""``flows/policies.yaml``: the rules that hold across every flow.

The file is optional (the defaults below apply without it) and is checked
like the flows: every problem is reported as ``FILE:LINE:COLUMN: message``.
At run time an invalid file is logged and its last valid version stays in force
(the defaults if it never had one: :mod:`lifecycle.flows.service`), so a typo
never lifts the frequency cap.
"""

from __future__ import annotations

import functools
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from lifecycle.durations import parse_clock, parse_duration
from lifecycle.flows.engine import Policies
from lifecycle.flows.timing import QuietHours
from lifecycle.yamlfile import InvalidFile, load

FILE_NAME = "policies.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Cap(_Strict):
    max: int = Field(default=3, ge=1, description="Marketing mails per customer in the window.")
    per: str = Field(default="7 days", description="The rolling window, a duration.")

    @field_validator("per")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class _Quiet(_Strict):
    start: str = Field(default="21:00", alias="from")
    end: str = Field(default="08:00", alias="to")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any, info: ValidationInfo) -> Any:
        parse_clock(value, "from" if info.field_name == "start" else "to")
        return value


class _File(_Strict):
    frequency_cap: _Cap = _Cap()
    quiet_hours: _Quiet = _Quiet.model_validate({})
    same_day: Literal["priority", "allow"] = "priority"


def parse(data: Any) -> Policies:
    """Policies from a parsed document (raises pydantic's ValidationError)."""
    body = _File.model_validate(data if data is not None else {})
    start, end = parse_clock(body.quiet_hours.start), parse_clock(body.quiet_hours.end)
    window = parse_duration(body.frequency_cap.per)
    if not (window.years or window.months):  # a fixed length: keep it a plain timedelta
        window = timedelta(days=window.days, hours=window.hours, minutes=window.minutes)
    return Policies(cap=body.frequency_cap.max, cap_window=window,
                    quiet=QuietHours(time(*start), time(*end)),
                    one_per_day=body.same_day == "priority")


def load_policies(flows_dir: Path) -> Policies:
    """The policies of ``flows_dir``; the defaults when it has no policies file.

    Read again only when the file changes (every mail sent asks for them).
    """
    path = flows_dir / FILE_NAME
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return Policies()
    return _load_file(path, stamp)


@functools.lru_cache(maxsize=16)
def _load_file(path: Path, _stamp: int) -> Policies:
    located = load(path)
    try:
        return parse(located.data)
    except ValidationError as exc:
        raise InvalidFile(located.problems_from(exc)) from None

