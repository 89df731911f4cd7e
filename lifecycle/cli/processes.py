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


@cli.command("healthcheck")
@click.option("--kind", type=click.Choice(["worker", "scheduler"]), required=True,
              help="Which process of this host to check.")
@click.option("--max-age", type=click.FloatRange(min=1), default=None,
              help="Seconds a heartbeat may be old [default: what /healthz allows: four of "
                   "the process's heartbeat intervals].")
def healthcheck_command(kind: str, max_age: float | None) -> None:
    """Exit 0 if a process of ``--kind`` on this host is alive by its latest heartbeat (as
    ``/healthz`` judges it, or within ``--max-age`` seconds), else 1 with one line saying why
    (for a container's health check).

    Each worker and scheduler process records its own heartbeat from a thread every
    ``LIFECYCLE_HEARTBEAT_SECONDS``, so a passing check proves the process runs and reaches
    the database.
    """
    import socket

    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.clock import real_seconds
    from lifecycle.models import ProcessHeartbeat
    from lifecycle.tasks import heartbeat

    app = load_app()
    host = socket.gethostname()
    try:
        with app.engine.connect() as conn:
            row = conn.execute(select(ProcessHeartbeat.last_seen_at, ProcessHeartbeat.info)
                               .where(ProcessHeartbeat.kind == kind, ProcessHeartbeat.host == host)
                               .order_by(ProcessHeartbeat.last_seen_at.desc()).limit(1)).first()
    except SQLAlchemyError as exc:
        click.echo(f"Unhealthy: the database cannot be read "
                   f"({str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}).", err=True)
        raise SystemExit(1) from None
    finally:
        app.close()
    if row is None:
        click.echo(f"Unhealthy: no {kind} on {host} has recorded a heartbeat yet.", err=True)
        raise SystemExit(1)
    if row.info.get("stopped_at"):
        click.echo(f"Unhealthy: the latest {kind} on {host} stopped at "
                   f"{row.info['stopped_at']}.", err=True)
        raise SystemExit(1)
    now = app.clock.now()
    age = real_seconds(app.clock, now - row.last_seen_at)
    every = float(row.info.get("heartbeat_seconds") or app.settings.heartbeat_seconds)
    limit = heartbeat.MISSED_BEATS * every if max_age is None else max_age
    if age >= limit:
        click.echo(f"Unhealthy: the last heartbeat of a {kind} on {host} is {age:.0f} s old "
                   f"(more than {limit:g} s).", err=True)
        raise SystemExit(1)
    click.echo(f"Healthy: a {kind} on {host} recorded a heartbeat {age:.0f} s ago.")
