"""Segments for the rest of Lifecycle: load the definitions, refresh on schedule."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from lifecycle.app import App
from lifecycle.models import SegmentCalibration
from lifecycle.segments.compute import RefreshReport, refresh_all
from lifecycle.segments.definitions import Definitions, load_definitions
from lifecycle.yamlfile import InvalidFile

log = logging.getLogger(__name__)


def definitions(app: App) -> Definitions:
    """The segment definitions of ``LIFECYCLE_FLOWS_DIR/segments.yaml`` (InvalidFile if bad)."""
    return load_definitions(app.settings.segments_file)


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
