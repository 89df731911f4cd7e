"""``lifecycle run``, ``worker``, ``scheduler`` and ``web``: the long-running processes."""

from __future__ import annotations

import click

from lifecycle.app import App
from lifecycle.cli.base import (
    Failure,
    cli,
    host_option,
    port_option,
    ready_app,
)


def _needs_broker(app: App, command: str) -> None:
    if app.settings.is_embedded:
        raise Failure(f"`lifecycle {command}` needs LIFECYCLE_BROKER_URL (redis:// or amqp://); "
                      "with the in-process broker use `lifecycle run`.")


@cli.command("run")
@host_option
@port_option
@click.option("--no-web", is_flag=True, help="Only the scheduler and the worker threads.")
def run_command(host: str, port: int, no_web: bool) -> None:
    """Scheduler, worker threads and web app in one process (the embedded default)."""
    from lifecycle.processes import run_all

    run_all(ready_app(), host, port, web=not no_web)


@cli.command("worker")
def worker_command() -> None:
    """Run dramatiq worker threads on the configured broker (production)."""
    from lifecycle.processes import run_worker

    app = ready_app()
    _needs_broker(app, "worker")
    run_worker(app)


@cli.command("scheduler")
def scheduler_command() -> None:
    """Run the scheduler that hands due work to the broker (production)."""
    from lifecycle.processes import run_scheduler

    app = ready_app()
    _needs_broker(app, "scheduler")
    run_scheduler(app)


@cli.command("web")
@host_option
@port_option
def web_command(host: str, port: int) -> None:
    """Serve the web app: timelines, flow results, webhooks, API."""
    from lifecycle.processes import run_web

    run_web(ready_app(), host, port)
