"""Run a ``lifecycle`` command that stops for good at one exact point, for the fault tests.

``python -m tests.pause_at POINT MARKER -- <lifecycle arguments>`` runs
``lifecycle <arguments>`` as usual, except that the first time the process
reaches ``POINT`` it writes what it holds there to the file ``MARKER`` (JSON,
written whole, then renamed) and waits until it is killed.  A test waits for
the marker, checks the state of the world at that point, and sends SIGKILL: the
kill lands exactly where the test says, not wherever a timer happened to.

Points:

* ``dispatch-enqueue``: the scheduler committed due mails as ``queued`` and is
  about to put their ids on the broker (``ids``);
* ``webhook-before-commit``: the web app stored and applied a post of SendGrid
  events in its transaction, not yet committed (``receipt``);
* ``webhook-before-answer``: the web app committed a post of events and has not
  answered it yet (``receipt``);
* ``campaign-start-before-commit``: the scheduler started a campaign (fixed its
  audience, wrote its outbox rows) in its transaction, not yet committed
  (``written``: the mails written);
* ``campaign-start-after-commit``: the scheduler committed a campaign's start and
  has done nothing after it (``written``).

Nothing here is imported by Lifecycle itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

POINTS = ("dispatch-enqueue", "webhook-before-commit", "webhook-before-answer",
          "campaign-start-before-commit", "campaign-start-after-commit")


def _stop_here(marker: Path, found: dict[str, Any]) -> None:
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps(found))
    partial.replace(marker)
    while True:  # until SIGKILL
        time.sleep(3600)


def install(point: str, marker: Path) -> None:
    """Make this process stop at ``point`` (see the module doc)."""
    if point == "dispatch-enqueue":
        from lifecycle.tasks import mail

        def enqueue(ids: list[int]) -> None:
            _stop_here(marker, {"point": point, "ids": list(ids), "pid": os.getpid()})

        mail.send.send = enqueue  # type: ignore[method-assign]
    elif point == "webhook-before-commit":
        from lifecycle.web import webhooks

        receive = webhooks.receive_events

        def stored_not_committed(conn: Any, items: list[Any], now: Any) -> Any:
            receipt = receive(conn, items, now)
            _stop_here(marker, {"point": point, "receipt": receipt.as_dict(),
                                "pid": os.getpid()})
            return receipt

        webhooks.receive_events = stored_not_committed  # type: ignore[assignment]
    elif point == "webhook-before-answer":
        from lifecycle.web import webhooks

        commit = webhooks._receive

        def committed_not_answered(app: Any, items: list[Any]) -> dict[str, int]:
            receipt = commit(app, items)
            _stop_here(marker, {"point": point, "receipt": receipt, "pid": os.getpid()})
            return receipt

        webhooks._receive = committed_not_answered
    elif point.startswith("campaign-start-"):
        _install_campaign_start(point, marker)
    else:
        raise SystemExit(f"unknown point {point!r}; one of {', '.join(POINTS)}")


def _install_campaign_start(point: str, marker: Path) -> None:
    """Stop in :meth:`Campaigns.start`'s transaction, or right after the campaign job's
    loop of starts (each committed), before the job goes on."""
    from lifecycle.campaigns import jobs, service

    start = service.Campaigns.start
    written: list[int] = []

    def started(self: Any, *args: Any, **kwargs: Any) -> Any:
        n = start(self, *args, **kwargs)
        if n is not None:
            written.append(n)
            if point == "campaign-start-before-commit":
                _stop_here(marker, {"point": point, "written": n, "pid": os.getpid()})
        return n

    service.Campaigns.start = started  # type: ignore[method-assign]
    release = jobs.release_winners

    def after_starts(app: Any, now: Any) -> int:
        if written:
            _stop_here(marker, {"point": point, "written": written[0], "pid": os.getpid()})
        return release(app, now)

    jobs.release_winners = after_starts  # type: ignore[assignment]


def main() -> None:
    point, marker, separator, *args = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: python -m tests.pause_at POINT MARKER -- <lifecycle args>")
    install(point, Path(marker))
    from lifecycle.cli import main as lifecycle

    sys.argv = ["lifecycle", *args]
    lifecycle()


if __name__ == "__main__":
    main()
