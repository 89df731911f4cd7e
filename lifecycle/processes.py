"""Long-running processes: worker, scheduler, web, and all three in one.

SIGTERM and Ctrl-C (SIGINT) stop each of them cleanly: the scheduler ends
its tick, the worker finishes the messages in hand (dramatiq requeues the
rest), the web server drains its connections.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import dramatiq
import uvicorn

from lifecycle import runtime
from lifecycle.app import App
from lifecycle.mail.readiness import warn_at_start
from lifecycle.scheduler import Job, Scheduler
from lifecycle.tasks import broker as broker_module
from lifecycle.tasks import heartbeat, load_actors

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_MS = 30_000


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Yield an event that SIGTERM or SIGINT sets; restore the old handlers after."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("Received %s; shutting down.", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare(app: App, process: str = "This process") -> dramatiq.Broker:
    """Make ``app`` the process's app and connect the configured broker; warn about settings
    real mail should not go out with (:mod:`lifecycle.mail.readiness`)."""
    runtime.set_app(app)
    warn_at_start(app.settings, process)
    app.keys  # noqa: B018 - the secret key mail is signed with (environment or database)
    load_actors()
    return broker_module.setup(app.settings.broker_url)


@contextmanager
def running_worker(app: App, broker: dramatiq.Broker) -> Iterator[dramatiq.Worker]:
    """dramatiq's worker threads on ``broker``, and this process's own heartbeat (a thread
    that records it every ``LIFECYCLE_HEARTBEAT_SECONDS``, :func:`heartbeat.beating`)."""
    worker = dramatiq.Worker(broker, worker_threads=app.settings.worker_threads)
    worker.start()
    log.info("The worker started with %d threads.", app.settings.worker_threads)
    try:
        with heartbeat.beating(app, "worker", {"threads": app.settings.worker_threads}):
            try:
                yield worker
            finally:  # before the heartbeat says it stopped: no message runs after that
                worker.stop(timeout=WORKER_STOP_TIMEOUT_MS)
    finally:
        broker.close()
        log.info("The worker stopped.")


@contextmanager
def running_scheduler(app: App, jobs: list[Job] | None = None) -> Iterator[Scheduler]:
    """The scheduler in a thread of its own, with ``jobs`` (default: the usual ones)."""
    scheduler = Scheduler(app, jobs)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,), name="scheduler", daemon=True)
    thread.start()
    try:
        yield scheduler
    finally:
        stop.set()
        thread.join(timeout=60)
        heartbeat.stopped(app, "scheduler")


class _Server(uvicorn.Server):
    """uvicorn's server, whose first SIGINT/SIGTERM sets ``stop`` (the watcher of
    :func:`serve_web` then closes it) instead of closing it at once; a second one is
    uvicorn's own (a third SIGINT forces the exit)."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event) -> None:
        super().__init__(config)
        self.stop = stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            super().handle_exit(sig, frame)
        else:
            self.stop.set()


def serve_web(app: App, host: str, port: int, stop: threading.Event,
              before_exit: Callable[[], None] | None = None) -> None:
    """Serve the web app until ``stop`` is set or a signal arrives (which sets ``stop``);
    ``before_exit`` runs, the server still listening, before it closes."""
    from lifecycle.web.app import create_app

    config = uvicorn.Config(create_app(app), host=host, port=port, log_level="warning",
                            lifespan="off")
    server = _Server(config, stop) if before_exit is not None else uvicorn.Server(config)

    def watch() -> None:
        stop.wait()
        if before_exit is not None:
            before_exit()
        server.should_exit = True

    log.info("The web app listens on http://%s:%d/.", host, port)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # uvicorn catches SIGINT/SIGTERM itself and re-raises them to our handler
    # when it has drained, which sets ``stop`` for the other parts.
    server.run()
    stop.set()


def freeze_imports() -> None:
    """Import what every mail runs, collect once, then move every object the process holds
    (its modules, classes, compiled SQL, settings: about 140,000 objects) into the collector's
    permanent generation (:func:`gc.freeze`).  A full collection walks every tracked object;
    in a worker nearly all of them live as long as the process, and walking them cost about
    20-30 µs per mail sent, amortised (measured in one process on 4,000 mails: the
    collector's time 84-88 -> 52-69 µs per mail).  What is frozen is never collected: the collection
    before it leaves nothing but live objects."""
    import lifecycle.flows.service  # noqa: F401 - read by every batch (policies)
    import lifecycle.mail.sending  # noqa: F401 - the mail actor imports it at its first mail

    gc.collect()
    gc.freeze()


def run_worker(app: App) -> None:
    broker = prepare(app, "The worker")
    freeze_imports()  # the worker process's own start: not run_all's, nor the tests'
    with stop_on_signals() as stop, running_worker(app, broker):
        stop.wait()


def run_scheduler(app: App) -> None:
    prepare(app, "The scheduler")
    with stop_on_signals() as stop, running_scheduler(app):
        stop.wait()


def run_web(app: App, host: str, port: int) -> None:
    runtime.set_app(app)
    warn_at_start(app.settings, "The web app")
    with stop_on_signals() as stop:
        serve_web(app, host, port, stop)


def run_all(app: App, host: str, port: int, web: bool = True,
            seconds: float | None = None) -> None:
    """Scheduler, worker threads and (optionally) the web app in this process.

    ``seconds`` stops it after that long, as a signal would.
    """
    broker = prepare(app, "lifecycle run")
    with stop_on_signals() as stop, running_worker(app, broker), running_scheduler(app):
        if seconds is not None:
            timer = threading.Timer(seconds, stop.set)
            timer.daemon = True
            timer.start()
        if web:
            serve_web(app, host, port, stop)
        else:
            stop.wait()
