"""``lifecycle run``, ``worker``, ``scheduler`` and ``web``: the long-running processes."""

from __future__ import annotations

import click

from lifecycle.app import App
from lifecycle.cli.base import (
    Failure,
    cli,
    host_option,
    load_app,
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


#: How old a heartbeat may be for ``lifecycle healthcheck`` to pass (seconds): the age after
#: which ``/healthz`` shows a process as not alive (``lifecycle.web.app.STALE_AFTER``).
HEALTHY_WITHIN_SECONDS = 120


@cli.command("healthcheck")
@click.option("--kind", type=click.Choice(["worker", "scheduler"]), required=True,
              help="Which process of this host to check.")
@click.option("--max-age", type=click.FloatRange(min=1), default=HEALTHY_WITHIN_SECONDS,
              show_default=True, help="Seconds a heartbeat may be old.")
def healthcheck_command(kind: str, max_age: float) -> None:
    """Exit 0 if a process of ``--kind`` on this host recorded a heartbeat within ``--max-age``
    seconds, else 1 with one line saying why (for a container's health check).

    A worker's heartbeat is a message the scheduler sends through the broker, so a passing
    worker check proves the database, the broker and the worker; a scheduler records its own
    on every tick.
    """
    import socket

    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.clock import real_seconds
    from lifecycle.models import ProcessHeartbeat

    app = load_app()
    host = socket.gethostname()
    try:
        with app.engine.connect() as conn:
            last = conn.execute(select(func.max(ProcessHeartbeat.last_seen_at)).where(
                ProcessHeartbeat.kind == kind, ProcessHeartbeat.host == host)).scalar_one()
    except SQLAlchemyError as exc:
        click.echo(f"Unhealthy: the database cannot be read "
                   f"({str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}).", err=True)
        raise SystemExit(1) from None
    finally:
        app.close()
    if last is None:
        click.echo(f"Unhealthy: no {kind} on {host} has recorded a heartbeat yet.", err=True)
        raise SystemExit(1)
    age = real_seconds(app.clock, app.clock.now() - last)
    if age > max_age:
        click.echo(f"Unhealthy: the last heartbeat of a {kind} on {host} is {age:.0f} s old "
                   f"(more than {max_age:g} s).", err=True)
        raise SystemExit(1)
    click.echo(f"Healthy: a {kind} on {host} recorded a heartbeat {age:.0f} s ago.")
