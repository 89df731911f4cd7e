"""The global send rate and the pause after a 429, shared by every worker.

With a Redis broker both live in Redis (every worker host sees them); with
the in-process broker or RabbitMQ they live in the process (a stub beside the
real backend).  The rate is a fixed one-second window: at most ``rate`` mails
are handed to the transport in any wall-clock second.

When Redis does not answer, the two differ:

* the pause is advice (posting during it only earns another 429, which puts
  that mail back untried): a worker that cannot read it goes on as if no
  other worker had asked for one, keeping to the pauses of its own process,
  and one that cannot store a pause keeps it in its process;
* the rate is a promise to the provider that no process can keep alone, so
  :meth:`SendRate.take` raises the error and the worker puts the mails it has
  not posted back (:mod:`lifecycle.mail.sending`).

So with no ``LIFECYCLE_SEND_RATE`` a batch is sent whole while Redis is down.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: Redis keys (the window key gets the second appended).
WINDOW_KEY = "lifecycle:send-rate:"
PAUSE_KEY = "lifecycle:send-paused-until"


class _Store(Protocol):
    def add(self, window: int, n: int) -> int: ...
    def paused_until(self) -> float: ...
    def pause(self, until: float) -> None: ...


class _MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window = 0
        self._count = 0
        self._paused = 0.0

    def add(self, window: int, n: int) -> int:
        with self._lock:
            if window != self._window:
                self._window, self._count = window, 0
            self._count += n
            return self._count

    def paused_until(self) -> float:
        return self._paused

    def pause(self, until: float) -> None:
        with self._lock:
            self._paused = max(self._paused, until)


class _RedisStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def add(self, window: int, n: int) -> int:
        key = f"{WINDOW_KEY}{window}"
        pipe = self.client.pipeline()
        pipe.incrby(key, n)
        pipe.expire(key, 5)
        return int(pipe.execute()[0])

    def paused_until(self) -> float:
        value = self.client.get(PAUSE_KEY)
        return float(value) if value else 0.0

    def pause(self, until: float) -> None:
        ttl_ms = max(1, int((until - time.time()) * 1000))
        current = self.paused_until()
        if until > current:
            self.client.set(PAUSE_KEY, repr(until), px=ttl_ms)


class SendRate:
    """Blocks a sender until the rate and any provider pause allow one more mail."""

    def __init__(self, rate: float, redis_client: Any | None = None) -> None:
        self.rate = rate
        self.store: _Store = _RedisStore(redis_client) if redis_client is not None \
            else _MemoryStore()
        self.local = _MemoryStore()  # this process's own pauses: kept while Redis is away

    def paused_until(self) -> float:
        """Until when (Unix seconds) senders wait: the shared pause, or only this process's
        own when the shared store does not answer (the error is logged, not raised)."""
        try:
            shared = self.store.paused_until()
        except RedisError as exc:
            log.warning("The pause after a 429 could not be read from Redis (%s: %s); this "
                        "worker keeps to its own pauses only.", type(exc).__name__, exc)
            shared = 0.0
        return max(shared, self.local.paused_until())

    def wait_for_pause(self) -> None:
        """Sleep while the provider asked everyone to wait (a 429)."""
        while (left := self.paused_until() - time.time()) > 0:
            time.sleep(min(left, 1.0))

    def pause(self, seconds: float) -> None:
        """Every worker waits ``seconds`` before its next mail (this process at least, when
        Redis does not answer)."""
        until = time.time() + seconds
        self.local.pause(until)
        try:
            self.store.pause(until)
        except RedisError as exc:
            log.warning("The pause after a 429 could not be shared through Redis (%s: %s); "
                        "only this worker's process keeps it.", type(exc).__name__, exc)

    def take(self) -> None:
        """Wait until one more mail may go out in the current second; an error of the shared
        store (Redis) is raised: no process can keep the rate alone."""
        if self.rate <= 0:
            return
        while True:
            now = time.time()
            if self.store.add(int(now), 1) <= self.rate:
                return
            time.sleep(max(0.001, 1.0 - (now % 1.0)))  # the next second's window


_memory: dict[float, SendRate] = {}
_lock = threading.Lock()


def send_rate_for(rate: float, broker: Any) -> SendRate:
    """The shared limiter: in Redis when ``broker`` is a Redis broker, else per process."""
    client = getattr(broker, "client", None)
    if client is not None and hasattr(client, "incrby"):
        return SendRate(rate, client)
    with _lock:
        if rate not in _memory:
            _memory[rate] = SendRate(rate)
        return _memory[rate]
