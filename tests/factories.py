"""Factories for import files: small, readable customer and order files."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
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
