"""``lifecycle config``: the settings this process sees, and where each came from.

The rows come from :data:`lifecycle.config.SETTINGS`, so a new setting is shown
without touching this module.  Nothing secret is printed: ``secret`` settings
show only whether they are set, and the password (and any password-like query
parameter) of every URL is replaced by ``***`` (:func:`lifecycle.config.redact_url`).
Where the secret key comes from is said apart: the environment, or the database
(kept there, or not made yet), never the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from lifecycle.app import App
from lifecycle.cli.base import cli, load_app
from lifecycle.config import SETTINGS, Setting, Settings, redact_url

#: Prefixes of the variables Lifecycle reads; others with these prefixes are likely typos.
PREFIXES = ("LIFECYCLE_", "SENDGRID_")


def shown_value(setting: Setting, value: Any, from_environment: bool) -> str:
    """How ``lifecycle config`` prints one setting's value: never a secret."""
    if setting.secret:
        if from_environment:
            return "(set)"
        return "(kept in the database)" if setting.name == "LIFECYCLE_SECRET_KEY" else "(unset)"
    if value is None:
        return "(unset)"
    if value == "":
        return "(empty)"
    if isinstance(value, URL):
        value = value.render_as_string(hide_password=False)
    if isinstance(value, Path):
        return str(value)
    return redact_url(str(value))


def source(setting: Setting, environ: Mapping[str, str]) -> str:
    """``environment`` when the variable holds a value, else ``default`` (blank counts as unset)."""
    return "environment" if (environ.get(setting.name) or "").strip() else "default"


def secret_key_state(app: App, environ: Mapping[str, str]) -> dict[str, Any]:
    """Where the secret key comes from (``environment`` or ``database``), its state there and
    how many earlier keys are accepted; never a key.  Reads the database, makes nothing."""
    previous = len(app.settings.secret_key_previous)
    if (environ.get("LIFECYCLE_SECRET_KEY") or "").strip():
        return {"source": "environment", "state": "set", "previous_keys": previous}
    from lifecycle.secret import stored_key

    try:
        with app.engine.connect() as conn:
            kept = stored_key(conn) is not None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return {"source": "database", "state": f"unreadable ({reason})",
                "previous_keys": previous}
    return {"source": "database", "state": "kept" if kept else "not made yet",
            "previous_keys": previous}


def describe(settings: Settings, environ: Mapping[str, str],
             secret_key: dict[str, Any]) -> dict[str, Any]:
    """Every setting with its shown value and source, the secret key's state
    (:func:`secret_key_state`), unknown variables."""
    rows = []
    for setting in SETTINGS:
        origin = source(setting, environ)
        rows.append({"name": setting.name,
                     "value": shown_value(setting, getattr(settings, setting.attribute),
                                          origin == "environment"),
                     "source": origin})
    known = {setting.name for setting in SETTINGS}
    return {
        "settings": rows,
        "secret_key": secret_key,
        "unknown_variables": sorted(name for name in environ
                                    if name.startswith(PREFIXES) and name not in known),
    }


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_command(as_json: bool) -> None:
    """Show every setting this process sees and where it came from (secrets hidden)."""
    app = load_app()
    try:
        described = describe(app.settings, os.environ, secret_key_state(app, os.environ))
    finally:
        app.close()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    console = Console(highlight=False)
    table = Table(title="Lifecycle configuration")
    table.add_column("variable", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", no_wrap=True)
    for row in described["settings"]:  # Text: a value is shown as it is, never as rich markup
        table.add_row(Text(row["name"]), Text(row["value"]), Text(row["source"]))
    console.print(table)
    key = described["secret_key"]
    if key["source"] == "environment":
        console.print("The secret key comes from the environment (LIFECYCLE_SECRET_KEY).")
    elif key["state"] == "kept":
        console.print("The secret key comes from the database: LIFECYCLE_SECRET_KEY is not "
                      "set, and every process on this database signs with the key kept there.")
    elif key["state"] == "not made yet":
        console.print("The secret key will come from the database: LIFECYCLE_SECRET_KEY is not "
                      "set, and the first process that needs a key makes one and keeps it there.")
    else:
        console.print(Text(f"The secret key would come from the database (LIFECYCLE_SECRET_KEY "
                           f"is not set), which cannot be read: {key['state']}."))
    if key["previous_keys"]:
        console.print(f"{key['previous_keys']} earlier key(s) from LIFECYCLE_SECRET_KEY_PREVIOUS "
                      "are still accepted for links and sessions they signed.")
    for name in described["unknown_variables"]:
        console.print(Text(f"{name} is set but is not a Lifecycle setting (a typo?); "
                           "it is ignored."))
