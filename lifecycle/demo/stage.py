"""Setting up a demo run: its database, clock, settings, scheduler jobs and staff login.

A database made by ``lifecycle demo`` carries the demo's heartbeat (a
``process_heartbeats`` row of kind ``demo``, written while it runs): only
such a database gets the fast clock and the simulated shop and audience,
which would otherwise mail a real shop's customers and move its time.  Its
``last_seen_at`` is where the demo clock stood, so the next start resumes
there instead of going back in time.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, func, select

from lifecycle.app import App
from lifecycle.config import Settings
from lifecycle.models import Order, ProcessHeartbeat, StaffUser, Touchpoint
from lifecycle.scheduler import Job, default_jobs
from lifecycle.timeutil import as_utc

#: The admin account ``lifecycle demo`` makes in a database without staff.
DEMO_STAFF = "admin@demo.invalid"
#: The heartbeat kind that marks a database as the demo's.
DEMO_KIND = "demo"
#: Default speed of the demo clock: hours of shop time per real second.
HOURS_PER_SECOND = 12.0
#: How often the scheduler ticks in the demo, in real seconds (a few shop hours).
TICK_SECONDS = 0.2
#: Who the sample shop is, unless the environment names the shop.
SHOP_NAME = "Leaf & Bean"
MAIL_FROM = "Leaf & Bean <hello@leafandbean.example>"
SHOP_ADDRESS = "Teestraße 12, 10115 Berlin, Germany"
#: The sample shop's own site (its review page, its products): an address reserved for
#: examples (RFC 2606), so nobody mistakes it for a page of Lifecycle's.
SHOP_URL = "https://leaf-and-bean.example"
#: Hosts a browser cannot open: links name 127.0.0.1 instead.
ANY_HOST = ("0.0.0.0", "::", "")


def is_demo_database(conn: Connection) -> bool:
    return conn.execute(select(ProcessHeartbeat.name).where(
        ProcessHeartbeat.kind == DEMO_KIND).limit(1)).first() is not None


def resume_point(conn: Connection, real_now: datetime) -> datetime:
    """Where the demo clock starts: now, or later if an earlier run got further."""
    marks = [real_now]
    for column in (ProcessHeartbeat.last_seen_at, Touchpoint.recorded_at, Order.ordered_at):
        query = select(func.max(column))
        if column is ProcessHeartbeat.last_seen_at:
            query = query.where(ProcessHeartbeat.kind == DEMO_KIND)
        found = conn.execute(query).scalar()
        if found is not None:
            marks.append(as_utc(found))
    return max(marks)


def served_url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ANY_HOST else host}:{port}"


def demo_settings(settings: Settings, *, host: str, port: int, speed: float,
                  webhook_public_key: str, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a demo run.

    * The environment's settings :func:`demo_overrides` names are replaced.
    * Durations meant in real time — the send lease, the retry wait, the settle
      wait, the webhook's age limit — are multiplied by ``speed`` (the clock's
      factor), so they last as long in real time as they say; waits in shop
      time (flows, the segment refresh interval, attribution) are left alone.
    * The scheduler ticks every :data:`TICK_SECONDS`.
    * The Event Webhook checks the demo audience's signature (``webhook_public_key``).
    """
    changes = {field: value for _, (field, value)
               in demo_overrides(host, port, environ).items()}
    return dataclasses.replace(
        settings, tick_seconds=TICK_SECONDS,
        send_lease_seconds=settings.send_lease_seconds * speed,
        retry_base_seconds=settings.retry_base_seconds * speed,
        settle_seconds=settings.settle_seconds * speed,
        webhook_max_age=settings.webhook_max_age * speed,
        sendgrid_webhook_public_key=webhook_public_key, **changes)  # type: ignore[arg-type]


def demo_overrides(host: str, port: int,
                   environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """The settings a demo run sets itself, by environment variable: (field, value).

    * Links in mail use the address the web app serves on, unless
      ``LIFECYCLE_BASE_URL`` is set.
    * The shop is the sample's tea and coffee shop (:data:`SHOP_NAME`), its site the
      example address :data:`SHOP_URL` (where mails link to its review page), unless
      ``LIFECYCLE_SHOP_NAME``, ``LIFECYCLE_MAIL_FROM``, ``LIFECYCLE_SHOP_ADDRESS`` or
      ``LIFECYCLE_SHOP_URL`` say otherwise.
    """
    env = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}
    for name, field, value in (("LIFECYCLE_BASE_URL", "base_url", served_url(host, port)),
                               ("LIFECYCLE_SHOP_NAME", "shop_name", SHOP_NAME),
                               ("LIFECYCLE_SHOP_URL", "shop_url", SHOP_URL),
                               ("LIFECYCLE_MAIL_FROM", "mail_from", MAIL_FROM),
                               ("LIFECYCLE_SHOP_ADDRESS", "shop_address", SHOP_ADDRESS)):
        if not (env.get(name) or "").strip():
            found[name] = (field, value)
    return found


def demo_jobs() -> list[Job]:
    """The scheduler's usual jobs, the segment refresh looked at on every tick: it is due
    every ``LIFECYCLE_SEGMENT_REFRESH_HOURS`` of shop time, which passes in seconds."""
    jobs = default_jobs()
    for job in jobs:
        if job.name == "segments.refresh":
            job.every_seconds = 0.0
    return jobs


def demo_login(app: App) -> tuple[str, str] | None:
    """An admin account with a fresh random password when the database has no staff yet."""
    from lifecycle.staff import add_staff

    with app.engine.begin() as conn:
        if conn.execute(select(func.count()).select_from(StaffUser)).scalar_one():
            return None
        password = secrets.token_urlsafe(12)
        add_staff(conn, DEMO_STAFF, "admin", password, app.clock.now(), name="Demo admin")
    return DEMO_STAFF, password


def has_staff(conn: Connection, email: str) -> bool:
    return conn.execute(select(StaffUser.id).where(StaffUser.email == email)).first() is not None
