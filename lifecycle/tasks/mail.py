"""Mail actors: ``mail.send`` takes message ids and opens its own transactions."""

from __future__ import annotations

from lifecycle.runtime import get_app
from lifecycle.tasks import actor


@actor("mail.send", max_retries=0, time_limit=300_000)  # retries live in the outbox
def send(message_ids: list[int]) -> None:
    """Send a batch of outbox rows (see :func:`lifecycle.mail.sending.send_batch`)."""
    from lifecycle.mail.sending import send_batch

    send_batch(get_app(), list(message_ids))
