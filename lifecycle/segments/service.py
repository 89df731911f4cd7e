"""Segments for the rest of Lifecycle: load the definitions, refresh on schedule."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from lifecycle.app import App
from lifecycle.models import SegmentCalibration
from lifecycle.segments.compute import RefreshReport, lock_full_refresh, refresh_all
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
    path = app.settings.segments_file
    try:
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        return load_definitions(path)  # says what is wrong with the path
    kept = _loaded.get(path)
    if kept is not None and kept[0] == stamp:
        return replace(kept[1], currency=app.settings.currency)
    defs = load_definitions(path)
    _loaded[path] = (stamp, defs)
    return replace(defs, currency=app.settings.currency)


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
