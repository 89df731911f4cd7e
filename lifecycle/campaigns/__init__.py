"""Campaigns: one-off mails to an audience of segments, sent exactly once through the outbox.

A campaign is written as a file (``campaigns/<name>.yaml``), in the web app or on the
command line, all three in the same shape (:mod:`lifecycle.campaigns.spec`).  It is a
draft until it is scheduled; at its start the scheduler fixes the audience and writes
every outbox row in one set-based statement (:mod:`lifecycle.campaigns.audience`), in
the transaction that moves it to ``sending`` (:mod:`lifecycle.campaigns.service`).  From
there the mails go as flow mails do: dispatch, the workers, the send-time checks.
"""

# The tables are registered with every other one (lifecycle.models imports .model): load
# lifecycle.models first, so that importing lifecycle.campaigns.model on its own finds them ready.
import lifecycle.models  # noqa: E402, F401
