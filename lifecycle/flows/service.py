"""Flows for the running system: load the valid ones, trigger and advance on each tick."""

from __future__ import annotations

import logging

from lifecycle.app import App
from lifecycle.flows.dates import fire as fire_dates
from lifecycle.flows.definitions import Catalogue, Context, load_folder
from lifecycle.flows.engine import Policies, advance
from lifecycle.flows.policies import load_policies
from lifecycle.flows.triggers import dispatch
from lifecycle.segments.service import definitions
from lifecycle.yamlfile import InvalidFile

log = logging.getLogger(__name__)
_reported: set[str] = set()


def catalogue(app: App) -> Catalogue:
    """The valid flows; each problem of an invalid file is logged once, the rest keep running."""
    try:
        segments = set(definitions(app).all_names())
    except InvalidFile as exc:
        segments = set()
        problems = list(exc.problems)
    else:
        problems = []
    loaded = load_folder(app.settings.flows_dir, Context.from_folders(app.settings.templates_dir,
                                                                      segments))
    for problem in problems + loaded.problems:
        if str(problem) not in _reported:
            _reported.add(str(problem))
            log.error("A flow file has a problem and is skipped: %s", problem)
    return loaded


def policies_of(app: App) -> Policies:
    """``flows/policies.yaml``, or the defaults (logged once) when it has a problem."""
    try:
        return load_policies(app.settings.flows_dir)
    except InvalidFile as exc:
        for problem in exc.problems:
            if str(problem) not in _reported:
                _reported.add(str(problem))
                log.error("The policies file has a problem; the default policies apply: %s",
                          problem)
        return Policies()


def tick(app: App, policies: Policies | None = None) -> None:
    """Scheduler job: enrol from new touchpoints and dates, then advance due enrollments."""
    flows = catalogue(app).flows
    policies = policies or policies_of(app)
    now = app.clock.now()
    with app.engine.begin() as conn:
        enrolled = dispatch(conn, flows, now)
        enrolled += fire_dates(conn, flows, now, app.settings.timezone)
    with app.engine.begin() as conn:
        report = advance(conn, flows, now, policies=policies,
                         default_tz=app.settings.timezone,
                         notify_offers=app.settings.offer_webhook_url is not None)
    if enrolled or report.advanced:
        log.info("Flows: %d enrolled, %d enrollments advanced, %d mails written, %d capped.",
                 enrolled, report.advanced, report.mails, report.capped)
