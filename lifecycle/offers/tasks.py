"""The ``offers.notify`` actor: posts the offer webhooks whose ids it is given."""

from __future__ import annotations

from lifecycle.runtime import get_app
from lifecycle.tasks import actor


@actor("offers.notify", max_retries=0, time_limit=600_000)  # retries live in offer_webhooks
def notify(webhook_ids: list[int]) -> None:
    """Post a batch of ``offer_webhooks`` rows (see :func:`lifecycle.offers.webhooks.deliver`)."""
    from lifecycle.offers.webhooks import deliver

    deliver(get_app(), list(webhook_ids))
