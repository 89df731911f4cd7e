"""Factories for import files: small, readable customer and order files."""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: Sequence[dict[str, Any] | str]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(record if isinstance(record, str) else json.dumps(record))
            out.write("\n")
    return path


CUSTOMER_HEADER = ("customer_id", "email", "first_name", "last_name", "timezone", "locale",
                   "created_at", "loyalty_tier")


def customers_csv(path: Path) -> Path:
    """Three good customers, all columns, one extra attribute column."""
    return write_csv(path, CUSTOMER_HEADER, [
        ("c1", "ann@example.com", "Ann", "Lee", "Europe/Berlin", "de-DE", "2024-01-05", "gold"),
        ("c2", "bob@example.com", "Bob", "Ray", "America/New_York", "en_us", "2024-02-01", ""),
        ("c3", "cy@example.com", "Cy", "", "", "", "2024-03-09T08:00:00+02:00", "silver"),
    ])


ORDER_HEADER = ("order_id", "customer_id", "ordered_at", "total", "currency", "status", "items")


def orders_csv(path: Path) -> Path:
    """Four good orders, one of them refunded, one for a customer not in customers_csv."""
    items = json.dumps([{"sku": "TEA-1", "name": "Sencha", "category": "tea", "quantity": 2,
                         "price": "8.90"}])
    return write_csv(path, ORDER_HEADER, [
        ("o1", "c1", "2024-03-01T10:00:00Z", "17.80", "EUR", "completed", items),
        ("o2", "c1", "2024-04-01", "5", "EUR", "refunded", ""),
        ("o3", "c2", "2024-04-02T23:30:00-05:00", "120.00", "USD", "paid", ""),
        ("o4", "c9", "2024-05-05T12:00:00Z", "9.99", "", "", ""),
    ])


# ------------------------------------------------------------ database rows


def add_customer(conn, external_id: str, created_at, **values):  # type: ignore[no-untyped-def]
    """Insert a customer; return its id."""
    from sqlalchemy import insert

    from lifecycle.models import Customer

    row = {"external_id": external_id, "email": f"{external_id}@example.com", "attributes": {},
           "marketing_consent": True, "created_at": created_at, "updated_at": created_at, **values}
    return conn.execute(insert(Customer).values(**row).returning(Customer.id)).scalar_one()


_orders = iter(range(1, 10**9))


def add_order(conn, customer_id: int, ordered_at, total, status: str = "completed",  # type: ignore[no-untyped-def]
              items=(), currency: str = "USD"):
    from decimal import Decimal

    from sqlalchemy import insert

    from lifecycle.models import Order

    conn.execute(insert(Order).values(
        external_id=f"o{next(_orders)}", customer_id=customer_id, ordered_at=ordered_at,
        total=Decimal(str(total)), currency=currency, status=status, items=list(items),
        created_at=ordered_at, updated_at=ordered_at))


def add_touchpoint(conn, customer_id: int, kind: str, occurred_at, **data):  # type: ignore[no-untyped-def]
    from sqlalchemy import insert

    from lifecycle.models import Touchpoint

    conn.execute(insert(Touchpoint).values(
        customer_id=customer_id, kind=kind, channel="email", occurred_at=occurred_at,
        recorded_at=occurred_at, data=data))


def daytime_zone(now):  # type: ignore[no-untyped-def]
    """A zone where it is mid-day at ``now``, so that quiet hours hold no mail back."""
    from lifecycle.timeutil import zone

    for offset in range(-12, 15):
        name = f"Etc/GMT{'+' if offset <= 0 else '-'}{abs(offset)}"  # POSIX signs are inverted
        if 11 <= now.astimezone(zone(name)).hour <= 16:
            return name
    return "UTC"


def add_campaign(conn, n: int, now, template: str = "thank_you"):  # type: ignore[no-untyped-def]
    """``n`` customers with an order each and a mail due ``now`` to each; the mail ids."""
    from datetime import timedelta

    from sqlalchemy import insert

    from lifecycle.models import Customer, Message, Order

    tz = daytime_zone(now)
    ids = conn.execute(insert(Customer).returning(Customer.id), [
        {"external_id": f"b{i}", "email": f"b{i}@example.com", "first_name": "Sam",
         "attributes": {}, "marketing_consent": True, "timezone": tz,
         "created_at": now - timedelta(days=90), "updated_at": now}
        for i in range(n)]).scalars().all()
    conn.execute(insert(Order), [
        {"external_id": f"o{i}", "customer_id": cid, "ordered_at": now - timedelta(days=2),
         "total": "42.50", "currency": "EUR", "status": "completed",
         "items": [{"name": "Sencha", "quantity": 1, "price": "42.50"}],
         "created_at": now, "updated_at": now} for i, cid in enumerate(ids)])
    return conn.execute(insert(Message).returning(Message.id), [
        {"idempotency_key": f"campaign:{cid}", "customer_id": cid, "flow": "thank_you",
         "step": "thanks", "template": template, "to_email": f"b{i}@example.com",
         "status": "scheduled", "due_at": now, "attempts": 0,
         "context": {"order_id": f"o{i}", "marketing": False, "capped": False},
         "created_at": now, "updated_at": now} for i, cid in enumerate(ids)]).scalars().all()


#: The clock and secret of the ``web_app`` fixture (tests sign their own tokens with it).
WEB_T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
WEB_SECRET = "w" * 40


def webhook_key() -> tuple[Any, str]:
    """A new P-256 key pair for SendGrid's signed webhook: (private key, the base64 public key
    as SendGrid shows it, for SENDGRID_WEBHOOK_PUBLIC_KEY)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def webhook_headers(key: Any, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers SendGrid signs an event post with (ECDSA over ``timestamp + body``)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from lifecycle.mail.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER

    stamp = str(timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json"}


# ------------------------------------------------------------------- staff

#: The password of every staff account the tests make.
PASSWORD = "correct horse battery"


def account(app, email: str, role: str) -> int:  # type: ignore[no-untyped-def]
    """A staff account with :data:`PASSWORD`; its id."""
    from lifecycle.staff import add_staff

    with app.engine.begin() as conn:
        return add_staff(conn, email, role, PASSWORD, WEB_T0)


def csrf_of(page: str) -> str:
    """The CSRF token a staff page's forms carry."""
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def logged_in(web, email: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """``web`` (a TestClient) after logging in as ``email``."""
    web.post("/login", data={"csrf": csrf_of(web.get("/login").text), "email": email,
                             "password": password, "next": "/customers"},
             follow_redirects=False)
    return web
