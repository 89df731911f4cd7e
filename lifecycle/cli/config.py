"""``lifecycle config``: the settings this process sees."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from lifecycle.cli.base import (
    cli,
    load_app,
)
from lifecycle.config import SETTINGS


@cli.command("config")
def config_command() -> None:
    """Show the configuration read from the environment (secrets hidden)."""
    settings = load_app().settings
    table = Table("variable", "value", title="Lifecycle configuration")
    values: dict[str, Any] = {
        "LIFECYCLE_DATABASE_URL": settings.database_url.render_as_string(hide_password=True),
        "LIFECYCLE_BROKER_URL": settings.broker_url or "(in-process)",
        "LIFECYCLE_MAIL_TRANSPORT": settings.mail_transport,
        "LIFECYCLE_OUTBOX_DIR": settings.outbox_dir,
        "LIFECYCLE_SMTP_URL": settings.smtp_url,
        "SENDGRID_API_KEY": "(set)" if settings.sendgrid_api_key else "(unset)",
        "SENDGRID_API_HOST": settings.sendgrid_api_host,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": "(set)" if settings.sendgrid_webhook_public_key else "(unset)",
        "LIFECYCLE_SECRET_KEY": "(set)",
        "LIFECYCLE_BASE_URL": settings.base_url,
        "LIFECYCLE_SHOP_NAME": settings.shop_name,
        "LIFECYCLE_SHOP_URL": settings.shop_url,
        "LIFECYCLE_SHOP_ADDRESS": settings.shop_address or "(empty)",
        "LIFECYCLE_MAIL_FROM": settings.mail_from,
        "LIFECYCLE_TIMEZONE": settings.timezone,
        "LIFECYCLE_WORKER_THREADS": settings.worker_threads,
        "LIFECYCLE_TICK_SECONDS": settings.tick_seconds,
        "LIFECYCLE_FLOWS_DIR": settings.flows_dir,
        "LIFECYCLE_TEMPLATES_DIR": settings.templates_dir,
        "LIFECYCLE_SEGMENT_REFRESH_HOURS": settings.segment_refresh_hours,
        "LIFECYCLE_LOG_LEVEL": settings.log_level,
    }
    for setting in SETTINGS:
        table.add_row(setting.name, str(values[setting.name]))
    Console().print(table)
