"""Whether a flow runs: draft, live or paused, from its file or a manager's switch.

A flow file says ``status: draft | live | paused``; a file that says nothing is
live (``lifecycle flows validate`` warns and asks for an explicit status).  A
manager can switch a flow on its page (``/flows/<name>``): the switch is kept
as history in ``flow_status_changes`` (who, when) and overrides the file until
the manager chooses "follow the file" again.

- **live**: enrols customers and advances their enrollments.
- **draft**: enrols nobody and advances nothing; it validates, simulates and previews.
- **paused**: enrols nobody.  Pausing on the page asks what becomes of the enrolled
  customers: they *wait* (their enrollments stay where they are, not advanced, and no
  mail is written until the flow is live again; then they continue, a wait that ended
  meanwhile ends at once) or they *exit* (their enrollments end as ``exited`` with the
  reason "the flow was paused").  A file that says ``paused`` makes them wait.

Touchpoints and dates that arrive while a flow is not live do not enrol later: a flow
switched back on starts from what happens next.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update

from lifecycle.flows.definitions import STATUSES, Flow
from lifecycle.models import (
    EnrollmentStatus,
    FlowEnrollment,
    FlowStatusChange,
    Message,
    MessageStatus,
)

log = logging.getLogger(__name__)

LIVE, DRAFT, PAUSED = "live", "draft", "paused"
WAIT, EXIT = "wait", "exit"
#: The status of a flow file without ``status:``.
DEFAULT = LIVE
#: The exit reason of enrollments ended by a pause.
PAUSED_REASON = "the flow was paused"


@dataclass(frozen=True)
class FlowState:
    """A flow's status in force and where it comes from.

    ``source`` is ``file`` (the flow file's ``status:``, or :data:`DEFAULT`) or ``page``
    (a manager's switch: ``changed_by`` and ``changed_at`` say who and when; with
    ``file``, they name the last "follow the file", if any).  ``on_pause`` is ``wait``
    or ``exit`` for a paused flow (a paused file: ``wait``), else None.
    """

    status: str
    source: str
    changed_by: str | None = None
    changed_at: datetime | None = None
    on_pause: str | None = None

    @property
    def live(self) -> bool:
        """Whether the flow enrols customers and advances their enrollments."""
        return self.status == LIVE


def file_state(flow: Flow) -> FlowState:
    """What the flow file alone says."""
    status = flow.status or DEFAULT
    return FlowState(status, "file", on_pause=WAIT if status == PAUSED else None)


def effective_statuses(conn: Connection, flows: Mapping[str, Flow] | Iterable[Flow]
                       ) -> dict[str, FlowState]:
    """The status in force of each flow (``flows``: the flows, or a catalogue's mapping of
    name to flow), by name: the newest switch on its page, unless that was "follow the file"
    (or there is none); then the file's.  One query for all of them."""
    flows = list(flows.values() if isinstance(flows, Mapping) else flows)
    if not flows:
        return {}
    t = FlowStatusChange.__table__
    newest = (select(t.c.flow, func.max(t.c.id).label("id"))
              .where(t.c.flow.in_([f.name for f in flows])).group_by(t.c.flow).subquery())
    rows = {row.flow: row for row in conn.execute(
        select(t).join(newest, t.c.id == newest.c.id))}
    states = {}
    for flow in flows:
        row = rows.get(flow.name)
        if row is None:
            states[flow.name] = file_state(flow)
        elif row.status is None:
            states[flow.name] = FlowState(file_state(flow).status, "file", row.changed_by,
                                          row.changed_at, file_state(flow).on_pause)
        else:
            states[flow.name] = FlowState(row.status, "page", row.changed_by, row.changed_at,
                                          row.on_pause)
    return states


def not_live(conn: Connection, flows: dict[str, Flow]) -> frozenset[str]:
    """The names of the flows that enrol nobody and whose enrollments wait."""
    return frozenset(name for name, state in effective_statuses(conn, flows).items()
                     if not state.live)


def switch(conn: Connection, flow: Flow, status: str | None, who: str, now: datetime,
           on_pause: str = WAIT) -> FlowState:
    """Record a manager's switch (``status`` None: follow the file again) and apply it: a
    pause with ``on_pause="exit"`` ends every active enrollment of the flow.  The state in
    force after it."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    if on_pause not in (WAIT, EXIT):
        raise ValueError("on_pause must be wait or exit")
    paused = status == PAUSED
    conn.execute(FlowStatusChange.__table__.insert().values(
        flow=flow.name, status=status, on_pause=on_pause if paused else None,
        changed_by=who, changed_at=now))
    exited = 0
    if paused and on_pause == EXIT:
        e = FlowEnrollment.__table__
        m = Message.__table__
        # every mail of the flow not yet sent is cancelled now: those of the enrollments
        # leaving, and those of enrollments already over whose last mail still waits (for
        # the quiet hours to end, say).  A mail a worker claimed (sending) goes; one handed
        # out but not claimed (queued) is cancelled: the claim and this are conditional
        # updates of the same row, one of them wins.
        conn.execute(update(m).where(
            m.c.flow == flow.name,
            m.c.status.in_((MessageStatus.SCHEDULED.value, MessageStatus.QUEUED.value,
                            MessageStatus.PAUSED.value)))
            .values(status=MessageStatus.CANCELLED.value, updated_at=now,
                    lease_expires_at=None, last_error=f"the flow ended: {PAUSED_REASON}"))
        exited = conn.execute(update(e).where(
            e.c.flow == flow.name, e.c.status == EnrollmentStatus.ACTIVE.value).values(
            status=EnrollmentStatus.EXITED.value, finished_at=now, next_run_at=None,
            exit_reason=PAUSED_REASON)).rowcount
    state = effective_statuses(conn, [flow])[flow.name]
    if status is None:
        log.info("The flow %s follows its file again (%s), as %s chose.", flow.name,
                 state.status, who)
    elif paused:
        log.info("The flow %s was paused by %s; %s.", flow.name, who,
                 f"its {exited} enrolled customers exited" if on_pause == EXIT
                 else "its enrolled customers wait")
    else:
        log.info("The flow %s was set to %s by %s.", flow.name, status, who)
    return state


#: Who "follows the file again" when the file itself went away.
REMOVED_BY = "lifecycle (the flow's file was removed)"


def forget_removed(conn: Connection, present: Iterable[str], now: datetime) -> list[str]:
    """Forget what is kept of the flows whose files are gone (``present``: the names of the
    flow files there are now): their last valid versions, and any switch made on their pages
    (a "follow the file" is recorded), so that a new file of the same name starts afresh —
    neither live because the old flow was, nor the old flow's steps if it is broken.  The
    names forgotten."""
    from lifecycle.flows import snapshots
    from lifecycle.models import ConfigSnapshot

    names = set(present)
    if not names:  # an empty or unreadable folder (a mount not there yet): forget nothing
        return []
    kept = ConfigSnapshot.__table__
    gone = sorted(set(conn.execute(select(kept.c.name).where(
        kept.c.kind == snapshots.FLOW)).scalars()) - names)
    t = FlowStatusChange.__table__
    newest = (select(t.c.flow, func.max(t.c.id).label("id")).group_by(t.c.flow).subquery())
    switched = {row.flow for row in conn.execute(
        select(t.c.flow).join(newest, t.c.id == newest.c.id).where(t.c.status.is_not(None)))}
    gone = sorted(set(gone) | (switched - names))
    if not gone:
        return []
    conn.execute(delete(kept).where(kept.c.kind == snapshots.FLOW, kept.c.name.in_(gone)))
    for name in sorted(switched & set(gone)):
        conn.execute(t.insert().values(flow=name, status=None, on_pause=None,
                                       changed_by=REMOVED_BY, changed_at=now))
    log.info("The flows %s have no file any more: what was kept of them (last valid version, "
             "switches on their pages) is forgotten.", ", ".join(gone))
    return gone
