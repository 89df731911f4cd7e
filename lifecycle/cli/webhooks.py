"""``lifecycle webhooks``: the URLs to give SendGrid."""

from __future__ import annotations

import click

from lifecycle.cli.base import (
    cli,
    ready_app,
)


@cli.command("webhooks")
def webhooks_command() -> None:
    """The URLs to give SendGrid: Event Webhook and Inbound Parse."""
    from lifecycle.links import inbound_key

    app = ready_app()
    base = app.settings.base_url.rstrip("/")
    click.echo(f"Event Webhook (signed):  {base}/webhooks/sendgrid/events")
    click.echo(f"Inbound Parse:           {base}/webhooks/sendgrid/inbound?key="
               f"{inbound_key(app.keys)}")
