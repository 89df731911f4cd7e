"""``lifecycle demo``: the embedded default with a sample shop, running live (:mod:`lifecycle.demo`)."""

from __future__ import annotations

import gc
import logging
import os
from datetime import datetime

import click

from lifecycle.app import App
from lifecycle.cli.base import (
    Failure,
    cli,
    host_option,
    load_app,
    port_option,
)
from lifecycle.cli.sample import load_sample
from lifecycle.demo.stage import DEMO_STAFF, HOURS_PER_SECOND

#: (shop hours after the start, what appears then), for the printed expectations.
EXPECT = ((2.5, "thank-you mails, two hours after each order"),
          (36, "win-back mails for customers who pass 180 days without an order "
               "(the daily segment refresh finds them; sent at 10:00 their time)"),
          (48, "loyalty offers when a 4th order makes a customer loyal (or the refresh, VIP)"),
          (7 * 24 + 12, "feedback requests (NPS) a week after an order; answers follow"),
          (9 * 24, "review and referral asks to the promoters among them"),
          (22 * 24, "second-purchase nudges, three weeks after a first order"))


@cli.command("demo")
@host_option
@port_option
@click.option("--customers", default=2_000, show_default=True, type=click.IntRange(min=1),
              help="Size of the sample shop made on the first start.")
@click.option("--speed", default=HOURS_PER_SECOND, show_default=True,
              type=click.FloatRange(min=0.01, max=240),
              help="Hours of shop time per real second.")
@click.option("--seed", default=42, show_default=True, type=int,
              help="Seed of the sample shop, its live orders and its readers.")
@click.option("--seconds", type=click.FloatRange(min=0), help="Stop after this long.")
def demo(host: str, port: int, customers: int, speed: float, seed: int,
         seconds: float | None) -> None:
    """A sample shop, live: orders, mails, opens, replies and NPS answers on a fast clock.

    Runs the scheduler, the worker threads and the web app like `lifecycle run`,
    on a clock that runs SPEED hours of shop time each real second, while the
    shop's customers order and read their mail.
    """
    from sqlalchemy import func, select, update

    from lifecycle.apikeys import create_key
    from lifecycle.clock import FastClock
    from lifecycle.demo.audience import Audience
    from lifecycle.demo.doors import HttpDoors, webhook_key
    from lifecycle.demo.shop import LiveShop, history_shape
    from lifecycle.demo.show import Simulation, run_demo
    from lifecycle.demo.stage import (
        demo_login,
        demo_overrides,
        demo_settings,
        has_staff,
        is_demo_database,
        resume_point,
        served_url,
    )
    from lifecycle.models import ApiKey, Customer
    from lifecycle.tasks import heartbeat

    setup = load_app()
    if not (os.environ.get("LIFECYCLE_LOG_LEVEL") or "").strip():
        logging.getLogger().setLevel(logging.WARNING)  # the status lines say what happens
    if setup.settings.mail_transport == "sendgrid":
        raise Failure("the demo mails made-up customers: run it with the file transport (the "
                      "default) or smtp, not sendgrid.")
    setup.upgrade_database()
    with setup.engine.connect() as conn:
        known = conn.execute(select(func.count()).select_from(Customer)).scalar_one()
        ours = is_demo_database(conn)
    if known and not ours:
        raise Failure(f"{setup.database_label()} holds {known} customers and was not made by "
                      "`lifecycle demo`: the demo's fast clock and made-up orders are not for "
                      "a real shop (use `lifecycle run`), or point LIFECYCLE_DATABASE_URL "
                      "elsewhere (an empty folder) for the demo.")
    if not known:
        with setup.engine.begin() as conn:  # marked first: an interrupted load is tried again
            heartbeat.record(conn, "demo", setup.clock.now(), {"speed": speed * 3600})
        shop_url = demo_overrides(host, port).get(
            "LIFECYCLE_SHOP_URL", ("shop_url", setup.settings.shop_url))[1]
        load_sample(setup, customers, 2.5, 3.0, seed, setup.clock.now(), None,
                    **history_shape(shop_url))  # the demo's markets, currencies and product links
    else:
        click.echo(f"The database already holds {known} customers; no sample data added "
                   "(an earlier demo made them).")
    login = demo_login(setup)
    with setup.engine.begin() as conn:  # for the audience's reviews and referrals; an earlier
        # start's key is revoked, so the key list holds one live demo key however often it starts
        conn.execute(update(ApiKey).where(ApiKey.name == DEMO_KEY, ApiKey.revoked_at.is_(None))
                     .values(revoked_at=setup.clock.now()))
        api_key = create_key(conn, DEMO_KEY, ["reviews:write", "referrals:write"],
                             setup.clock.now())
    with setup.engine.connect() as conn:
        start = resume_point(conn, setup.clock.now())
        staff_known = has_staff(conn, DEMO_STAFF)
    signing_key, public_key = webhook_key()
    factor = speed * 3600
    settings = demo_settings(setup.settings, host=host, port=port, speed=factor,
                             webhook_public_key=public_key)
    label = setup.database_label()
    setup.close()

    app = App(settings, clock=FastClock(start, factor))
    url = served_url(host, port)
    _introduce(app, label, url, login, staff_known, start, speed, known > 0,
               demo_overrides(host, port))
    shop = LiveShop(app, seed)
    audience = Audience(HttpDoors(url, app.keys.current, signing_key, api_key), since=start,
                        seed=seed, order=shop.plan)
    simulation = Simulation(app, shop, audience, click.echo)
    click.echo("Press Ctrl-C to stop." if seconds is None else f"Running for {seconds:g} s.")
    try:
        run_demo(app, host, port, simulation, seconds=seconds)
    finally:
        app.close()
    # Everything has stopped.  The interpreter's last collections at exit would walk every
    # object the run made (a second or more) after the line below said so: they are left out.
    gc.freeze()
    click.echo("Lifecycle stopped.")


def _introduce(app: App, database: str, url: str, login: tuple[str, str] | None,
               staff_known: bool, start: datetime, speed: float, again: bool,
               overrides: dict[str, tuple[str, str]]) -> None:
    """Print what runs, where to look and what to expect when."""
    settings = app.settings
    echo = click.echo
    echo(f"Database:  {database}")
    if settings.mail_transport == "file":
        settings.outbox_dir.mkdir(parents=True, exist_ok=True)
        echo(f"Mail:      .eml files in {settings.outbox_dir.resolve()}"
             "/<the customer's date>/ (links in them lead to this web app)")
    else:
        echo(f"Mail:      to {settings.smtp_url}")
    echo(f"Web app:   {url}/  (health: {url}/healthz)")
    if login:
        echo(f"Staff:     {url}/login as {login[0]}, password {login[1]} "
             "(an admin account made for this demo database)")
    elif staff_known:
        echo(f"Staff:     {url}/login as {DEMO_STAFF} with the password printed at the first "
             f"start; for a new one: uv run lifecycle staff password {DEMO_STAFF} --generate")
    else:
        echo("Staff:     log in with your staff account; for a new password: "
             "uv run lifecycle staff password EMAIL --generate")
    per_day = 24 / speed
    echo(f"Clock:     shop time {'resumes' if again else 'starts'} at {start:%Y-%m-%d %H:%M} UTC "
         f"and runs {speed * 3600:,.0f} times as fast as real time: {speed:g} hours a second, "
         f"a day every {per_day:.3g} s, a month every {30 * per_day:.3g} s.")
    echo("           The scheduler, flow engine, workers and pages run on it: flow waits, quiet "
         "hours (each customer's night), the frequency cap and the daily segment refresh "
         "pass in seconds.")
    echo("           The database runs on this clock, months ahead of real time after a few "
         "minutes: explore it through this web app while the demo runs (other `lifecycle` "
         "commands and `lifecycle web` read it on the real clock and warn about it).")
    echo(f"           A scheduled mail waits {2 / speed:.2g} s for its 2 shop hours at this speed; to "
         "pause or resume one (a customer's page, upcoming mails), run the demo slowly: "
         "uv run lifecycle demo --speed 0.02 (72 shop seconds a second: a thank-you mail "
         "waits about 100 s).")
    if overrides:
        echo("Settings:  for this run the demo sets "
             + ", ".join(f"{name}={value!r}" for name, (_, value) in overrides.items())
             + " (set them in the environment to use yours; `lifecycle config` shows the "
             "environment's, not these).")
    echo("Shop:      new and returning customers order through the live order path (as "
         "POST /api/v1/orders); they read their mail: deliveries, opens and clicks come in as "
         "signed SendGrid events, replies through Inbound Parse, NPS answers through the "
         "mail's links, some unsubscribe, some who click an offer order, and some who are asked "
         "for a review or a referral post one to the ingest API (POST /api/v1/reviews, "
         "/api/v1/referrals, with an API key the demo made for itself).")
    echo("Expect:")
    for hours, what in EXPECT:
        echo(f"  after about {max(1, round(hours / speed)):>3} s: {what}")
    echo(f"See:       {url}/flows/NAME (results per step: sent, delivered, opens, clicks, "
         f"replies, conversions), {url}/segments (sizes by day), {url}/insights (repurchase "
         f"rate, cohorts, historic CLV, NPS per month, revenue by stage and by flow), "
         f"{url}/customers (search; each timeline shows orders, mails, events, replies and "
         "answers).")


#: The name of the API key each start of the demo makes for its audience.
DEMO_KEY = "lifecycle demo: the audience's reviews and referrals"
