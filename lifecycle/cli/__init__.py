"""The ``lifecycle`` command line: one module per command group, all on :data:`cli`."""

from __future__ import annotations

import click

from lifecycle.cli import (  # noqa: F401  (each module adds its commands to ``cli``)
    apikeys,
    campaigns,
    catalog,
    config,
    customers,
    db,
    demo,
    flows,
    imports,
    insights,
    offers,
    predict,
    processes,
    sample,
    segments,
    staff,
    timeline,
    webhooks,
)
from lifecycle.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli.main(prog_name="lifecycle")
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing of the unfinished step was kept.", err=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
