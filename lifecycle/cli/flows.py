"""``lifecycle flows``: validate, preview and simulate flows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
    Failure,
    cli,
    customer_by_id,
    exit_with_problems,
    load_app,
    parse_as_of,
    ready_app,
    segment_definitions,
)


@cli.group()
def flows() -> None:
    """Flows: the journeys in LIFECYCLE_FLOWS_DIR/*.yaml."""


@flows.command("validate")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
def flows_validate(path: Path | None) -> None:
    """Check flow files (a file or a folder; default LIFECYCLE_FLOWS_DIR), segments.yaml and
    policies.yaml.

    The templates the flows send are checked too: each locale folder (``de/``,
    ``de_AT/``) must be named as a locale and hold every part the template has, and
    every template is rendered in every locale it has for three customers of the
    database (or a built-in example customer): every variable it uses that is not
    there is an error with a "did you mean". Categories, SKUs, attributes and event
    names that no data has are warnings listing the known values.

    Prints every problem as FILE:LINE:COLUMN: message and exits with status 1 if
    there is any; warnings alone leave the status 0 (among them a flow file without
    ``status:``, which runs as live).
    """
    from lifecycle.flows.definitions import Context, load_flow, load_folder
    from lifecycle.flows.policies import FILE_NAME, load_policies
    from lifecycle.flows.template_locales import template_problems, templates_sent
    from lifecycle.segments.definitions import load_definitions
    from lifecycle.yamlfile import InvalidFile

    app = load_app()
    folder = path if path is None or path.is_dir() else path.parent
    folder = folder or app.settings.flows_dir
    problems = []
    segments_file = folder / "segments.yaml"
    if not segments_file.is_file():
        segments_file = app.settings.segments_file
    segments_known = True
    try:
        segment_names = set(load_definitions(segments_file).all_names())
    except InvalidFile as exc:  # its problems alone: no "unknown segment" for every flow
        problems.extend(exc.problems)
        segment_names, segments_known = set(), False
    try:
        load_policies(folder)
    except InvalidFile as exc:
        problems.extend(exc.problems)
    context = Context.from_folders(app.settings.templates_dir, segment_names)
    context.segments_known = segments_known
    if path is not None and path.is_file():
        names: list[str] = []
        loaded = []
        if path.name not in ("segments.yaml", FILE_NAME):
            try:
                loaded.append(load_flow(path, context))
                names.append(loaded[-1].name)
            except InvalidFile as exc:
                problems.extend(exc.problems)
    else:
        catalogue = load_folder(folder, context)
        problems.extend(catalogue.problems)
        names = sorted(catalogue.flows)
        loaded = list(catalogue.flows.values())
    problems.extend(template_problems(app.settings.templates_dir, templates_sent(loaded)))
    report = _content_and_data(app, loaded, segments_file)
    problems.extend(report.errors)
    for problem in problems:
        click.echo(str(problem), err=True)
    for flow in loaded:
        if flow.status is None:
            click.echo(f"{flow.file}: warning: no status; the flow runs as live. Write "
                       "`status: live` (or draft, paused) to say so.", err=True)
    for warning in report.warnings:
        click.echo(f"{warning.file}:{warning.line}:{warning.column}: warning: "
                   f"{warning.message}", err=True)
    count = len(report.warnings) + sum(flow.status is None for flow in loaded)
    warned = f", {count} warning{'s' if count != 1 else ''}" if count else ""
    note = (f" The data was not compared: {report.note}." if report.note else "")
    rendered = (f"Templates rendered for {report.rendered_for} in every locale they have."
                f"{note}")
    if problems:
        click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}{warned}. "
                   f"{rendered}")
        raise SystemExit(1)
    plural = "s" if len(names) != 1 else ""
    click.echo(f"{len(names)} flow{plural} without problems{warned}: "
               f"{', '.join(names) or '-'}. {rendered}")


def _content_and_data(app: Any, flows: list[Any], segments_file: Path) -> Any:
    """:func:`lifecycle.flows.checks.check` of ``flows``, reading the database when it can be
    read (only read: nothing is made, not even the secret key); else with the example
    customer and no data warnings, saying why."""
    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.flows.checks import check

    now = app.clock.now()
    url = app.settings.database_url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).is_file():
        report = check(app.settings, flows, None, now, segments_file)
        report.note = f"there is no database at {app.database_label()}"
        return report
    try:
        with app.engine.connect() as conn:
            if not _is_migrated(app, conn):
                report = check(app.settings, flows, None, now, segments_file)
                report.note = (f"the database {app.database_label()} is not migrated "
                               "(`lifecycle db upgrade`)")
                return report
            return check(app.settings, flows, conn, now, segments_file)
    except SQLAlchemyError as exc:
        report = check(app.settings, flows, None, now, segments_file)
        report.note = (f"cannot reach the database ({app.database_label()}): "
                       f"{str(exc.orig or exc).strip().splitlines()[0]}")
        return report


def _is_migrated(app: Any, conn: Any) -> bool:
    """Whether the schema is at the newest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(app.alembic_config()).get_current_head()
    return MigrationContext.configure(conn).get_current_revision() == head


@flows.command("preview")
@click.argument("flow")
@click.option("--customer", "customer_id", required=True, help="The customer's customer_id.")
@click.option("--as-of", "as_of", help="As of this date (ISO 8601); default now.")
@click.option("--html-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write each mail's HTML part here.")
def flows_preview(flow: str, customer_id: str, as_of: str | None, html_dir: Path | None) -> None:
    """Render every mail FLOW would send to one customer (nothing is sent or stored)."""
    from lifecycle.flows.preview import preview_mails

    app = ready_app()
    defs = segment_definitions(app)
    definition = _named_flow(app, defs, flow)
    moment = parse_as_of(app, as_of)
    console = Console(highlight=False)
    failed = False
    with app.engine.connect() as conn:
        customer = customer_by_id(conn, customer_id)
        for item in preview_mails(conn, app.settings, definition, customer, moment):
            mail = item.mail
            if mail is None:
                click.echo(f"{item.label}: {item.error}", err=True)
                failed = True
                continue
            console.rule(f"{item.label}: {item.template}")
            console.print(f"From: {app.settings.mail_from}\nTo: {customer.email}\n"
                          f"Subject: {mail.subject}\n", markup=False)
            console.print(mail.text or "(no text part)", markup=False)
            if html_dir is not None and mail.html is not None:
                html_dir.mkdir(parents=True, exist_ok=True)
                target = html_dir / f"{flow}-{item.step}-{item.template}.html"
                target.write_text(mail.html, encoding="utf-8")
                console.print(f"HTML part: {target}", markup=False)
    if failed:
        raise SystemExit(1)


def _named_flow(app: Any, defs: Any, name: str) -> Any:
    """The flow ``name`` of LIFECYCLE_FLOWS_DIR, checked; a clear error otherwise."""
    from lifecycle.flows.definitions import Context, load_flow
    from lifecycle.yamlfile import InvalidFile

    path = app.settings.flows_dir / f"{name}.yaml"
    if not path.is_file():
        raise Failure(f"no flow {name!r}: {path} does not exist.")
    try:
        return load_flow(path, Context.from_folders(app.settings.templates_dir,
                                                    set(defs.all_names())))
    except InvalidFile as exc:
        exit_with_problems(exc)


@flows.command("simulate")
@click.argument("flow")
@click.option("--from", "start", required=True, help="Start of the replay (ISO 8601 date).")
@click.option("--to", "end", required=True, help="End of the replay (ISO 8601 date).")
@click.option("--show", default=30, show_default=True, type=click.IntRange(min=0),
              help="How many mails to list (all are counted).")
@click.option("--segment-every", default="1 day", show_default=True,
              help="How often segments are refreshed in the replay (segment-triggered flows).")
@click.option("--open-rate", default="0%", show_default=True,
              help="Share of the mails opened: 40% or 0.4.")
@click.option("--click-rate", default="0%", show_default=True,
              help="Share of the mails clicked (each clicked mail is also opened, so at most "
                   "the open rate): 8% or 0.08.")
@click.option("--seed", default=1, show_default=True, type=int,
              help="Seed of the opens and clicks drawn: the same seed gives the same replay.")
def flows_simulate(flow: str, start: str, end: str, show: int, segment_every: str,
                   open_rate: str, click_rate: str, seed: int) -> None:
    """Replay stored history through FLOW: who would get which mail when (nothing is sent).

    With --open-rate and --click-rate each mail is opened and clicked at random (seeded),
    so branches and goals on opened and clicked take both paths; without them nobody
    opens or clicks.  The report counts the customers left out (no marketing consent,
    suppressed, frequency cap) and warns about branches and goals that cannot hold.
    """
    import time as clock_time
    from zoneinfo import ZoneInfo

    from lifecycle.durations import parse_duration
    from lifecycle.flows.policies import load_policies
    from lifecycle.flows.simulate import data_warnings_of, simulate
    from lifecycle.yamlfile import InvalidFile

    app = ready_app()
    defs = segment_definitions(app)
    definition = _named_flow(app, defs, flow)
    try:
        step = parse_duration(segment_every)
    except ValueError as exc:
        raise Failure(f"--segment-every: {exc}") from None
    try:
        policies = load_policies(app.settings.flows_dir)
    except InvalidFile as exc:
        exit_with_problems(exc)
    first, last = parse_as_of(app, start), parse_as_of(app, end)
    if last <= first:
        raise Failure("--to must be after --from.")
    opens, clicks = _rate("--open-rate", open_rate), _rate("--click-rate", click_rate)
    if clicks > opens:
        raise Failure(f"--click-rate ({click_rate}) cannot be higher than --open-rate "
                      f"({open_rate}): a clicked mail is also opened.")
    started = clock_time.perf_counter()
    quiet = logging.getLogger("lifecycle.segments")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one line per simulated day would drown the answer
    try:
        with app.engine.connect() as conn, conn.begin():  # read only
            result = simulate(conn, definition, defs, first, last, policies=policies,
                              default_tz=app.settings.timezone,
                              segment_every=(first + step) - first, open_rate=opens,
                              click_rate=clicks, seed=seed)
            about_data = data_warnings_of(conn, definition, app.settings.segments_file)
    finally:
        quiet.setLevel(level)
    seconds = clock_time.perf_counter() - started
    console = Console(highlight=False)
    console.print(f"Simulated {flow} from {first:%Y-%m-%d} to {last:%Y-%m-%d} in {seconds:.1f} s: "
                  f"{result.enrolled} enrolled, {len(result.mails)} mails, "
                  f"{result.capped} held back by the frequency cap. Nothing was sent or changed.")
    mails = len(result.mails)  # the mails sent, each drawn once
    if opens == 0:
        console.print("Nobody opens or clicks in this simulation (the open and click rates are "
                      "0): give --open-rate and --click-rate to draw opens and clicks.")
    else:
        console.print(f"Opens and clicks were drawn with seed {seed}: {result.opened} of {mails} "
                      f"mails opened ({_percent(result.opened, mails)}), {result.clicked} "
                      f"clicked ({_percent(result.clicked, mails)}).")
        if clicks == 0:
            console.print("Nobody clicks in this simulation (the click rate is 0).")
    if result.refreshes:
        console.print(f"Segments were refreshed {result.refreshes} times (every {segment_every}), "
                      f"as the scheduler does.")
    if result.mails and show:
        table = Table("due (UTC)", "their local time", "customer", "email", "step", "template",
                      title=f"First {min(show, len(result.mails))} of {len(result.mails)} mails")
        for due, customer_id, email, step_id, template, zone in result.mails[:show]:
            local = due.astimezone(ZoneInfo(zone))
            table.add_row(f"{due:%Y-%m-%d %H:%M}", f"{local:%a %H:%M} {zone}", customer_id,
                          email or "", step_id or "", template)
        console.print(table)
    counts = Table("step", "mails", title="Mails per step")
    for step_id, count in result.per_step.most_common():
        counts.add_row(step_id, str(count))
    console.print(counts)
    outcomes = Table("enrollments", "count", title="Where the enrollments ended")
    for outcome, count in result.outcomes.most_common():
        outcomes.add_row(outcome, str(count))
    console.print(outcomes)
    left_out = Table("why", "customers", title="Customers left out")
    for why in ("no marketing consent", "suppressed", "no email address", "frequency cap"):
        left_out.add_row(why, str(result.left_out[why]))
    console.print(left_out)
    if result.branches:
        branches = Table("branch", "condition held", "did not", title="Branches taken")
        for step_id, (held, not_held) in result.branches.items():
            branches.add_row(step_id, str(held), str(not_held))
        console.print(branches)
    for warning in result.warnings:
        console.print(f"Warning: {warning}", markup=False)
    for problem in about_data:  # as `flows validate` says them
        console.print(f"Warning: {problem}", markup=False, soft_wrap=True)


def _rate(option: str, value: str) -> float:
    """A share from ``40%`` or ``0.4``, 0 to 1; a clear error otherwise."""
    text = value.strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise Failure(f"{option}: {value!r} is not a rate; write it as 40% or 0.4.") from None
    if not 0 <= share <= 1:
        raise Failure(f"{option}: {value!r} is not between 0% and 100% (0 and 1).")
    return share


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@flows.command("show")
@click.argument("flow")
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 730),
              help="Count the mails decided in this many days (today included).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a tree.")
def flows_show(flow: str, days: int, as_json: bool) -> None:
    """Print FLOW as its page draws it: the trigger, goals and each step in the order of the
    file, where each goes, and each step's figures — customers waiting at it now, its mails
    sent, failed (with the most common reasons) and skipped (and why).  A file with problems
    is shown as written, each problem on its step, and the command exits with status 1."""
    import json
    from datetime import timedelta

    from rich.text import Text
    from rich.tree import Tree

    from lifecycle.flows.definitions import Context, load_flow
    from lifecycle.flows.diagram import (
        KIND_WORDS,
        boxes_of_file,
        boxes_of_flow,
        outline,
        problems_by_box,
        trigger_words,
    )
    from lifecycle.flows.figures import last_days, recent_failures, step_figures
    from lifecycle.flows.states import effective_statuses
    from lifecycle.yamlfile import InvalidFile, load

    app = ready_app()
    defs = segment_definitions(app)
    path = app.settings.flows_dir / f"{flow}.yaml"
    if not path.is_file():
        raise Failure(f"no flow {flow!r}: {path} does not exist.")
    problems: list[Any] = []
    placed: dict[str, list[Any]] = {}
    try:
        definition = load_flow(path, Context.from_folders(app.settings.templates_dir,
                                                          set(defs.all_names())))
    except InvalidFile as exc:
        problems = exc.problems
        try:
            located = load(path)
        except InvalidFile:
            located = None
        boxes = boxes_of_file(located) if located is not None else []
        if located is not None:
            placed = problems_by_box(located, boxes, problems)
        status, trigger = "invalid", None
    else:
        boxes = boxes_of_flow(definition)
        status, trigger = "", trigger_words(definition.trigger)  # in force: read below
    now = app.clock.now()
    start, end = last_days(now, days)
    with app.engine.connect() as conn:
        figures = step_figures(conn, flow, start, end)
        failures = recent_failures(conn, flow, now)
        if status != "invalid":  # the status in force: a manager's switch, else the file's
            status = effective_statuses(conn, [definition])[flow].status
    steps = outline(boxes, figures, placed)
    if as_json:
        click.echo(json.dumps({
            "flow": flow, "status": status, "trigger": trigger, "in_the_flow_now": figures.active,
            "from": start.isoformat(), "to": end.isoformat(),
            "failed_last_24_hours": {"mails": failures.count, "reasons": [
                {"reason": r, "mails": n} for r, n in failures.reasons]},
            "steps": steps, "problems": [str(p) for p in problems]}, indent=2))
    else:
        console = Console(highlight=False)
        console.print(Text(f"{flow}: {status}" + (f", when {trigger}" if trigger else "")
                           + f"; {figures.active} customers in it now. Mails decided "
                           f"{start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d} (UTC)."))
        if failures.count:
            why, n = failures.reasons[0]
            console.print(Text(f"{failures.count} mails of this flow failed in the last 24 hours; "
                               f"the most common reason: {why} ({n}).", style="bold red"))
        tree = Tree(Text(flow, style="bold"))
        for item in steps:
            head = KIND_WORDS.get(item["kind"], item["kind"]).split(" (")[0]
            if item["kind"] not in ("trigger", "goals", "end"):
                head += f" · {item['key']}"
            node = tree.add(Text(f"{head}: {item['words']}"))
            if item["edges"]:
                node.add(Text(", ".join(f"{e['label']} → {e['to']}" for e in item["edges"])))
            numbers = item["figures"] or {}
            shown = [f"{k.replace('_', ' ')} {v}" for k, v in numbers.items()
                     if not k.endswith("_reasons") and k not in (
                         "waiting", "sent", "failed", "skipped", "not_sent_yet")]
            if numbers.get("waiting"):
                shown.append(f"waiting now {numbers['waiting']}")
            if "sent" in numbers and (item["kind"] == "send" or numbers["sent"]
                                      or numbers["failed"] or numbers["skipped"]):
                shown += [f"{k} {numbers[k]}" for k in ("sent", "failed", "skipped")]
                if numbers["not_sent_yet"]:
                    shown.append(f"not sent yet {numbers['not_sent_yet']}")
            if shown:
                node.add(Text(" · ".join(shown)))
            for label in ("failed", "skipped"):
                for reason in numbers.get(f"{label}_reasons", []):
                    node.add(Text(f"{label} {reason['mails']}: {reason['reason']}",
                                  style="red" if label == "failed" else ""))
            for problem in item["problems"]:
                node.add(Text(f"problem: {problem}", style="bold red"))
        console.print(tree)
        for problem in problems if not steps else ():
            click.echo(str(problem), err=True)
    if problems:
        raise SystemExit(1)
