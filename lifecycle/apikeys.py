"""Ingest API keys: shown once, stored as a hash, scoped, revocable.

A key reads ``lc_<prefix>_<secret>``: the prefix (8 hex digits) finds the
row, the SHA-256 of the whole key is compared in constant time.  (A key is
256 random bits, so a fast hash is enough: there is nothing to guess.)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from lifecycle.models import ApiKey

#: What a key may do.
SCOPES = {
    "customers:write": "create and update customers",
    "orders:write": "create and update orders (new completed orders fire order triggers)",
    "support:write": "record support tickets, calls and chats",
    "events:write": "record custom events",
    "reviews:write": "record product reviews (the reviewer segment)",
    "referrals:write": "record referrals (the referrer segment)",
    "offers:read": "list the offer codes mails handed out (GET /api/v1/offers)",
}


class ApiKeyRefused(PermissionError):
    """A missing, unknown or revoked key (401), or one without the scope (403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(conn: Connection, name: str, scopes: list[str], now: datetime,
               created_by: int | None = None) -> str:
    """A new key with ``scopes``; the key itself (it is not stored: show it once)."""
    unknown = sorted(set(scopes) - SCOPES.keys())
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; "
                         f"not {', '.join(unknown) or 'none'}")
    prefix = secrets.token_hex(4)
    key = f"lc_{prefix}_{secrets.token_urlsafe(32)}"
    conn.execute(insert(ApiKey).values(name=name, prefix=prefix, key_hash=_hash(key),
                                       scopes=sorted(set(scopes)), created_by_id=created_by,
                                       created_at=now))
    return key


def known_key(conn: Connection, presented: str | None) -> Any:
    """The key row of ``presented`` if it is a known key not revoked; else ApiKeyRefused
    (401).  Reads only: checked before a request's body is read (:class:`KeyBeforeBody`
    in :mod:`lifecycle.web.api`)."""
    if not presented:
        raise ApiKeyRefused("an API key is required: Authorization: Bearer lc_…", 401)
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "lc":
        raise ApiKeyRefused("not a Lifecycle API key", 401)
    row = conn.execute(select(ApiKey.__table__).where(ApiKey.prefix == parts[1])).first()
    if row is None or not hmac.compare_digest(row.key_hash, _hash(presented)):
        raise ApiKeyRefused("unknown API key", 401)
    if row.revoked_at is not None:
        raise ApiKeyRefused("this API key was revoked", 401)
    return row


def authenticate(conn: Connection, presented: str | None, scope: str, now: datetime) -> Any:
    """The key row of ``presented`` if it is valid and has ``scope``; else ApiKeyRefused."""
    row = known_key(conn, presented)
    if scope not in (row.scopes or []):
        raise ApiKeyRefused(f"this API key lacks the scope {scope}", 403)
    conn.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return row


def revoke(conn: Connection, prefix: str, now: datetime) -> bool:
    return bool(conn.execute(update(ApiKey).where(
        ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)).values(revoked_at=now)).rowcount)
