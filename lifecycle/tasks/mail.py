"""Mail actors: ``mail.send`` takes a message id and opens its own transactions."""

from __future__ import annotations

from lifecycle.runtime import get_app
from lifecycle.tasks import actor


@actor("mail.send", max_retries=0, time_limit=120_000)  # retries live in the outbox
def send(message_id: int) -> None:
    """Send one outbox row (see :func:`lifecycle.mail.sending.send_one`)."""
    from lifecycle.mail.sending import send_one

    send_one(get_app(), message_id)
