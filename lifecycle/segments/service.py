"""Segments for the rest of Lifecycle: load the definitions, refresh on schedule."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from lifecycle.app import App
from lifecycle.models import SegmentCalibration
from lifecycle.segments.compute import RefreshReport, refresh_all
from lifecycle.segments.definitions import Definitions, load_definitions
from lifecycle.yamlfile import InvalidFile

log = logging.getLogger(__name__)


#: Parsed definitions by file, with the (modification time, size) they were read at.
_loaded: dict[Path, tuple[tuple[int, int], Definitions]] = {}


def definitions(app: App) -> Definitions:
    """The segment definitions of ``LIFECYCLE_FLOWS_DIR/segments.yaml`` (InvalidFile if bad).

    Parsed again only when the file changed (its modification time or size): pages call
    this on every request, and parsing and checking the file takes about 13 ms.
    """
    return definitions_in(app.settings.segments_file)


def definitions_in(path: Path) -> Definitions:
    """The segment definitions of the file ``path``, cached like :func:`definitions`."""
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        return load_definitions(path)  # says what is wrong with the path
    kept = _loaded.get(path)
    if kept is not None and kept[0] == stamp:
        return kept[1]
    defs = load_definitions(path)
    _loaded[path] = (stamp, defs)
    return defs


def refresh_if_due(app: App) -> RefreshReport | None:
    """Scheduler job: a full refresh when the last one is older than the setting."""
    now = app.clock.now()
    with app.engine.begin() as conn:
        last = conn.execute(select(SegmentCalibration.computed_at)
                            .order_by(SegmentCalibration.id.desc()).limit(1)).scalar()
        if last is not None and now - last < timedelta(hours=app.settings.segment_refresh_hours):
            return None
        try:
            defs = definitions(app)
        except InvalidFile as exc:
            log.error("Segments are not refreshed: %s has problems:\n%s",
                      app.settings.segments_file, exc)
            return None
        return refresh_all(conn, defs, now, now)
