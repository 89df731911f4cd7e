"""The suite runs under pytest-xdist: what each worker keeps to itself (README, the test command)."""

from __future__ import annotations

import pytest

from tests import conftest


@pytest.mark.parametrize("worker, given, own", [
    ("", "redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
    ("gw0", "redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
    ("gw1", "redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/14"),
    ("gw3", "redis://:pw@127.0.0.1:6390/8", "redis://:pw@127.0.0.1:6390/5"),
    ("gw2", "redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/15"),
])
def test_each_worker_flushes_a_redis_database_of_its_own(
        monkeypatch: pytest.MonkeyPatch, worker: str, given: str, own: str) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    assert conftest._own_redis_database(given) == own


def test_every_rabbitmq_test_runs_on_one_worker(request: pytest.FixtureRequest) -> None:
    items = [item for item in request.session.items
             if "rabbitmq" in item.nodeid or "test_broker_namespace" in item.nodeid]
    if not items:
        pytest.skip("no RabbitMQ test was collected with this one")
    for item in items:
        groups = [mark.args for mark in item.iter_markers("xdist_group")]
        assert groups == [("rabbitmq",)], item.nodeid
