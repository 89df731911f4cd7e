"""The ``offers.notify`` actor: posts the offer webhooks whose ids it is given, on a broker
queue of its own (``webhooks``; ``lifecycle:webhooks`` on Redis, ``lifecycle.webhooks`` on
RabbitMQ): every worker consumes every queue Lifecycle declares, the in-process one too."""

from __future__ import annotations

from lifecycle.offers.webhooks import QUEUE, TIME_LIMIT_MS
from lifecycle.runtime import get_app
from lifecycle.tasks import actor


# retries live in offer_webhooks; the time limit is shorter than the rows' lease
@actor("offers.notify", queue_name=QUEUE, max_retries=0, time_limit=TIME_LIMIT_MS)
def notify(webhook_ids: list[int]) -> None:
    """Post a batch of ``offer_webhooks`` rows (see
    :func:`lifecycle.offers.webhooks.deliver_limited`)."""
    from lifecycle.offers.webhooks import deliver_limited

    deliver_limited(get_app(), list(webhook_ids))
