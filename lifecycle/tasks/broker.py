"""The dramatiq broker: in-process by default, Redis or RabbitMQ when configured.

Actors are declared on a placeholder broker at import time; :func:`setup`
builds the configured broker and declares every actor on it.  Messages only
carry ids: losing the broker loses no state (the database has it all).

Everything Lifecycle puts in a shared broker carries the namespace
:data:`NAMESPACE`: Redis keys start with ``lifecycle:``, RabbitMQ queues are
``lifecycle.<queue>`` (with dramatiq's ``.DQ`` and ``.XQ`` after them), so
other applications' queues on the same server are neither read nor purged.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from lifecycle.config import redact_url

log = logging.getLogger(__name__)

#: The namespace of Lifecycle's Redis keys and RabbitMQ queues.
NAMESPACE = "lifecycle"

#: Every actor of Lifecycle, registered by :func:`lifecycle.tasks.actor`.
ACTORS: list[dramatiq.Actor] = []  # type: ignore[type-arg]


def _middleware() -> list[dramatiq.Middleware]:
    # No Prometheus middleware (it opens a port); time limits in milliseconds.
    return [AgeLimit(), TimeLimit(time_limit=10 * 60_000), ShutdownNotifications(), Callbacks(),
            Pipelines(), Retries(max_retries=5, min_backoff=1_000, max_backoff=300_000)]


class NamespacedRabbitmqBroker(RabbitmqBroker):
    """dramatiq's RabbitMQ broker with every queue named ``<namespace>.<queue>``.

    dramatiq's :class:`RabbitmqBroker` has no namespace option (its Redis broker
    has one), so the name is prefixed wherever a queue name enters the broker:
    declaring, consuming, enqueueing (the message carries the prefixed name, so
    retries, delays and the worker's consumers all use it), counting, flushing.
    A name that already has the prefix is left as it is.
    """

    def __init__(self, *, namespace: str = NAMESPACE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = f"{namespace}."

    def namespaced(self, queue_name: str) -> str:
        return queue_name if queue_name.startswith(self.prefix) else self.prefix + queue_name

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        super().declare_queue(self.namespaced(queue_name), ensure=ensure)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        return super().consume(self.namespaced(queue_name), prefetch, timeout)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:  # type: ignore[type-arg]
        named = message.copy(queue_name=self.namespaced(message.queue_name))
        return super().enqueue(named, delay=delay)

    def get_queue_message_counts(self, queue_name: str) -> tuple[int, int, int]:
        return super().get_queue_message_counts(self.namespaced(queue_name))

    def flush(self, queue_name: str) -> None:
        super().flush(self.namespaced(queue_name))


def build(url: str | None) -> dramatiq.Broker:
    """Return a broker for ``url``: None is the in-process stub broker."""
    if url is None:
        return StubBroker(middleware=_middleware())
    scheme = url.partition("://")[0].lower()  # schemes are case-insensitive (RFC 3986)
    if scheme in ("redis", "rediss"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, middleware=_middleware(), namespace=NAMESPACE)
    if scheme in ("amqp", "amqps"):
        return NamespacedRabbitmqBroker(url=url, middleware=_middleware())
    raise ValueError(f"unsupported broker URL {redact_url(url)!r}")


def broker_epoch(broker: dramatiq.Broker) -> str:
    """Which life of the broker's server this is: Redis's ``run_id``, new at each start (a
    restarted Redis lost every message it held; ours keep no data on disk).  Raises the
    client's error when Redis does not answer.  The in-process broker and RabbitMQ (whose
    queues are durable) name their type: nothing to ask."""
    client = getattr(broker, "client", None)
    if client is not None and hasattr(client, "info"):
        return str(client.info("server")["run_id"])
    return type(broker).__name__


def install(broker: dramatiq.Broker) -> dramatiq.Broker:
    """Make ``broker`` the global one and declare every Lifecycle actor on it."""
    dramatiq.set_broker(broker)
    for actor in ACTORS:
        actor.broker = broker
        broker.declare_actor(actor)
    log.info("The broker %s serves %d actors.", type(broker).__name__, len(ACTORS))
    return broker


def setup(url: str | None) -> dramatiq.Broker:
    return install(build(url))


# Actors are declared at import time on whatever broker is global; make that a
# harmless stub so importing Lifecycle never tries to reach RabbitMQ.
dramatiq.set_broker(StubBroker(middleware=_middleware()))
