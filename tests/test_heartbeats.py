"""Every worker process reports its own liveness on /healthz; rows of processes long gone go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import SystemClock
from lifecycle.config import load_settings
from lifecycle.models import ProcessHeartbeat
from lifecycle.scheduler import heartbeat_job
from lifecycle.tasks.heartbeat import PRUNE_AFTER
from lifecycle.web.app import create_app
from tests.private_redis import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent
BEAT = 1.0  # seconds between two heartbeats of each worker here


def wait_for(check: Callable[[], object], seconds: float, what: str) -> object:
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"gave up after {seconds} s: {what}"
        time.sleep(0.05)
    return value


def workers_on_healthz(web: TestClient) -> dict[int, bool]:
    """pid -> alive, for every worker row /healthz shows."""
    answer = web.get("/healthz")
    assert answer.status_code == 200
    return {int(p["name"].rpartition(":")[2]): p["alive"]
            for p in answer.json()["processes"] if p["kind"] == "worker"}


def test_two_worker_processes_each_show_alive_and_a_killed_one_shows_dead(
        fresh_database_url: str, redis_server: PrivateRedis, tmp_path: Path) -> None:
    url = make_url(fresh_database_url).render_as_string(hide_password=False)
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("LIFECYCLE_", "SENDGRID_"))},
           "LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_BROKER_URL": redis_server.url,
           "LIFECYCLE_HEARTBEAT_SECONDS": str(BEAT), "LIFECYCLE_WORKER_THREADS": "1",
           "LIFECYCLE_LOG_LEVEL": "WARNING", "LIFECYCLE_OUTBOX_DIR": str(tmp_path)}
    app = App(load_settings(env), clock=SystemClock())
    web = TestClient(create_app(app))
    # No scheduler runs: no broker message reaches either worker, each beats on its own.
    workers = [subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    pids = {w.pid for w in workers}
    try:
        wait_for(lambda: {pid for pid, alive in workers_on_healthz(web).items() if alive} == pids,
                 60, "both workers alive on /healthz")
        killed, survivor = workers
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        wait_for(lambda: workers_on_healthz(web).get(killed.pid) is False, 20,
                 "the killed worker shown dead")
        # Four missed beats make it dead; the other worker, beating on, stays alive meanwhile.
        for _ in range(4):
            assert workers_on_healthz(web) == {killed.pid: False, survivor.pid: True}
            time.sleep(BEAT)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            worker.wait(30)
        app.close()


def test_a_worker_stopped_cleanly_shows_dead_at_once_not_after_four_missed_beats(
        fresh_database_url: str, redis_server: PrivateRedis, tmp_path: Path) -> None:
    url = make_url(fresh_database_url).render_as_string(hide_password=False)
    env = {**{k: v for k, v in os.environ.items()
              if not k.startswith(("LIFECYCLE_", "SENDGRID_"))},
           "LIFECYCLE_DATABASE_URL": url, "LIFECYCLE_BROKER_URL": redis_server.url,
           "LIFECYCLE_HEARTBEAT_SECONDS": "60", "LIFECYCLE_WORKER_THREADS": "1",
           "LIFECYCLE_LOG_LEVEL": "WARNING", "LIFECYCLE_OUTBOX_DIR": str(tmp_path)}
    app = App(load_settings(env), clock=SystemClock())
    web = TestClient(create_app(app))
    worker = subprocess.Popen([sys.executable, "-m", "lifecycle", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: workers_on_healthz(web).get(worker.pid), 60, "the worker alive")
        healthy = subprocess.run([sys.executable, "-m", "lifecycle", "healthcheck", "--kind",
                                  "worker"], env=env, capture_output=True, text=True, timeout=60)
        assert healthy.returncode == 0, healthy.stderr
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        # Four missed beats would take four minutes here: the stop itself says it.
        assert workers_on_healthz(web) == {worker.pid: False}
        check = subprocess.run([sys.executable, "-m", "lifecycle", "healthcheck", "--kind",
                                "worker"], env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 1 and "stopped at" in check.stderr, check.stderr
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        app.close()


def test_the_scheduler_deletes_rows_of_workers_and_schedulers_gone_for_a_day_but_keeps_the_demos(
        app: App, web: TestClient) -> None:
    now = app.clock.now()
    long_gone, lately = now - PRUNE_AFTER - timedelta(minutes=1), now - timedelta(hours=1)
    with app.engine.begin() as conn:
        conn.execute(insert(ProcessHeartbeat), [
            {"name": name, "kind": kind, "host": "h", "pid": pid, "started_at": seen,
             "last_seen_at": seen, "info": {"heartbeat_seconds": 30}}
            for name, kind, pid, seen in (("worker@h:1", "worker", 1, long_gone),
                                          ("scheduler@h:2", "scheduler", 2, long_gone),
                                          ("worker@h:3", "worker", 3, lately),
                                          ("demo@h:4", "demo", 4, long_gone))])
    heartbeat_job(app)
    with app.engine.connect() as conn:
        kept = set(conn.execute(select(ProcessHeartbeat.name)).scalars())
    scheduler = next(name for name in kept if name.startswith("scheduler@") and
                     name != "scheduler@h:2")  # this process, as the scheduler
    assert kept == {"worker@h:3", "demo@h:4", scheduler}
    shown = {p["name"]: p["alive"] for p in web.get("/healthz").json()["processes"]}
    assert shown == {"worker@h:3": False, "demo@h:4": False, scheduler: True}
