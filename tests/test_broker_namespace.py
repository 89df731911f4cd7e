"""RabbitMQ queues carry Lifecycle's namespace, as its Redis keys do (checked on a real server)."""

from __future__ import annotations

import json
import uuid

import pika
import pytest

from lifecycle.tasks import broker as broker_module
from lifecycle.tasks import load_actors
from lifecycle.tasks.heartbeat import heartbeat
from tests.conftest import RABBITMQ_URL, REDIS_URL, require_service


def take(channel, queue: str, marker: str) -> dict | None:  # type: ignore[no-untyped-def, type-arg]
    """The message on ``queue`` whose argument is ``marker``, taken off it (acknowledged);
    every other message is put back untouched."""
    found, others = None, []
    while found is None:
        method, _properties, body = channel.basic_get(queue)
        if method is None:
            break
        message = json.loads(body)
        if message["args"] == [marker]:
            channel.basic_ack(method.delivery_tag)
            found = message
        else:
            others.append(method.delivery_tag)
    for tag in others:
        channel.basic_nack(tag, requeue=True)
    return found


@pytest.fixture
def rabbitmq():  # type: ignore[no-untyped-def]
    require_service("RabbitMQ", RABBITMQ_URL, 5672)
    load_actors()
    built = broker_module.setup(RABBITMQ_URL)
    yield built
    built.close()
    broker_module.install(broker_module.build(None))


def test_every_queue_lifecycle_declares_on_rabbitmq_carries_its_namespace(rabbitmq) -> None:  # type: ignore[no-untyped-def]
    assert rabbitmq.get_declared_queues() == {"lifecycle.default", "lifecycle.webhooks"}
    assert rabbitmq.get_declared_delay_queues() == {"lifecycle.default.DQ",
                                                    "lifecycle.webhooks.DQ"}
    marker = f"namespace-test-{uuid.uuid4().hex}"
    sent = heartbeat.send(marker)
    assert sent.queue_name == "lifecycle.default"

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for queue in ("lifecycle.default", "lifecycle.default.DQ", "lifecycle.default.XQ"):
            channel.queue_declare(queue=queue, passive=True)  # raises if the server has none
        found = take(channel, "lifecycle.default", marker)  # off the namespaced queue itself
        assert found is not None, "the message is not on lifecycle.default"
        assert found["queue_name"] == "lifecycle.default"
        assert found["actor_name"] == "system.heartbeat"
    finally:
        connection.close()


def test_a_delayed_message_waits_on_the_namespaced_delay_queue(rabbitmq) -> None:  # type: ignore[no-untyped-def]
    marker = f"namespace-test-{uuid.uuid4().hex}"
    heartbeat.send_with_options(args=(marker,), delay=3_600_000)
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        found = take(channel, "lifecycle.default.DQ", marker)
        assert found is not None and found["queue_name"] == "lifecycle.default.DQ"
    finally:
        connection.close()


def test_every_redis_key_lifecycle_writes_carries_its_namespace() -> None:
    require_service("Redis", REDIS_URL, 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    load_actors()
    built = broker_module.setup(REDIS_URL)
    try:
        heartbeat.send(f"namespace-test-{uuid.uuid4().hex}")
        keys = {key.decode() for key in client.keys("*")}
        assert keys and all(key.startswith("lifecycle:") for key in keys), keys
    finally:
        built.close()
        broker_module.install(broker_module.build(None))
        client.flushdb()
        client.close()


def test_offer_webhooks_go_on_their_own_namespaced_queue_on_rabbitmq(rabbitmq) -> None:  # type: ignore[no-untyped-def]
    from lifecycle.offers.tasks import notify

    sent = notify.send_with_options(args=([-1],), delay=3_600_000)  # no worker may run it now
    assert sent.queue_name == "lifecycle.webhooks.DQ"
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for queue in ("lifecycle.webhooks", "lifecycle.webhooks.DQ", "lifecycle.webhooks.XQ"):
            channel.queue_declare(queue=queue, passive=True)
        method, _properties, body = channel.basic_get("lifecycle.webhooks.DQ")
        while method is not None and json.loads(body)["args"] != [[-1]]:
            channel.basic_nack(method.delivery_tag, requeue=True)
            method, _properties, body = channel.basic_get("lifecycle.webhooks.DQ")
        assert method is not None
        channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()
