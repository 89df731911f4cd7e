"""``lifecycle campaign``: campaigns on the command line, and kept as reviewed files.

Every action runs through :class:`lifecycle.campaigns.service.Campaigns`, as the web app's do;
the person acting is ``--by EMAIL`` (recorded in the campaign's history), ``cli`` when not
given.  A refusal (a campaign that is not in the status the action needs, a changed file) is
one line on stderr and exit status 2; a definition with problems prints each problem and
exits with status 1.  Files: :mod:`lifecycle.campaigns.files`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
    Failure,
    cli,
    exit_with_problems,
    known_customer,
    load_app,
    parse_as_of,
    ready_app,
)

_F = TypeVar("_F", bound=Callable[..., Any])
#: Who acts on the command line when ``--by`` is not given (as the history records it).
CLI_ACTOR = "cli"
_LOCAL_TIME = re.compile(r"^\d{1,2}:\d{2}$")


def by_option(function: _F) -> _F:
    return click.option("--by", "by", default=CLI_ACTOR, show_default=True, metavar="EMAIL",
                        help="Who does this, as the campaign's history records it.")(function)


@cli.group("campaign")
def campaign() -> None:
    """Campaigns: one-off mails to segments (also kept as files in LIFECYCLE_CAMPAIGNS_DIR)."""


def _refused(exc: Exception) -> Failure:
    return Failure(f"{exc}.")


def _row(app: Any, name: str) -> Any:
    from lifecycle.campaigns.service import CampaignError, Campaigns

    with app.engine.connect() as conn:
        try:
            return Campaigns(conn).get(name)
        except CampaignError as exc:
            raise Failure(f"{exc}: `lifecycle campaign list` names them all.") from None


def _stored_spec(app: Any, row: Any) -> Any:
    """The campaign's stored definition checked against the templates and segments in force
    (its problems printed, exit 1, when one it names is gone)."""
    from lifecycle.campaigns.jobs import context_of, spec_of
    from lifecycle.yamlfile import InvalidFile

    try:
        return spec_of(row, context_of(app))
    except InvalidFile as exc:
        exit_with_problems(exc)


# -- files ---------------------------------------------------------------------------------
@campaign.command("validate")
@click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
def campaign_validate(path: Path | None) -> None:
    """Check campaign files (a file or a folder; default LIFECYCLE_CAMPAIGNS_DIR) against the
    templates and segments.yaml; print each problem as FILE:LINE:COLUMN: message and exit
    with status 1 if there is any.  Nothing is stored."""
    from lifecycle.campaigns.files import campaign_files, file_context, read_campaign
    from lifecycle.yamlfile import InvalidFile

    app = load_app()
    target = path or app.settings.campaigns_dir
    files = [target] if target.is_file() else campaign_files(target)
    context, problems = file_context(app.settings.templates_dir, app.settings.segments_file)
    shared = len(problems)  # of the templates folder or segments.yaml: every file's
    good, bad = [], 0
    for file in files:
        try:
            good.append(read_campaign(file, context)[0].name)
        except InvalidFile as exc:
            problems.extend(exc.problems)
            bad += 1
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        said = [f"{len(problems) - shared} in {bad} of {len(files)} campaign "
                f"file{'s' if len(files) != 1 else ''}"] if bad else []
        if shared:
            said.append(f"{shared} in the templates or segments.yaml they name")
        click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}: "
                   + "; ".join(said) + (f"; without problems: {', '.join(good)}" if good
                                        else "") + ".")
        raise SystemExit(1)
    click.echo(f"{len(good)} campaign file{'s' if len(good) != 1 else ''} without problems: "
               f"{', '.join(good) or '-'}.")


def _load(path: Path, by: str) -> None:
    from lifecycle.campaigns.files import store
    from lifecycle.campaigns.jobs import context_of
    from lifecycle.campaigns.service import CampaignError
    from lifecycle.yamlfile import InvalidFile

    app = ready_app()
    try:
        with app.engine.begin() as conn:
            done, spec = store(conn, path, context_of(app), by, app.clock.now())
    except InvalidFile as exc:
        exit_with_problems(exc)
    except CampaignError as exc:
        raise _refused(exc) from None
    said = {"created": f"Campaign {spec.name} is stored as a draft from {path}",
            "loaded again": f"Campaign {spec.name} (a draft) was loaded again from {path}",
            "unchanged": f"Campaign {spec.name} (a draft) already says what {path} says; "
                         "nothing changed"}[done]
    click.echo(f"{said}. `lifecycle campaign schedule {spec.name}` sends it as the file is "
               "now.")


@campaign.command("load")
@click.argument("name")
@by_option
def campaign_load(name: str, by: str) -> None:
    """Store LIFECYCLE_CAMPAIGNS_DIR/NAME.yaml as a draft, or load it again into its draft
    (NAME may also be the path of a file)."""
    app = load_app()
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = app.settings.campaigns_dir / f"{name}.yaml"
    if not path.is_file():
        raise Failure(f"no campaign file {path}: `lifecycle campaign validate` lists the "
                      "files it finds.")
    _load(path, by)


# -- create ----------------------------------------------------------------------------------
@campaign.command("create")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take the whole campaign from this file (named by it), as `load` does.")
@click.option("--name", help="The campaign's name (lower_case letters, digits, - and _).")
@click.option("--description", default="", help="What the campaign is, for the staff.")
@click.option("--kind", type=click.Choice(["marketing", "transactional"]), default="marketing",
              show_default=True, help="transactional: a service notice (no consent needed).")
@click.option("--template", help="The email it sends.")
@click.option("--variant", "variants", multiple=True,
              help="An A/B variant's email (give two or more, with --ab-share).")
@click.option("--segment", "segments", multiple=True, help="A segment of the audience "
              "(repeat for more: anyone in any of them).")
@click.option("--exclude", "exclude", multiple=True, help="Nobody in this segment (repeatable).")
@click.option("--where", help="A condition in the segment language, as YAML, e.g. "
              "\"{metric: {name: total_spend, op: '>=', value: 100}}\".")
@click.option("--schedule", default="now", show_default=True,
              help="now; a moment (ISO 8601, e.g. 2026-12-05T09:00:00Z); or HH:MM, that time "
                   "in each customer's own zone.")
@click.option("--per-hour", type=int, help="At most this many mails an hour.")
@click.option("--over", help="Spread the mails over this long, e.g. '6 hours'.")
@click.option("--ab-share", help="The part of the audience that tests the variants, e.g. 20%.")
@click.option("--winner-by", type=click.Choice(["opens", "clicks", "conversions"]),
              help="What picks the A/B winner.")
@click.option("--winner-after", help="When the winner goes to the rest, e.g. '4 hours'.")
@by_option
def campaign_create(file: Path | None, name: str | None, description: str, kind: str,
                    template: str | None, variants: tuple[str, ...], segments: tuple[str, ...],
                    exclude: tuple[str, ...], where: str | None, schedule: str,
                    per_hour: int | None, over: str | None, ab_share: str | None,
                    winner_by: str | None, winner_after: str | None, by: str) -> None:
    """Create a campaign as a draft: from a file (--file), or from the options.  A draft sends
    nothing until `lifecycle campaign schedule NAME`."""
    if file is not None:
        given = [option for option, value in (
            ("--name", name), ("--description", description), ("--template", template),
            ("--variant", variants), ("--segment", segments), ("--exclude", exclude),
            ("--where", where), ("--per-hour", per_hour), ("--over", over),
            ("--ab-share", ab_share), ("--winner-by", winner_by),
            ("--winner-after", winner_after)) if value]
        if given:
            raise Failure(f"--file takes the whole campaign from the file: leave out "
                          f"{', '.join(given)} (or write it into the file).")
        _load(file, by)
        return
    if not name:
        raise Failure("--name is missing (or give --file).")
    raw = _raw_from_options(name, description, kind, template, variants, segments, exclude,
                            where, schedule, per_hour, over, ab_share, winner_by, winner_after)
    _create(name, raw, by)


def _raw_from_options(name: str, description: str, kind: str, template: str | None,
                      variants: tuple[str, ...], segments: tuple[str, ...],
                      exclude: tuple[str, ...], where: str | None, schedule: str,
                      per_hour: int | None, over: str | None, ab_share: str | None,
                      winner_by: str | None, winner_after: str | None) -> dict[str, Any]:
    """The campaign in the shape of a file (:mod:`lifecycle.campaigns.spec`)."""
    from lifecycle.campaigns.files import stored_form
    from lifecycle.yamlfile import InvalidFile, loads

    if template and variants:
        raise Failure("give --template for one email or --variant for each of two or more, "
                      "not both.")
    if not template and not variants:
        raise Failure("--template (or --variant, twice or more) is missing: the email the "
                      "campaign sends.")
    if per_hour is not None and over is not None:
        raise Failure("give --per-hour or --over, not both.")
    raw: dict[str, Any] = {"kind": kind}
    if description:
        raw["description"] = description
    raw["send"] = ({"template": template} if template else
                   {"variants": [{"template": v} for v in variants]})
    audience: dict[str, Any] = {"segments": list(segments)}
    if exclude:
        audience["exclude"] = list(exclude)
    if where is not None:
        try:
            audience["where"] = stored_form(loads(where, "--where").data)
        except InvalidFile as exc:
            exit_with_problems(exc)
    raw["audience"] = audience
    text = schedule.strip()
    raw["schedule"] = ("now" if text == "now" else {"local_time": text}
                       if _LOCAL_TIME.match(text) else {"at": text})
    if per_hour is not None:
        raw["throttle"] = {"per_hour": per_hour}
    elif over is not None:
        raw["throttle"] = {"over": over}
    if ab_share or winner_by or winner_after:
        raw["ab_test"] = {key: value for key, value in (
            ("share", ab_share), ("winner_by", winner_by), ("after", winner_after)) if value}
    return raw


def _create(name: str, raw: dict[str, Any], by: str) -> None:
    from lifecycle.campaigns.jobs import context_of
    from lifecycle.campaigns.service import CampaignError, Campaigns
    from lifecycle.campaigns.spec import parse_spec
    from lifecycle.yamlfile import InvalidFile, Located

    app = ready_app()
    try:
        spec = parse_spec(Located("the options", raw, {}), name, context_of(app))
    except InvalidFile as exc:  # no lines to point at: each problem names its setting
        for problem in exc.problems:
            click.echo(f"the options: {problem.message}", err=True)
        raise SystemExit(1) from None
    try:
        with app.engine.begin() as conn:
            Campaigns(conn).create(spec, raw, by, "cli", app.clock.now())
    except CampaignError as exc:
        raise _refused(exc) from None
    click.echo(f"Campaign {name} is stored as a draft. `lifecycle campaign show {name}` shows "
               f"its audience; `lifecycle campaign schedule {name}` sends it.")


# -- reading ---------------------------------------------------------------------------------
def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment is not None else "-"


@campaign.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def campaign_list(as_json: bool) -> None:
    """Every campaign, newest first: its status, when it starts, its audience and mails."""
    from sqlalchemy import select

    from lifecycle.campaigns.model import Campaign

    app = ready_app()
    with app.engine.connect() as conn:
        rows = conn.execute(select(Campaign.__table__).order_by(
            Campaign.created_at.desc(), Campaign.id.desc())).all()
    if as_json:
        click.echo(json.dumps([{
            "campaign": r.name, "status": r.status, "kind": r.spec.get("kind", "marketing"),
            "starts_at": _iso(r.starts_at), "audience_size": r.audience_size,
            "mailed": r.mailed, "source": r.source, "created_by": r.created_by}
            for r in rows], indent=2))
        return
    if not rows:
        click.echo("No campaigns yet: `lifecycle campaign create` or `lifecycle campaign load` "
                   "makes one.")
        return
    table = Table(title=f"{len(rows)} campaign{'s' if len(rows) != 1 else ''}")
    for column in ("campaign", "status", "kind", "starts (UTC)", "audience", "mailed", "source"):
        table.add_column(column, justify="right" if column in ("audience", "mailed") else "left",
                         overflow="fold")
    for r in rows:
        table.add_row(r.name, r.status, str(r.spec.get("kind", "marketing")),
                      _when(r.starts_at), "-" if r.audience_size is None else str(r.audience_size),
                      "-" if r.mailed is None else str(r.mailed), r.source)
    Console(highlight=False).print(table)


def _results(conn: Any, app: Any, row: Any) -> Any:
    """The campaign's results per variant (:func:`lifecycle.campaigns.results.
    campaign_results`), conversions within LIFECYCLE_ATTRIBUTION_DAYS."""
    from lifecycle.campaigns.results import campaign_results

    return campaign_results(conn, row.id, timedelta(days=app.settings.attribution_days),
                            app.settings.currency, now=app.clock.now())


@campaign.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def campaign_show(name: str, as_json: bool) -> None:
    """NAME's definition, status and history; its audience (before the start: as it would be
    now, and who would be left out and why; after: as it was fixed at the start); and its
    results once it has started."""
    import yaml
    from sqlalchemy import select

    from lifecycle.campaigns.audience import count_audience, left_out_counts
    from lifecycle.campaigns.jobs import rules_of
    from lifecycle.campaigns.model import CampaignChange

    app = ready_app()
    row = _row(app, name)
    from lifecycle.campaigns.files import file_note, path_of

    fixed = row.started_at is not None
    results = None
    source_file = path_of(row.source)
    note = file_note(row)
    with app.engine.connect() as conn:
        history = conn.execute(select(CampaignChange.__table__).where(
            CampaignChange.campaign_id == row.id).order_by(CampaignChange.id)).all()
        if fixed:
            size, left = row.audience_size or 0, dict(left_out_counts(conn, row.id))
            results = _results(conn, app, row)
        elif row.status == "cancelled":
            size, left = None, {}
        else:
            size, left = count_audience(conn, _stored_spec(app, row), app.clock.now(),
                                        rules_of(app))
    if as_json:
        click.echo(json.dumps({
            "campaign": row.name, "status": row.status, "source": row.source,
            "created_by": row.created_by, "definition": row.spec,
            "starts_at": _iso(row.starts_at), "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at), "winner": row.winner,
            "file": None if source_file is None else {"path": str(source_file),
                                                      "as_loaded": note is None},
            "audience": {"fixed": fixed, "size": size, "mailed": row.mailed,
                         "left_out": left},
            "history": [{"at": h.changed_at.isoformat(), "action": h.action,
                         "status": h.status, "by": h.changed_by, "detail": h.detail}
                        for h in history],
            "results": None if results is None else _results_json(results)}, indent=2))
        return
    console = Console(highlight=False)
    console.print(f"{row.name}: {row.status} (from {row.source}, made by {row.created_by})"
                  + (f"; starts {_when(row.starts_at)} UTC" if row.starts_at and not fixed
                     else "") + ".", markup=False, soft_wrap=True)
    console.print(yaml.safe_dump(row.spec, sort_keys=False, allow_unicode=True).rstrip(),
                  markup=False)
    if note is not None:
        console.print(f"Its file: {note}" + (f"; `lifecycle campaign load {row.name}` loads "
                      "it again." if row.status == "draft" else "; what was scheduled goes "
                      "out."), markup=False, soft_wrap=True)
    if size is None:
        console.print("Audience: none (cancelled before it started).")
    else:
        mailed = size - sum(left.values())
        console.print(("Audience fixed at the start: " if fixed else "Audience if it started "
                       "now: ") + f"{size} customers, {mailed} to be mailed.", markup=False)
        table = Table("left out because", "customers", title="Left out")
        for reason, n in left.items():
            table.add_row(reason, str(n))
        console.print(table)
    changes = Table("when (UTC)", "action", "status", "by", "detail", title="History")
    for h in history:
        changes.add_row(_when(h.changed_at), h.action, h.status, h.changed_by, h.detail or "")
    console.print(changes)
    if fixed and results is not None:
        _print_results(console, results)


def _results_json(results: Any) -> dict[str, Any]:
    from lifecycle.campaigns.results import COLUMNS

    def row(r: Any, label: str | None) -> dict[str, Any]:
        return {"variant": label, **{c: r.counts.get(c, 0) for c in COLUMNS},
                "revenue": str(r.revenue), "currency": results.currency}

    return {"rows": [row(r, r.variant) for r in results.rows],
            "total": row(results.total, None), "winner": results.winner}


def _print_results(console: Console, results: Any) -> None:
    """One row per measure, one column per variant and the total: a campaign has few
    variants and many measures, so the table fits a terminal of 80 columns."""
    from lifecycle.campaigns.results import HEADINGS

    shown = [c for c in HEADINGS if c not in ("decided", "skipped")]
    columns = [*results.rows, results.total]
    labels = [r.variant or ("total" if r is results.total else "-") for r in columns]
    if len(results.rows) == 1 and results.rows[0].variant is None:
        columns, labels = [results.total], ["all"]
    table = Table("", *labels, title="Results")
    for c in shown:
        table.add_row(HEADINGS[c], *(str(r.counts.get(c, 0)) for r in columns))
    table.add_row(f"revenue ({results.currency})", *(str(r.revenue) for r in columns))
    console.print(table)


# -- preview and test ------------------------------------------------------------------------
@campaign.command("preview")
@click.argument("name")
@click.option("--customer", "customer_key", required=True,
              help="The customer's customer_id or email.")
@click.option("--as-of", "as_of", help="As of this date (ISO 8601); default now.")
def campaign_preview(name: str, customer_key: str, as_of: str | None) -> None:
    """Print the subject and text part of each of NAME's emails as one customer would get
    them (nothing is sent or stored; links are test links)."""
    from lifecycle.campaigns.preview import preview_mails

    app = ready_app()
    spec = _stored_spec(app, _row(app, name))
    moment = parse_as_of(app, as_of)
    console = Console(highlight=False)
    failed = False
    with app.engine.connect() as conn:
        customer = known_customer(conn, customer_key)
        for item in preview_mails(conn, app.settings, spec, customer, moment):
            label = f"variant {item.template}" if item.ab else item.template
            if item.mail is None:
                click.echo(f"{label}: {item.error}", err=True)
                failed = True
                continue
            console.rule(label)
            console.print(f"From: {app.settings.mail_from}\nTo: {customer.email}\n"
                          f"Subject: {item.mail.subject}\n", markup=False)
            console.print(item.mail.text or "(no text part)", markup=False)
    if failed:
        raise SystemExit(1)


@campaign.command("test")
@click.argument("name")
@click.option("--to-me", "to_me", required=True, metavar="EMAIL",
              help="Your staff account's email (a manager or admin): the test goes there.")
@click.option("--customer", "customer_key", required=True,
              help="Whose data fills the mail: a customer_id or email.")
@click.option("--variant", "only", help="Only this email of an A/B campaign (default: each).")
def campaign_test(name: str, to_me: str, customer_key: str, only: str | None) -> None:
    """Send yourself NAME's mail (each variant) with one customer's data: inert, as test
    sends are (test links, no timeline entry, nothing counted for the customer).

    A test goes only to an active staff account that may run campaigns (manager or admin),
    as on the web app: the command line cannot mail an arbitrary address."""
    import secrets

    from sqlalchemy import func, select

    from lifecycle.campaigns.preview import write_test_send
    from lifecycle.models import StaffUser
    from lifecycle.staff import allows

    app = ready_app()
    spec = _stored_spec(app, _row(app, name))
    templates = [v.template for v in spec.send.variants]
    if only is not None and only not in templates:
        raise Failure(f"the campaign {name!r} sends {', '.join(templates)}, not {only!r}.")
    address = to_me.strip().lower()
    nonce = secrets.token_urlsafe(12)
    with app.engine.begin() as conn:
        staff = conn.execute(select(StaffUser.id, StaffUser.email, StaffUser.role).where(
            func.lower(StaffUser.email) == address, StaffUser.is_active.is_(True))).first()
        if staff is None or not allows(staff.role, "manager"):
            raise Failure(f"{address} is not an active manager's or admin's staff account: a "
                          "test goes only to staff who may run campaigns (`lifecycle staff add "
                          f"{address} --role manager`).")
        customer = known_customer(conn, customer_key)
        now = app.clock.now()
        sent = [t for t in (templates if only is None else [only])
                if write_test_send(conn, spec, t, customer.id, staff.id, staff.email,
                                   f"{nonce}:{t}", now)]
    for template in sent:
        click.echo(f"A test mail of {template}, with the data of customer "
                   f"{customer.external_id}, waits in the outbox for {staff.email}; a running "
                   "worker sends it.")


# -- status changes --------------------------------------------------------------------------
def _act(name: str, action: Callable[[Any, Any, Any, datetime], Any]) -> tuple[Any, Any]:
    """Run ``action(campaigns, row, app, now)`` in one transaction; its answer and the row
    as it was.  A refusal is exit 2 with the reason."""
    from lifecycle.campaigns.service import CampaignError, Campaigns
    from lifecycle.yamlfile import InvalidFile

    app = ready_app()
    row = _row(app, name)
    try:
        with app.engine.begin() as conn:
            return action(Campaigns(conn), row, app, app.clock.now()), row
    except CampaignError as exc:
        raise _refused(exc) from None
    except InvalidFile as exc:
        exit_with_problems(exc)


@campaign.command("schedule")
@click.argument("name")
@by_option
def campaign_schedule(name: str, by: str) -> None:
    """Schedule the draft NAME to start at its schedule's moment; the audience is fixed then.
    A campaign loaded from a file is read again first, and refused if the file changed since
    it was loaded."""
    from lifecycle.campaigns.files import reviewed_spec
    from lifecycle.campaigns.jobs import context_of

    spec_seen: list[Any] = []

    def schedule(campaigns: Any, row: Any, app: Any, now: datetime) -> datetime:
        spec = reviewed_spec(row, context_of(app))
        spec_seen.append(spec)
        return campaigns.schedule(name, spec, by, now)

    starts, _row_was = _act(name, schedule)
    spec = spec_seen[0]
    if spec.schedule.local_time is not None:
        hour, minute = spec.schedule.local_time
        when = (f"now, and each customer gets it at {hour:02}:{minute:02} in their own time "
                "zone within 24 hours")
    elif spec.schedule.kind == "at":
        when = f"at {starts:%Y-%m-%d %H:%M} UTC"
    else:
        when = "now"
    click.echo(f"Campaign {name} is scheduled to start {when}: the scheduler fixes its "
               "audience when it starts.")


@campaign.command("pause")
@click.argument("name")
@by_option
def campaign_pause(name: str, by: str) -> None:
    """Hold NAME: before its start, the start waits; while sending, its unsent mails wait."""
    held, row = _act(name, lambda campaigns, row, app, now: campaigns.pause(name, by, now))
    if row.status == "scheduled":
        click.echo(f"Campaign {name} is paused: it does not start until it is resumed.")
    else:
        click.echo(f"Campaign {name} is paused: {held} unsent mails wait until it is resumed.")


@campaign.command("resume")
@click.argument("name")
@by_option
def campaign_resume(name: str, by: str) -> None:
    """Go on with the paused NAME: the mails the pause held go from now, at its rate."""
    def resume(campaigns: Any, row: Any, app: Any, now: datetime) -> int:
        return int(campaigns.resume(name, _stored_spec(app, row), by, now))

    released, row = _act(name, resume)
    if row.paused_from == "scheduled":
        click.echo(f"Campaign {name} is resumed: it is scheduled again and starts when due.")
    else:
        click.echo(f"Campaign {name} is resumed: {released} held mails go on.")


@campaign.command("cancel")
@click.argument("name")
@by_option
def campaign_cancel(name: str, by: str) -> None:
    """Cancel NAME: every mail of it not sent yet is withdrawn (sent ones stay sent)."""
    withdrawn, _row_was = _act(name, lambda campaigns, row, app, now:
                               campaigns.cancel(name, by, now))
    click.echo(f"Campaign {name} is cancelled: {withdrawn} unsent mails were withdrawn.")
