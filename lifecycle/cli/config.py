"""``lifecycle config``: the settings this process sees, and where each came from.

The rows come from :data:`lifecycle.config.SETTINGS`, so a new setting is shown
without touching this module.  Nothing secret is printed: ``secret`` settings
show only whether they are set, and the password (and any password-like query
parameter) of every URL is replaced by ``***`` (:func:`lifecycle.config.redact_url`).
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

from lifecycle.cli.base import cli, load_app
from lifecycle.config import SETTINGS, Setting, Settings, redact_url

#: Prefixes of the variables Lifecycle reads; others with these prefixes are likely typos.
PREFIXES = ("LIFECYCLE_", "SENDGRID_")


def shown_value(setting: Setting, value: Any, from_environment: bool) -> str:
    """How ``lifecycle config`` prints one setting's value: never a secret."""
    if setting.secret:
        if not value:
            return "(unset)"
        return "(set)" if from_environment else "(generated per process)"
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


def describe(settings: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    """Every setting with its shown value and source, the secret key's state, unknown variables."""
    rows = []
    for setting in SETTINGS:
        origin = source(setting, environ)
        rows.append({"name": setting.name,
                     "value": shown_value(setting, getattr(settings, setting.attribute),
                                          origin == "environment"),
                     "source": origin})
    known = {setting.name for setting in SETTINGS}
    key_set = bool((environ.get("LIFECYCLE_SECRET_KEY") or "").strip())
    return {
        "settings": rows,
        "secret_key": "set" if key_set else "generated per process",
        "unknown_variables": sorted(name for name in environ
                                    if name.startswith(PREFIXES) and name not in known),
    }


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_command(as_json: bool) -> None:
    """Show every setting this process sees and where it came from (secrets hidden)."""
    settings = load_app().settings
    described = describe(settings, os.environ)
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
    if described["secret_key"] == "set":
        console.print("LIFECYCLE_SECRET_KEY is set: signed links and sessions outlive this process.")
    else:
        console.print("LIFECYCLE_SECRET_KEY is not set: a random key is generated per process, "
                      "so links in sent mail and staff sessions stop working when it ends "
                      "(set it for anything but a try-out).")
    for name in described["unknown_variables"]:
        console.print(Text(f"{name} is set but is not a Lifecycle setting (a typo?); "
                           "it is ignored."))
