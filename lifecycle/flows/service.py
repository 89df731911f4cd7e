"""Flows for the running system: load the configuration in force, trigger and advance on each
tick.

A broken file never silently changes what runs.  While ``segments.yaml``,
``policies.yaml`` or a flow file is invalid, its last valid version stays in force
(saved in the database by the scheduler: :mod:`lifecycle.flows.snapshots`); the
problem is logged once (again only if it changes), shown on ``/flows`` and
``/segments``, and ``/healthz`` says ``degraded`` until the file is fixed.  Flows are
checked against the segments in force, so a broken ``segments.yaml`` is one problem,
not one more for every flow that names a segment.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from weakref import WeakKeyDictionary

from pydantic import ValidationError
from sqlalchemy import Connection, Engine

from lifecycle.app import App
from lifecycle.flows import snapshots
from lifecycle.flows.dates import fire as fire_dates
from lifecycle.flows.definitions import Catalogue, Context, Flow, parse
from lifecycle.flows.engine import Policies, advance, exit_removed_steps
from lifecycle.flows.policies import FILE_NAME as POLICIES_FILE
from lifecycle.flows.policies import parse as parse_policies
from lifecycle.flows.states import forget_removed, not_live
from lifecycle.flows.triggers import dispatch
from lifecycle.mail.templates import CHECK_SECONDS, emails_in
from lifecycle.segments.service import SegmentsInForce, in_force
from lifecycle.yamlfile import InvalidFile, Problem, loads, read_text

log = logging.getLogger(__name__)
#: The problems logged already (each once, while it lasts).
_reported: set[str] = set()
#: Per database (its engine): the SHA-256 of the text of each file this process saved there,
#: by (kind, name) ...
_saved: WeakKeyDictionary[Engine, dict[tuple[str, str], str]] = WeakKeyDictionary()
#: ... and the step ids of each flow when this process last ended the enrollments on steps
#: that are gone.
_steps_seen: WeakKeyDictionary[Engine, dict[str, frozenset[str]]] = WeakKeyDictionary()


@dataclass(frozen=True)
class Notice:
    """An invalid configuration file, its problems, and what runs instead (in words)."""

    file: str
    problems: tuple[Problem, ...]
    instead: str
    #: The flow, when the file is a flow file.
    flow: str | None = None


@dataclass
class Configuration:
    """What runs: the flows, policies and segment names in force, the notices of invalid
    files, and the valid texts read (``(kind, name) -> text``) for the scheduler to save."""

    flows: dict[str, Flow]
    policies: Policies
    segments: set[str]
    notices: list[Notice] = field(default_factory=list)
    valid_texts: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def problems(self) -> list[Problem]:
        return [p for n in self.notices for p in n.problems]


def _since(saved_at: datetime | None) -> str:
    when = f" (saved {saved_at:%Y-%m-%d %H:%M} UTC)" if saved_at is not None else ""
    return f"its last valid version{when} stays in force"


def configuration(app: App) -> Configuration:
    """Read segments.yaml, policies.yaml and every flow file; the configuration in force.

    Each problem is logged once (as an error) while it lasts."""
    notices: list[Notice] = []
    texts: dict[tuple[str, str], str] = {}
    segments = _segments(app, notices, texts)
    policies = _policies(app, notices, texts)
    context = Context(_emails(app.settings.templates_dir), segments)
    flows: dict[str, Flow] = {}
    folder = app.settings.flows_dir
    skip = {app.settings.segments_file.name, "segments.yaml", POLICIES_FILE}
    for path in sorted(folder.glob("*.yaml")):
        if path.name in skip:
            continue
        flow, text, problems = _flow_file(path, context)
        if flow is not None and text is not None:
            flows[path.stem] = flow
            texts[(snapshots.FLOW, path.stem)] = text
            continue
        kept = snapshots.recall_apart(app.engine, snapshots.FLOW, path.stem)
        instead = "the flow does not run: no valid version of it was ever saved"
        if kept is not None:
            try:
                flows[path.stem] = parse(loads(kept[0], str(path)), context, path.stem)
                instead = f"{_since(kept[1])} (its enrolled customers go on)"
            except InvalidFile:
                instead = ("the flow does not run: its last valid version no longer passes "
                           "the checks either")
        notices.append(Notice(str(path), tuple(problems), instead, path.stem))
    _log(notices)
    return Configuration(flows, policies, segments, notices, texts)


#: The emails of each templates folder, with when (monotonic seconds) it was last looked at.
_emails_seen: dict[Path, tuple[float, set[str]]] = {}
#: Each flow file as last read: (its stamp and what it was checked against, what it gave).
_flows_read: dict[Path, tuple[tuple[object, ...], tuple[Flow | None, str | None,
                                                          list[Problem]]]] = {}


def _emails(folder: Path) -> set[str]:
    """The templates folder's emails, looked at again after :data:`CHECK_SECONDS` (as the
    renderer does): pages and ``/healthz`` read the configuration on every request."""
    now = time.monotonic()
    kept = _emails_seen.get(folder)
    if kept is not None and now - kept[0] < CHECK_SECONDS:
        return kept[1]
    found = emails_in(folder)
    _emails_seen[folder] = (now, found)
    return found


def _flow_file(path: Path, context: Context) -> tuple[Flow | None, str | None, list[Problem]]:
    """(the flow, its text, no problems) or (None, None, its problems); parsed again only
    when the file (modification time, size) or what it is checked against changed."""
    try:
        info = path.stat()
        key: tuple[object, ...] = (info.st_mtime_ns, info.st_size,
                                   frozenset(context.templates), frozenset(context.segments))
    except OSError:
        key = ()
    kept = _flows_read.get(path)
    if kept is not None and key and kept[0] == key:
        return kept[1]
    try:
        text = read_text(path)
        found: tuple[Flow | None, str | None, list[Problem]] = (
            parse(loads(text, str(path)), context, path.stem), text, [])
    except OSError as exc:
        found = (None, None, [Problem(str(path), 1, 1, exc.strerror or str(exc))])
    except InvalidFile as exc:
        found = (None, None, list(exc.problems))
    _flows_read[path] = (key, found)
    return found


def _segments(app: App, notices: list[Notice], texts: dict[tuple[str, str], str]) -> set[str]:
    try:
        found: SegmentsInForce = in_force(app)
    except InvalidFile as exc:
        notices.append(Notice(str(app.settings.segments_file), tuple(exc.problems),
                              "no segments: no valid version of the file was ever saved"))
        return set()
    if found.problems:
        notices.append(Notice(str(app.settings.segments_file), tuple(found.problems),
                              _since(found.saved_at)))
    elif found.text is not None:
        texts[(snapshots.SEGMENTS, snapshots.SEGMENTS)] = found.text
    return set(found.definitions.all_names())


def _policies(app: App, notices: list[Notice], texts: dict[tuple[str, str], str]) -> Policies:
    path = app.settings.flows_dir / POLICIES_FILE
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return Policies()
    policies, text, problems, saved_at, valid = _policies_file(app, path, stamp)
    if text is not None:
        texts[(snapshots.POLICIES, snapshots.POLICIES)] = text
    if problems:
        notices.append(Notice(str(path), problems, _since(saved_at) if valid else
                              "the default policies apply: no valid version was ever saved"))
    return policies


@functools.lru_cache(maxsize=16)
def _policies_file(app: App, path: Path, _stamp: int) -> tuple[
        Policies, str | None, tuple[Problem, ...], datetime | None, bool]:
    """(policies in force, the valid text, problems, when the version in force was saved,
    whether a valid version is in force), read again only when the file changes."""
    try:
        text = read_text(path)
        located = loads(text, str(path))
        try:
            return parse_policies(located.data), text, (), None, True
        except ValidationError as exc:
            raise InvalidFile(located.problems_from(exc)) from None
    except OSError as exc:
        problems: tuple[Problem, ...] = (Problem(str(path), 1, 1, exc.strerror or str(exc)),)
    except InvalidFile as exc:
        problems = tuple(exc.problems)
    kept = snapshots.recall_apart(app.engine, snapshots.POLICIES, snapshots.POLICIES)
    if kept is not None:
        try:
            return parse_policies(loads(kept[0], str(path)).data), None, problems, kept[1], True
        except (InvalidFile, ValidationError):
            pass  # the saved text no longer passes this version's checks
    return Policies(), None, problems, None, False


def _log(notices: list[Notice]) -> None:
    """Log each problem once while it lasts; a problem that went and came back is logged
    again."""
    now = set()
    for notice in notices:
        for problem in notice.problems:
            now.add(str(problem))
            if str(problem) not in _reported:
                _reported.add(str(problem))
                log.error("A configuration file has a problem; %s: %s", notice.instead, problem)
    gone = {Path(problem.split(":", 1)[0]).name for problem in _reported - now}
    fixed = gone - {Path(problem.split(":", 1)[0]).name for problem in now}
    for name in sorted(fixed):
        log.info("The configuration file %s has no problem any more; it is in force as it is.",
                 name)
    _reported.intersection_update(now)


def catalogue(app: App) -> Catalogue:
    """The flows in force (valid files, and the last valid version of invalid ones) and the
    problems of the files as they are."""
    found = configuration(app)
    return Catalogue(found.flows, found.problems)


def policies_of(app: App) -> Policies:
    """``flows/policies.yaml``; while it is invalid its last valid version, or the defaults if
    none was saved (each problem is logged when :func:`configuration` reads it)."""
    path = app.settings.flows_dir / POLICIES_FILE
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return Policies()
    return _policies_file(app, path, stamp)[0]


def flow_file_names(folder: Path) -> list[str]:
    """The names of the flow files in ``folder`` (``*.yaml`` but segments and policies)."""
    return [path.stem for path in sorted(folder.glob("*.yaml"))
            if path.name not in ("segments.yaml", "policies.yaml")]


def save_valid(conn: Connection, found: Configuration, now: datetime) -> dict[
        tuple[str, str], str]:
    """Keep the text of every valid file read as its last valid version (a text this process
    saved already is not looked at again); what was saved, for :data:`_saved`."""
    before = _saved.get(conn.engine, {})
    done = {}
    for (kind, name), text in found.valid_texts.items():
        sha = snapshots.digest(text)
        if before.get((kind, name)) == sha:
            continue
        if snapshots.remember(conn, kind, name, text, now):
            log.info("The valid version of %s is saved; it stays in force if the file "
                     "breaks.", f"the flow {name}" if kind == snapshots.FLOW else f"{name}.yaml")
        done[(kind, name)] = sha
    return done


def tick(app: App, policies: Policies | None = None) -> None:
    """Scheduler job: enrol from new touchpoints and dates, then advance due enrollments.

    Only live flows enrol, and only their enrollments advance (:mod:`lifecycle.flows.states`).
    """
    found = configuration(app)
    flows = found.flows
    policies = policies or found.policies
    now = app.clock.now()
    with app.engine.begin() as conn:
        for name in forget_removed(conn, flow_file_names(app.settings.flows_dir), now):
            _saved.get(app.engine, {}).pop((snapshots.FLOW, name), None)
        saved = save_valid(conn, found, now)
        held = not_live(conn, flows)
        # a changed step list (README, How flows run): checked once per change and process
        seen = _steps_seen.get(app.engine, {})
        changed = {name: frozenset(s.id for s in flow.steps) for name, flow in flows.items()}
        changed = {name: steps for name, steps in changed.items() if seen.get(name) != steps}
        for name in changed:
            exit_removed_steps(conn, flows[name], now)
        enrolled = dispatch(conn, flows, now, held=held)
        enrolled += fire_dates(conn, flows, now, app.settings.timezone, held=held)
    _steps_seen.setdefault(app.engine, {}).update(changed)  # both once committed
    _saved.setdefault(app.engine, {}).update(saved)
    with app.engine.begin() as conn:
        report = advance(conn, flows, now, policies=policies,
                         default_tz=app.settings.timezone,
                         notify_offers=app.settings.offer_webhook_url is not None,
                         held=held)
    if enrolled or report.advanced:
        log.info("Flows: %d enrolled, %d enrollments advanced, %d mails written, %d capped.",
                 enrolled, report.advanced, report.mails, report.capped)
