"""Login throttling: failed logins counted per account name and per client address, in the
database (table ``login_throttle``), so that every web process sees the same counts.

Each login attempt names two keys: the account (the address typed, lower-cased, as a
SHA-256 digest — known or not, so a block says nothing about whether an account exists)
and the client address (an IPv6 address by its /64 network).  A key with :attr:`Limit.failures`
failed attempts within :data:`WINDOW` is blocked for :data:`FIRST_BLOCK`; each further block
of the same key is twice as long, up to :data:`LONGEST_BLOCK`.  While a key is blocked every
attempt naming it is refused without looking at the password (the right one too).

An attempt is counted *before* its password is checked (:func:`admit`), so that a burst of
parallel attempts cannot run past the limit; :func:`failed` then starts a block when the
limit is reached, and :func:`succeeded` forgets the account's count and takes the attempt
back from the address's (a success does not lift the address's block: an attacker's own
account must not clear the address it attacks from).  Rows without a block are forgotten
:data:`WINDOW` after their last attempt, rows with one :data:`FORGET` after it
(:func:`prune`), so the table holds only recent attackers.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.models import LoginThrottle
from lifecycle.timeutil import as_utc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """Failed attempts a key may make within :data:`WINDOW` before it is blocked."""

    failures: int


#: Per account name: 5 failures within the window block it.
ACCOUNT = Limit(failures=5)
#: Per client address (an office may share one): 20 failures within the window block it.
ADDRESS = Limit(failures=20)
LIMITS = {"account": ACCOUNT, "address": ADDRESS}
#: How long failures are counted (15 minutes).
WINDOW = timedelta(minutes=15)
#: The first block of a key (1 minute); each further one is twice as long.
FIRST_BLOCK = timedelta(minutes=1)
#: The longest block (1 hour).
LONGEST_BLOCK = timedelta(hours=1)
#: A key that was blocked is remembered this long after its last attempt (24 hours), so its
#: next block is longer.
FORGET = timedelta(hours=24)

Key = tuple[str, str]


def keys_of(email: str, client: str | None) -> list[Key]:
    """The throttle keys of an attempt to log in as ``email`` from ``client`` (an IP address as
    the ASGI server reports it; None or anything else counts as the address ``unknown``)."""
    name = hashlib.sha256(email.strip().lower().encode("utf-8", "replace")).hexdigest()
    return [("account", name), ("address", client_key(client))]


def client_key(client: str | None) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 network (one subscriber's)."""
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return "unknown" if not client else client[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is 192.0.2.1
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def block_for(blocks: int) -> timedelta:
    """How long the ``blocks``-th block of a key lasts (1, 2, 4, … minutes, at most an hour)."""
    return min(FIRST_BLOCK * 2 ** min(max(blocks - 1, 0), 12), LONGEST_BLOCK)


def _rows(conn: Connection, keys: list[Key], now: datetime) -> dict[Key, LoginThrottle]:
    """The rows of ``keys`` (made when missing), locked for this transaction on PostgreSQL
    (SQLite's ``BEGIN IMMEDIATE`` holds the whole database)."""
    t = LoginThrottle.__table__
    values = [{"kind": kind, "key": key, "failures": 0, "blocks": 0, "window_started_at": now,
               "updated_at": now} for kind, key in keys]
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(make(t).on_conflict_do_nothing(index_elements=["kind", "key"]), values)
    query = select(t).where(or_(*(and_(t.c.kind == kind, t.c.key == key) for kind, key in keys)))
    query = query.order_by(t.c.kind, t.c.key).with_for_update()
    rows = {(row.kind, row.key): row for row in conn.execute(query)}
    if len(rows) < len(set(keys)):  # another process pruned one between the two statements
        return _rows(conn, keys, now)
    return rows


def _set(conn: Connection, key: Key, **values: object) -> None:
    t = LoginThrottle.__table__
    conn.execute(update(t).where(t.c.kind == key[0], t.c.key == key[1]).values(**values))


def admit(conn: Connection, keys: list[Key], now: datetime) -> timedelta | None:
    """Count an attempt for ``keys`` and None; or, if one of them is blocked (or has as many
    attempts in flight as it may fail), how long to wait, and count nothing."""
    prune(conn, now)
    rows = _rows(conn, keys, now)
    wait = timedelta(0)
    for key, row in rows.items():
        fresh = as_utc(row.window_started_at) + WINDOW > now
        if row.blocked_until is not None and as_utc(row.blocked_until) > now:
            wait = max(wait, as_utc(row.blocked_until) - now)
        elif fresh and row.failures >= LIMITS[key[0]].failures:
            wait = max(wait, block_for(row.blocks + 1))
    if wait:
        return wait
    for key, row in rows.items():
        fresh = as_utc(row.window_started_at) + WINDOW > now
        _set(conn, key, failures=(row.failures if fresh else 0) + 1, updated_at=now,
             window_started_at=row.window_started_at if fresh else now)
    return None


def failed(conn: Connection, keys: list[Key], now: datetime) -> timedelta | None:
    """The attempt :func:`admit` counted failed: block each key that reached its limit; the
    longest block started, if any."""
    longest = None
    for key, row in _rows(conn, keys, now).items():
        if row.failures >= LIMITS[key[0]].failures and (
                row.blocked_until is None or as_utc(row.blocked_until) <= now):
            length = block_for(row.blocks + 1)
            _set(conn, key, failures=0, blocks=row.blocks + 1, blocked_until=now + length,
                 window_started_at=now, updated_at=now)
            longest = max(longest or length, length)
            log.warning("Logins %s are blocked for %d seconds after %d failures (block %d "
                        "in a row).", f"from {key[1]}" if key[0] == "address"
                        else f"as the account name hashed {key[1][:12]}…",
                        length.total_seconds(), row.failures, row.blocks + 1)
    return longest


def succeeded(conn: Connection, keys: list[Key], now: datetime) -> None:
    """The attempt :func:`admit` counted logged in: the account starts afresh, and the
    address's count loses this attempt."""
    t = LoginThrottle.__table__
    for key, row in _rows(conn, keys, now).items():
        if key[0] == "account":
            conn.execute(delete(t).where(t.c.kind == key[0], t.c.key == key[1]))
        else:
            _set(conn, key, failures=max(row.failures - 1, 0))


def forget_account(conn: Connection, email: str) -> None:
    """Lift the block of an account name (its password was just set)."""
    t = LoginThrottle.__table__
    name = keys_of(email, None)[0][1]
    conn.execute(delete(t).where(t.c.kind == "account", t.c.key == name))


def prune(conn: Connection, now: datetime) -> int:
    """Delete the rows that no longer count: never blocked and quiet for :data:`WINDOW`, or
    quiet for :data:`FORGET` and not blocked now; how many.  Rows another login attempt holds
    are skipped (on PostgreSQL), so a prune never waits for one and two attempts cannot
    deadlock over it: the next attempt's prune takes them."""
    t = LoginThrottle.__table__
    unblocked = or_(t.c.blocked_until.is_(None), t.c.blocked_until <= now)
    quiet = select(t.c.kind, t.c.key).where(unblocked, or_(
        and_(t.c.blocks == 0, t.c.updated_at <= now - WINDOW),
        t.c.updated_at <= now - FORGET)).with_for_update(skip_locked=True)
    return int(conn.execute(delete(t).where(tuple_(t.c.kind, t.c.key).in_(quiet))).rowcount)
