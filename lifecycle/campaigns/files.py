"""Campaigns kept as reviewed files: ``campaigns/<name>.yaml`` (``LIFECYCLE_CAMPAIGNS_DIR``).

A shop that reviews its mail as it reviews code writes a campaign as a file, in the shape of
:mod:`lifecycle.campaigns.spec`, named by the campaign (``spring_collection.yaml`` is the
campaign ``spring_collection``).  The database holds the campaigns that exist; a file is
where one is written.  They meet at three moments, each a command:

- ``lifecycle campaign validate [PATH]`` checks files (every problem as FILE:LINE:COLUMN);
  nothing is stored.
- ``lifecycle campaign load NAME`` (or ``create --file PATH``) stores the file's campaign as a
  draft with the source ``file:<absolute path>``.  Loading it again replaces the draft's
  definition with what the file says now; only a draft changes (a scheduled or sent campaign
  keeps what it was scheduled with).
- ``lifecycle campaign schedule NAME`` reads the file again, checks it, and refuses when what
  it says differs from what was loaded (a change after the review): a reviewed file is what
  goes out.  From then on the stored definition goes out, whatever the file says later.

"What it says" is the file's data, not its text: a comment or a reformatting is no change.
Nothing happens to a file on its own: a new file is no campaign until it is loaded, and a
removed one removes no campaign (scheduling it is refused, naming the missing file).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from lifecycle.campaigns.model import Campaign, CampaignStatus
from lifecycle.campaigns.service import CampaignError, Campaigns
from lifecycle.campaigns.spec import CampaignSpec, parse_spec
from lifecycle.flows.definitions import Context
from lifecycle.yamlfile import InvalidFile, Problem, load

#: ``campaigns.source`` of a campaign loaded from a file: this, then the file's absolute path.
FILE_SOURCE = "file:"
#: Longest source the ``campaigns.source`` column holds.
MAX_SOURCE = Campaign.__table__.c.source.type.length or 300


def campaign_files(folder: Path) -> list[Path]:
    """The campaign files of ``folder`` (``*.yaml``), by name; none if it does not exist."""
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def file_context(templates_dir: Path, segments_file: Path) -> tuple[Context, list[Problem]]:
    """What a campaign file may name, from the files alone (no database): the templates and
    the segments of ``segments.yaml``; while that file has problems, segment names are not
    checked and its problems are returned (one problem, not one per campaign naming a
    segment), as ``lifecycle flows validate`` does."""
    from lifecycle.segments.definitions import load_definitions

    try:
        names = set(load_definitions(segments_file).all_names())
    except InvalidFile as exc:
        context = Context.from_folders(templates_dir, set())
        context.segments_known = False
        return context, list(exc.problems)
    return Context.from_folders(templates_dir, names), []


def stored_form(data: Any) -> Any:
    """``data`` as the ``spec`` column keeps it (JSON): an unquoted YAML date or time
    (``at: 2026-12-05T09:00:00Z``) becomes its ISO 8601 text."""
    def iso(value: Any) -> str:
        if isinstance(value, date | datetime):
            return value.isoformat()
        raise TypeError(f"{type(value).__name__} is not JSON")

    return json.loads(json.dumps(data, default=iso))


def read_campaign(path: Path, context: Context) -> tuple[CampaignSpec, dict[str, Any]]:
    """The campaign of the file at ``path`` (named by the file) and its data as stored;
    :class:`InvalidFile` with every problem at its line."""
    located = load(path)
    spec = parse_spec(located, path.stem, context)
    return spec, stored_form(located.data)


def source_of(path: Path) -> str:
    """``file:<absolute path>``: where a loaded campaign is read again when it is scheduled."""
    source = FILE_SOURCE + str(path.resolve())
    if len(source) > MAX_SOURCE:
        raise CampaignError(f"the path {path.resolve()} is too long to keep with the campaign "
                            f"(at most {MAX_SOURCE - len(FILE_SOURCE)} characters): move the "
                            "campaigns folder to a shorter path")
    return source


def path_of(source: str) -> Path | None:
    """The file a campaign was loaded from; None for one made on the web or the command line."""
    return Path(source[len(FILE_SOURCE):]) if source.startswith(FILE_SOURCE) else None


def store(conn: Connection, path: Path, context: Context, by: str,
          now: datetime) -> tuple[str, CampaignSpec]:
    """Store the file's campaign as a draft (``created``), or load it again into its draft
    (``loaded again``; ``unchanged`` if the draft says the same already), in ``conn``'s
    transaction.  :class:`InvalidFile` for a file with problems; :class:`CampaignError` when
    the name is taken by a campaign of another source, or the campaign is no longer a draft."""
    spec, raw = read_campaign(path, context)
    source = source_of(path)
    campaigns = Campaigns(conn)
    try:
        row = campaigns.get(spec.name)
    except CampaignError:
        campaigns.create(spec, raw, by, source, now)
        return "created", spec
    if row.source != source:
        where = path_of(row.source)
        raise CampaignError(
            f"a campaign named {spec.name!r} exists already, "
            + (f"loaded from {where}" if where else f"made on the {row.source}")
            + f": rename {path.name} to load it as another campaign")
    if row.status != CampaignStatus.DRAFT.value:
        raise CampaignError(f"the campaign {spec.name!r} is {row.status}: only a draft is "
                            "loaded again (what was scheduled stays as it was)")
    if row.spec == raw:
        return "unchanged", spec
    campaigns.edit(spec.name, raw, by, now)
    return "loaded again", spec


def file_note(row: Any) -> str | None:
    """For a campaign loaded from a file: None while the file says what was loaded, else
    what is different, in words (shown with the campaign; nothing else is checked here)."""
    path = path_of(row.source)
    if path is None:
        return None
    if not path.is_file():
        return f"{path} is gone"
    try:
        same = stored_form(load(path).data) == row.spec
    except InvalidFile:
        same = False
    return None if same else f"{path} says something else than what was loaded"


def reviewed_spec(row: Any, context: Context) -> CampaignSpec:
    """The definition to schedule ``row`` with.  For a campaign loaded from a file: the file
    read again and checked (:class:`InvalidFile`), and refused (:class:`CampaignError`) when
    it is gone or says something else than what was loaded; for others, the stored one."""
    from lifecycle.campaigns.jobs import spec_of

    path = path_of(row.source)
    if path is None:
        return spec_of(row, context)
    if not path.is_file():
        raise CampaignError(f"the campaign {row.name!r} was loaded from {path}, which is gone: "
                            "put the reviewed file back, or cancel the campaign")
    spec, raw = read_campaign(path, context)
    if raw != row.spec:
        raise CampaignError(f"{path} changed after the campaign {row.name!r} was loaded: load "
                            f"it again (`lifecycle campaign load {row.name}`) to schedule what "
                            "it says now, or put it back as it was; a reviewed file is what "
                            "goes out")
    return spec
