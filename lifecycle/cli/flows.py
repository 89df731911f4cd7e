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
    ``de_AT/``) must be named as a locale and hold every part the template has.

    Prints every problem as FILE:LINE:COLUMN: message and exits with status 1 if
    there is any; warns (status 0) of a flow file without ``status:``, which runs as live.
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
    try:
        segment_names = set(load_definitions(segments_file).all_names())
    except InvalidFile as exc:
        problems.extend(exc.problems)
        segment_names = set()
    try:
        load_policies(folder)
    except InvalidFile as exc:
        problems.extend(exc.problems)
    context = Context.from_folders(app.settings.templates_dir, segment_names)
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
    for problem in problems:
        click.echo(str(problem), err=True)
    for flow in loaded:
        if flow.status is None:
            click.echo(f"{flow.file}: warning: no status; the flow runs as live. Write "
                       "`status: live` (or draft, paused) to say so.", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{len(names)} flows without problems: {', '.join(names) or '-'}.")


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
def flows_simulate(flow: str, start: str, end: str, show: int, segment_every: str) -> None:
    """Replay stored history through FLOW: who would get which mail when (nothing is sent)."""
    import time as clock_time
    from zoneinfo import ZoneInfo

    from lifecycle.durations import parse_duration
    from lifecycle.flows.policies import load_policies
    from lifecycle.flows.simulate import simulate
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
    started = clock_time.perf_counter()
    quiet = logging.getLogger("lifecycle.segments")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one line per simulated day would drown the answer
    try:
        with app.engine.connect() as conn, conn.begin():  # read only
            result = simulate(conn, definition, defs, first, last, policies=policies,
                              default_tz=app.settings.timezone,
                              segment_every=(first + step) - first)
    finally:
        quiet.setLevel(level)
    seconds = clock_time.perf_counter() - started
    console = Console(highlight=False)
    console.print(f"Simulated {flow} from {first:%Y-%m-%d} to {last:%Y-%m-%d} in {seconds:.1f} s: "
                  f"{result.enrolled} enrolled, {len(result.mails)} mails, "
                  f"{result.capped} held back by the frequency cap. Nothing was sent or changed.")
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
