"""Staff accounts: support, manager, admin; passwords as argon2id hashes.

Roles are ordered: a manager may do what support may, an admin what a
manager may (:func:`allows`).  Passwords are hashed with argon2id (argon2-cffi's
defaults); a hash made with weaker parameters is upgraded at the next login.

A new password must have :data:`MIN_PASSWORD` characters and a zxcvbn score of
at least :data:`MIN_SCORE` (of 4), judged with the account's address and name as
words a guesser would try first (:func:`password_problem`).  Every account has a
session epoch: :func:`end_sessions` (logout), a new password and deactivation
raise it, and the web pages refuse a session issued under an older one.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, insert, select, update

from lifecycle.guessing import judge
from lifecycle.models import StaffRole, StaffUser
from lifecycle.throttle import forget_account

RANK = {StaffRole.SUPPORT.value: 1, StaffRole.MANAGER.value: 2, StaffRole.ADMIN.value: 3}
#: Fewest characters of a password.
MIN_PASSWORD = 12
#: Least zxcvbn score (0–4) of a password: 3 is "safely unguessable: moderate protection from
#: an offline slow-hash scenario" (about 10^8 guesses or more).
MIN_SCORE = 3
#: argon2id's cost: argon2-cffi's default, RFC 9106's second recommendation (64 MiB, three
#: passes, four lanes; about 60 ms a hash on one core).
PROFILE = profiles.RFC_9106_LOW_MEMORY
_hasher = PasswordHasher.from_parameters(PROFILE)


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return RANK.get(role, 0) >= RANK[needed]


def password_problem(password: str, email: str, name: str | None = None) -> str | None:
    """Why ``password`` will not do for the account of ``email`` (named ``name``), in words
    (no final full stop); None if it will.  Too short, or a zxcvbn score below
    :data:`MIN_SCORE` — common passwords, repeats, sequences, keyboard patterns, dates, l33t
    spellings of dictionary words, words of the account's name — or containing the account's
    address (or its part before the @, of 4 or more characters) or its whole name."""
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    address = email.strip().lower()
    local = address.partition("@")[0]
    if address in password.lower() or (len(local) >= 4 and local in password.lower()):
        return "the password must not contain the account's email address (or its part " \
               "before the @)"
    if name and len(name.strip()) >= 4 and " ".join(name.lower().split()) in password.lower():
        return "the password must not contain the account's name"
    words = [address, *re.split(r"[^a-z0-9]+", address), *(name or "").lower().split()]
    judged = judge(password, [w for w in words if len(w) > 2])
    if judged["score"] >= MIN_SCORE:
        return None
    reasons = [judged["feedback"]["warning"]] if judged["feedback"]["warning"] else []
    if any(match.get("dictionary_name") == "user_inputs" for match in judged["sequence"]):
        reasons.append("It contains the account's email address or name")
    reasons += judged["feedback"]["suggestions"] or ["Add another word or two. Uncommon "
                                                     "words are better"]
    said = " ".join(r if r.endswith(".") else r + "." for r in reasons).rstrip(".")
    return f"the password is too easy to guess (strength {judged['score']} of 4, at least " \
           f"{MIN_SCORE} needed): {said}"


def add_staff(conn: Connection, email: str, role: str, password: str, now: datetime,
              name: str | None = None) -> int:
    """A new active account; ValueError for a bad role, a weak password (see
    :func:`password_problem`) or a taken address."""
    if role not in RANK:
        raise ValueError(f"role must be one of {', '.join(RANK)}, not {role!r}")
    problem = password_problem(password, email, name)
    if problem:
        raise ValueError(problem)
    address = email.strip().lower()
    if "@" not in address:
        raise ValueError(f"not an email address: {email!r}")
    if conn.execute(select(StaffUser.id).where(StaffUser.email == address)).first():
        raise ValueError(f"{address} has an account already")
    return int(conn.execute(insert(StaffUser).returning(StaffUser.id).values(
        email=address, name=name, role=role, password_hash=_hasher.hash(password),
        is_active=True, created_at=now)).scalar_one())


def set_password(conn: Connection, email: str, password: str) -> bool:
    """Give the account of ``email`` a new password, ending its sessions and lifting a login
    block of its name; False if there is no such account, ValueError for a weak password
    (see :func:`password_problem`)."""
    address = email.strip().lower()
    row = conn.execute(select(StaffUser.id, StaffUser.name).where(
        StaffUser.email == address)).first()
    if row is None:
        return False
    problem = password_problem(password, address, row.name)
    if problem:
        raise ValueError(problem)
    conn.execute(update(StaffUser).where(StaffUser.id == row.id).values(
        password_hash=_hasher.hash(password), session_epoch=StaffUser.session_epoch + 1))
    forget_account(conn, address)
    return True


def end_sessions(conn: Connection, staff_id: int) -> None:
    """End every session of an account (logout): cookies issued before are refused."""
    conn.execute(update(StaffUser).where(StaffUser.id == staff_id).values(
        session_epoch=StaffUser.session_epoch + 1))


def check_password(conn: Connection, email: str, password: str, now: datetime) -> Any | None:
    """The active account of ``email`` if ``password`` is right; None otherwise."""
    row = conn.execute(select(StaffUser.__table__).where(
        StaffUser.email == email.strip().lower(), StaffUser.is_active.is_(True))).first()
    if row is None or not row.password_hash:
        _hasher.hash(password)  # the same work as a real check: no timing hint
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    values: dict[str, Any] = {"last_login_at": now}
    if _hasher.check_needs_rehash(row.password_hash):
        values["password_hash"] = _hasher.hash(password)
    conn.execute(update(StaffUser).where(StaffUser.id == row.id).values(**values))
    return row


def staff_by_id(conn: Connection, staff_id: int) -> Any | None:
    return conn.execute(select(StaffUser.__table__).where(
        StaffUser.id == staff_id, StaffUser.is_active.is_(True))).first()


def change_staff(conn: Connection, staff_id: int, *, role: str | None = None,
                 active: bool | None = None) -> bool:
    """Give an account another role, or (de)activate it (deactivation ends its sessions, so a
    reactivation does not bring them back); False if there is no such account."""
    values: dict[str, Any] = {}
    if role is not None:
        if role not in RANK:
            raise ValueError(f"role must be one of {', '.join(RANK)}, not {role!r}")
        values["role"] = role
    if active is not None:
        values["is_active"] = active
        if not active:
            values["session_epoch"] = StaffUser.session_epoch + 1
    if not values:
        return False
    return bool(conn.execute(update(StaffUser).where(StaffUser.id == staff_id)
                             .values(**values)).rowcount)
