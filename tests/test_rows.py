"""Row validation: each value checked, normalised, or refused with the field named."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.imports.rows import Defaults, RowError, customer_row, normalise_email, order_row
from lifecycle.timeutil import UTC, parse_instant


@pytest.mark.parametrize(("raw", "clean"), [
    ("ann@example.com", "ann@example.com"),
    ("  Ann.Lee+shop@Example.COM ", "Ann.Lee+shop@example.com"),
    ("o'brien@mail.example.ie", "o'brien@mail.example.ie"),
])
def test_good_addresses_are_kept_with_the_domain_lower_cased(raw: str, clean: str) -> None:
    assert normalise_email(raw) == clean


def test_a_non_ascii_local_part_is_refused_since_not_every_relay_takes_it() -> None:
    with pytest.raises(RowError, match="not a valid address"):
        normalise_email("zoë@example.com")


@pytest.mark.parametrize("raw", ["", "plain", "a@b", "a@@example.com", "a b@example.com",
                                 ".a@example.com", "a..b@example.com", "a@-example.com",
                                 "a@example.123", "a@exa_mple.com", "x" * 65 + "@example.com"])
def test_bad_addresses_are_refused(raw: str) -> None:
    with pytest.raises(RowError, match="not a valid address"):
        normalise_email(raw)


def test_an_idn_domain_is_accepted() -> None:
    assert normalise_email("kim@Bücher.example") == "kim@bücher.example"


@pytest.mark.parametrize(("raw", "clean"), [("en", "en"), ("de_de", "de-DE"), ("pt-br", "pt-BR"),
                                            ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419")])
def test_locales_are_normalised_to_bcp_47(raw: str, clean: str) -> None:
    row = customer_row({"customer_id": "c", "email": "a@example.com", "locale": raw}, Defaults())
    assert row["locale"] == clean


def test_unknown_columns_become_attributes_and_empty_cells_are_dropped() -> None:
    row = customer_row({"customer_id": "c", "email": "a@example.com", "tier": " gold ",
                        "city": "", "attributes": '{"score": 3}'}, Defaults())
    assert row["attributes"] == {"score": 3, "tier": "gold"}


@pytest.mark.parametrize(("value", "consent"), [("yes", True), ("0", False), ("", None),
                                                (True, True)])
def test_marketing_consent_reads_the_usual_spellings(value: object, consent: bool | None) -> None:
    row = customer_row({"customer_id": "c", "email": "a@example.com",
                        "marketing_consent": value}, Defaults())
    assert row["marketing_consent"] is consent


@pytest.mark.parametrize(("status", "stored"), [("Complete", "completed"), ("canceled", "cancelled"),
                                                ("REFUNDED", "refunded"), ("processing", "pending")])
def test_order_status_spellings_map_to_the_four_statuses(status: str, stored: str) -> None:
    row = order_row({"order_id": "o", "customer_id": "c", "ordered_at": "2024-01-01",
                     "total": "1", "status": status}, Defaults())
    assert row["status"] == stored


@pytest.mark.parametrize(("total", "error"), [("-0.01", "negative"), ("NaN", "not a number"),
                                              ("1e15", "too large"), ("", "missing"),
                                              (None, "missing"), ("12,50", "not a number")])
def test_bad_totals_are_refused(total: object, error: str) -> None:
    with pytest.raises(RowError, match=error):
        order_row({"order_id": "o", "customer_id": "c", "ordered_at": "2024-01-01",
                   "total": total}, Defaults())


def test_a_currency_must_be_three_letters() -> None:
    with pytest.raises(RowError, match="currency"):
        order_row({"order_id": "o", "customer_id": "c", "ordered_at": "2024-01-01",
                   "total": "1", "currency": "EURO"}, Defaults())


@given(st.decimals(min_value=0, max_value=Decimal("999999999999.99"), places=2,
                   allow_nan=False, allow_infinity=False))
def test_any_amount_with_cents_is_kept_exactly(amount: Decimal) -> None:
    row = order_row({"order_id": "o", "customer_id": "c", "ordered_at": "2024-01-01",
                     "total": str(amount)}, Defaults())
    assert row["total"] == amount


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_any_iso_instant_parses_to_the_same_moment_in_utc(moment: datetime) -> None:
    parsed = parse_instant(moment.isoformat())
    assert parsed == moment and parsed.tzinfo is UTC


def test_a_date_alone_is_midnight_in_the_given_zone() -> None:
    assert parse_instant("2024-03-31", "Europe/Berlin") == datetime(2024, 3, 30, 23, tzinfo=UTC)
    assert parse_instant("2024-03-31T12:00:00Z") == datetime(2024, 3, 31, 12, tzinfo=UTC)
