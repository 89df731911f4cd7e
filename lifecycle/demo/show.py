"""Running the demo: the real processes, with the shop and its audience alongside.

:func:`run_demo` runs what ``lifecycle run`` runs — the scheduler (its usual
jobs, :func:`lifecycle.demo.stage.demo_jobs`), the worker threads on the
in-process broker and the web app — on the demo's fast clock, plus a
:class:`Simulation` thread that moves the live shop and the audience along
the same clock and prints a status line now and then.  SIGINT (Ctrl-C) and
SIGTERM stop everything cleanly, as they stop ``lifecycle run``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select

from lifecycle.app import App
from lifecycle.demo.audience import Audience
from lifecycle.demo.shop import LiveShop
from lifecycle.demo.stage import DEMO_KIND, demo_jobs
from lifecycle.models import Message, MessageStatus, TriggerCursor
from lifecycle.processes import prepare, running_scheduler, running_worker, serve_web, stop_on_signals
from lifecycle.tasks import heartbeat

log = logging.getLogger(__name__)

#: Real seconds between two moves of the shop and the audience.
STEP_SECONDS = 0.2
#: Real seconds after the start of the first status line (later ones: every ``status_every``).
FIRST_STATUS_SECONDS = 4.0
#: Real seconds between two heartbeats of the demo (its clock position, for the next start).
HEARTBEAT_SECONDS = 2.0


class Simulation:
    """The live shop and the audience, moved along by the app's clock in a thread."""

    def __init__(self, app: App, shop: LiveShop, audience: Audience,
                 say: Callable[[str], None], status_every: float = 10.0) -> None:
        self.app = app
        self.shop = shop
        self.audience = audience
        self.say = say
        self.status_every = status_every
        self.started = app.clock.now()

    def _engine_on(self) -> bool:
        """Whether the flow engine has placed its trigger cursor (its first tick): orders
        from then on fire flows; earlier ones would count as history."""
        with self.app.engine.connect() as conn:
            return conn.execute(select(TriggerCursor.name)).first() is not None

    def run(self, stop: threading.Event) -> None:
        """Move the shop and the audience until ``stop``; the audience starts once the web
        app answers (its posts would be lost before), and ``stop`` is set before the web
        app closes (:func:`run_demo`)."""
        while not stop.is_set() and not (self._engine_on() and self.audience.ready()):
            stop.wait(STEP_SECONDS)
        if stop.is_set():
            return
        with self.app.engine.connect() as conn:
            self.shop.load(conn)
        self.shop.step(self.app.clock.now())
        beat = time.monotonic()
        status = beat - self.status_every + FIRST_STATUS_SECONDS
        while not stop.wait(STEP_SECONDS):
            now = self.app.clock.now()
            try:
                self.shop.step(now)
                with self.app.engine.connect() as conn:
                    self.audience.read(conn, now)
                self.audience.act(now)
                if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    beat = time.monotonic()
                    self.heartbeat(now)
                if time.monotonic() - status >= self.status_every:
                    status = time.monotonic()
                    self.say(self.status(now))
            except Exception:
                log.exception("The demo's shop or audience failed a step; it goes on.")
        now = self.app.clock.now()
        self.heartbeat(now)
        self.say(self.status(now))

    def heartbeat(self, now: datetime) -> None:
        with self.app.engine.begin() as conn:
            heartbeat.record(conn, DEMO_KIND, now, {"speed": getattr(self.app.clock, "speed", 1)})

    def status(self, now: datetime) -> str:
        """One line: shop time, orders, mails sent per flow, what the audience did."""
        with self.app.engine.connect() as conn:
            sent = Counter(dict(conn.execute(
                select(Message.flow, func.count()).where(
                    Message.status == MessageStatus.SENT.value, Message.sent_at >= self.started,
                    Message.flow.is_not(None))  # a manager's test send belongs to no flow
                .group_by(Message.flow)).all()))
        days = (now - self.started).total_seconds() / 86400
        mails = ", ".join(f"{flow} {n}" for flow, n in sorted(sent.items())) or "none yet"
        done = self.audience.done
        return (f"[shop time {now:%a %d %b %Y %H:%M} UTC, day {days:.0f}] "
                f"{self.shop.placed} orders ({self.shop.new_customers} new customers); "
                f"mails sent: {mails}; delivered {done.get('delivered', 0)}, "
                f"opened {done.get('open', 0)}, clicked {done.get('click', 0)}, "
                f"replies {done.get('reply', 0)}, NPS answers {done.get('answer', 0)}, "
                f"reviews {done.get('review', 0)}, referrals {done.get('referral', 0)}")


def run_demo(app: App, host: str, port: int, simulation: Simulation,
             seconds: float | None = None) -> None:
    """Scheduler, workers, web app and the simulation until a signal (or ``seconds``).

    A signal (or the timer) first stops the simulation, then the web app: the
    audience's last posts still find it listening.  Then the scheduler and the workers stop.
    """
    broker = prepare(app)
    with stop_on_signals() as stop, running_worker(app, broker), \
            running_scheduler(app, demo_jobs()):
        curtain = threading.Event()
        thread = threading.Thread(target=simulation.run, args=(curtain,), name="demo",
                                  daemon=True)
        thread.start()

        def stop_simulation() -> None:
            curtain.set()
            thread.join()

        try:
            if seconds is not None:
                timer = threading.Timer(seconds, stop.set)
                timer.daemon = True
                timer.start()
            serve_web(app, host, port, stop, before_exit=stop_simulation)
        finally:
            stop_simulation()
