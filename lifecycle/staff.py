"""Staff accounts: support, manager, admin; passwords as argon2id hashes.

Roles are ordered: a manager may do what support may, an admin what a
manager may (:func:`allows`).  Passwords are hashed with argon2id (argon2-cffi's
defaults); a hash made with weaker parameters is upgraded at the next login.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Connection, insert, select, update

from lifecycle.models import StaffRole, StaffUser

RANK = {StaffRole.SUPPORT.value: 1, StaffRole.MANAGER.value: 2, StaffRole.ADMIN.value: 3}
MIN_PASSWORD = 12
_hasher = PasswordHasher()


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may."""
    return RANK.get(role, 0) >= RANK[needed]


def add_staff(conn: Connection, email: str, role: str, password: str, now: datetime,
              name: str | None = None) -> int:
    """A new active account; ValueError for a bad role, a short password or a taken address."""
    if role not in RANK:
        raise ValueError(f"role must be one of {', '.join(RANK)}, not {role!r}")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    address = email.strip().lower()
    if "@" not in address:
        raise ValueError(f"not an email address: {email!r}")
    if conn.execute(select(StaffUser.id).where(StaffUser.email == address)).first():
        raise ValueError(f"{address} has an account already")
    return int(conn.execute(insert(StaffUser).returning(StaffUser.id).values(
        email=address, name=name, role=role, password_hash=_hasher.hash(password),
        is_active=True, created_at=now)).scalar_one())


def set_password(conn: Connection, email: str, password: str) -> bool:
    """Give the account of ``email`` a new password; False if there is no such account,
    ValueError for a short password."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    return bool(conn.execute(update(StaffUser).where(
        StaffUser.email == email.strip().lower()).values(
        password_hash=_hasher.hash(password))).rowcount)


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
    """Give an account another role, or (de)activate it; False if there is no such account."""
    values: dict[str, Any] = {}
    if role is not None:
        if role not in RANK:
            raise ValueError(f"role must be one of {', '.join(RANK)}, not {role!r}")
        values["role"] = role
    if active is not None:
        values["is_active"] = active
    if not values:
        return False
    return bool(conn.execute(update(StaffUser).where(StaffUser.id == staff_id)
                             .values(**values)).rowcount)
