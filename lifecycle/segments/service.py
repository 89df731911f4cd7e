"""Segments for the rest of Lifecycle: load the definitions, refresh on schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from lifecycle.app import App
from lifecycle.models import SegmentCalibration
from lifecycle.segments.compute import RefreshReport, lock_full_refresh, refresh_all
from lifecycle.segments.definitions import Definitions, parse
from lifecycle.yamlfile import InvalidFile, Problem, loads, read_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentsInForce:
    """The segment definitions that run, and the problems of ``segments.yaml`` as it is.

    With problems, ``definitions`` is the last valid version, saved in the database
    (:mod:`lifecycle.flows.snapshots`) at ``saved_at``; without, ``text`` is the file's
    valid text (for the scheduler to save)."""

    definitions: Definitions
    problems: list[Problem] = field(default_factory=list)
    text: str | None = None
    saved_at: datetime | None = None


#: What each segments file gave, with the (modification time, size) it was read at.
_loaded: dict[Path, tuple[tuple[int, int] | None, SegmentsInForce]] = {}


def in_force(app: App) -> SegmentsInForce:
    """The segment definitions of ``LIFECYCLE_FLOWS_DIR/segments.yaml``; while the file is
    invalid, its last valid version saved in the database; InvalidFile if none was ever saved.

    Read again only when the file changed (its modification time or size): pages call
    this on every request, and parsing and checking the file takes about 13 ms.
    """
    path = app.settings.segments_file
    try:
        info = path.stat()
        stamp: tuple[int, int] | None = (info.st_mtime_ns, info.st_size)
    except OSError:
        stamp = None
    kept = _loaded.get(path)
    if kept is not None and stamp is not None and kept[0] == stamp:
        return kept[1]
    try:
        text = read_text(path)
        found = SegmentsInForce(parse(loads(text, str(path))), text=text)
    except OSError as exc:
        found = _last_valid(app, path, [Problem(str(path), 1, 1, exc.strerror or str(exc))])
    except InvalidFile as exc:
        found = _last_valid(app, path, exc.problems)
    _loaded[path] = (stamp, found)
    return found


def _last_valid(app: App, path: Path, problems: list[Problem]) -> SegmentsInForce:
    from lifecycle.flows.snapshots import SEGMENTS, recall_apart

    saved = recall_apart(app.engine, SEGMENTS, SEGMENTS)
    if saved is None:
        raise InvalidFile(problems)
    try:
        defs = parse(loads(saved[0], str(path)))
    except InvalidFile:  # the saved text no longer passes this version's checks
        raise InvalidFile(problems) from None
    return SegmentsInForce(defs, list(problems), saved_at=saved[1])


def definitions(app: App) -> Definitions:
    """The segment definitions in force (:func:`in_force`; InvalidFile if there are none)."""
    return in_force(app).definitions.for_shop(app.settings)


def refresh_if_due(app: App) -> RefreshReport | None:
    """Scheduler job: a full refresh when the last one is older than the setting."""
    with app.engine.begin() as conn:
        last = conn.execute(select(SegmentCalibration.computed_at)
                            .order_by(SegmentCalibration.id.desc()).limit(1)).scalar()
        if last is not None and app.clock.now() - last < timedelta(
                hours=app.settings.segment_refresh_hours):
            return None
        try:
            defs = definitions(app)
        except InvalidFile as exc:
            log.error("Segments are not refreshed: %s has problems:\n%s",
                      app.settings.segments_file, exc)
            return None
        # The clock is read under the full refresh's lock (SQLite: the transaction's write
        # lock): a customer refresh (an arriving order's) that commits while this one waits
        # must not lie after its ``as_of``, which would make it report only.
        lock_full_refresh(conn)
        now = app.clock.now()
        return refresh_all(conn, defs, now, now)
