"""Import of purchase history: customers and orders from CSV or JSON Lines.

:func:`import_records` validates each record, streams the good ones into a
staging table and merges them in set-based SQL (see :mod:`.loader`), all in
the caller's transaction; each completed order lands on its customer's
timeline as ``order_placed`` (channel :data:`HISTORY` for imports: no flow
triggers).  Bad records are reported through ``on_issue`` as
``FILE:LINE: reason`` and skipped; with ``strict`` the first one raises
:class:`ImportAborted` and the caller's rollback leaves nothing written.

A customer row without an email updates a known customer and is skipped
otherwise ("unknown customer and no email to create one").  The attributes
named in ``date_attributes`` (those flows' date triggers read) must be dates
(``YYYY-MM-DD`` or ``MM-DD``): a bad one is reported and left out, the rest of
its row imported.  The result counts the skipped rows, and the rows with a
value left out, by reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from lifecycle.clock import Clock, system_clock
from lifecycle.imports import loader
from lifecycle.imports.rows import (
    Defaults,
    RowError,
    check_dates,
    customer_row,
    order_row,
    reason_kind,
)
from lifecycle.imports.source import BadRecord, Record, SourceError

KINDS = ("customers", "orders")
#: The channel of touchpoints written by an import: history, which fires no flow triggers.
HISTORY = "import"
#: The reason a customer row without an email is skipped when its customer is not known.
UNKNOWN_NO_EMAIL = "unknown customer and no email to create one"
#: The reason counted for an earlier copy of an id that appears again in the file.
REPEATED = "the id appears again later in the file (the later line is imported)"


@dataclass(frozen=True)
class ImportIssue:
    source: str
    line: int
    reason: str
    #: The reason without the row's values, by which rows are counted (:func:`reason_kind`).
    kind: str = ""
    #: Whether the row was skipped (else it was imported with a value left out).
    skipped: bool = True

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


class WrongKind(SourceError):
    """The file is of the other kind (an orders file given as customers, or the reverse):
    nothing of it is imported, where row by row its columns would have become attributes or
    every row would have been skipped."""


#: Columns only an orders file has, and the columns a customers file has but an orders file
#: does not (:func:`other_kind`).
_ORDERS_ONLY = frozenset({"order_id", "ordered_at", "total", "items", "discount_codes"})
_CUSTOMERS_ONLY = frozenset({"locale", "marketing_consent", "attributes", "created_at"})


def other_kind(kind: str, fields: Mapping[str, Any]) -> str | None:
    """Why a record with ``fields`` (the first of a file) belongs to a file of the other
    kind, or None: a customers record with ``order_id`` and another order column, or an
    orders record without ``order_id`` but with customer columns only."""
    columns = set(fields)
    if kind == "customers" and "order_id" in columns and len(columns & _ORDERS_ONLY) >= 2:
        named = ", ".join(sorted(columns & _ORDERS_ONLY))
        return (f"this looks like an orders file (it has the columns {named}): import it with "
                "`lifecycle import orders`; as customers, each of those columns would become a "
                "customer attribute. Nothing was imported.")
    if kind == "orders" and "order_id" not in columns and "customer_id" in columns \
            and not columns & (_ORDERS_ONLY - {"order_id"}) and (
                columns & _CUSTOMERS_ONLY or "email" in columns):
        return ("this looks like a customers file (no order_id, ordered_at or total column): "
                "import it with `lifecycle import customers`. Nothing was imported.")
    return None


class ImportAborted(Exception):
    """Raised in strict mode at the first bad row."""

    def __init__(self, issue: ImportIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


@dataclass
class ImportResult:
    kind: str
    read: int = 0  # records seen (good and bad)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # bad rows and earlier duplicates
    customers_created: int = 0  # orders import only
    #: Orders import only: of the customers created, those the file gives no email for.
    customers_without_email: int = 0
    #: Orders import only: what the orders' ``discount_codes`` did (offers redeemed, late,
    #: unknown codes, codes another order had redeemed first, codes of other customers,
    #: redemptions taken back).
    redemptions: Any = None
    #: Orders import only: ``order_placed`` touchpoints added (orders newly completed), refunds
    #: and other status changes of orders on the timeline, and the customers whose completed
    #: orders changed (kept in :data:`loader.CHANGED_TABLE` for a segment refresh).
    announced: int = 0
    status_changes: int = 0
    customers_changed: int = 0
    issues: list[ImportIssue] = field(default_factory=list)
    #: Skipped rows by reason (:attr:`ImportIssue.kind`), most frequent first when listed.
    skipped_reasons: Counter[str] = field(default_factory=Counter)
    #: Rows imported with a value left out (a date attribute that is not a date), and by reason
    #: (a row with two bad dates counts once in ``left_out`` and under each reason).
    left_out: int = 0
    left_out_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def complete(self) -> bool:
        """Whether every row went in whole: none skipped, no value left out."""
        return not self.skipped and not self.left_out


def import_records(
    conn: Connection,
    kind: str,
    records: Iterable[Record | BadRecord],
    *,
    source_name: str,
    defaults: Defaults | None = None,
    strict: bool = False,
    clock: Clock = system_clock,
    on_issue: Callable[[ImportIssue], None] | None = None,
    channel: str = HISTORY,
    date_attributes: Collection[str] = (),
) -> ImportResult:
    """Import ``records`` of ``kind`` (customers or orders) in ``conn``'s transaction.

    ``date_attributes`` (customers): the attributes that must be dates, those the flows' date
    triggers read (:func:`date_trigger_attributes`).

    Orders put each completed order on the timeline (``order_placed``) on ``channel``:
    :data:`HISTORY` for imported history (no flow triggers), ``shop`` for live orders.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}")
    defaults = defaults or Defaults()
    result = ImportResult(kind)
    validate = customer_row if kind == "customers" else order_row
    dates = frozenset(date_attributes) if kind == "customers" else frozenset()

    def report(line: int, reason: str, why: str | None = None, skipped: bool = True) -> None:
        issue = ImportIssue(source_name, line, reason, why or reason_kind(reason), skipped)
        if skipped:
            result.skipped += 1
            result.skipped_reasons[issue.kind] += 1
        else:
            result.left_out_reasons[issue.kind] += 1
        result.issues.append(issue)
        if on_issue is not None:
            on_issue(issue)
        if strict:
            raise ImportAborted(issue)

    def good_rows() -> Iterator[dict[str, Any]]:
        first = True
        for record in records:
            result.read += 1
            if isinstance(record, BadRecord):
                report(record.line, record.reason)
                continue
            if first:
                first = False
                wrong = other_kind(kind, record.fields)
                if wrong:
                    raise WrongKind(f"{source_name}:{record.line}: {wrong}")
            try:
                row = validate(record.fields, defaults)
            except RowError as exc:
                report(record.line, str(exc), exc.kind)
                continue
            if dates:
                left_out = check_dates(row["attributes"], dates)
                if left_out and strict:
                    report(record.line, str(left_out[0]), left_out[0].kind, skipped=False)
                if left_out:
                    pending[record.line] = left_out
            row["line"] = record.line
            yield row

    #: Values left out of rows that passed validation, by line: reported once the row is known
    #: to be imported (a row skipped later, as a repeat or an unknown customer, is counted
    #: once, as skipped).
    pending: dict[int, list[Any]] = {}

    def staging_report(line: int, reason: str, why: str | None = None,
                       skipped: bool = True) -> None:
        if skipped:
            pending.pop(line, None)
        report(line, reason, why, skipped)

    _stage_and_merge(conn, kind, good_rows(), result, staging_report, clock, channel)
    for line in sorted(pending):
        result.left_out += 1
        for problem in pending[line]:
            report(line, str(problem), problem.kind, skipped=False)
    return result


def date_trigger_attributes(flows: Iterable[Any]) -> frozenset[str]:
    """The attributes the date triggers of ``flows`` read (``trigger: {date: {attribute:
    birthday}}``): an import checks that their values are dates."""
    return frozenset(
        flow.trigger.options["attribute"] for flow in flows
        if flow.trigger.kind == "date" and isinstance(flow.trigger.options.get("attribute"), str))


def import_rows(
    conn: Connection,
    kind: str,
    rows: Iterable[dict[str, Any]],
    *,
    clock: Clock = system_clock,
) -> ImportResult:
    """Import rows that are already clean (generated, not read from a file).

    Each row has the keys :func:`customer_row` or :func:`order_row` return,
    plus ``line``: a sequence number used to report duplicates.
    """
    result = ImportResult(kind)

    def count(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in items:
            result.read += 1
            yield row

    def report(line: int, reason: str, why: str | None = None) -> None:
        raise ValueError(f"generated row {line}: {reason}")

    _stage_and_merge(conn, kind, count(rows), result, report, clock, HISTORY)
    return result


def _with_codes(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows made without ``discount_codes`` (generated history) carry none."""
    for row in rows:
        row.setdefault("discount_codes", [])
        yield row


def _redeem(conn: Connection, table: Any, now: Any, channel: str) -> Any:
    """Redeem the offers the staged orders' discount codes name (:mod:`lifecycle.offers`)."""
    from lifecycle.offers.service import CodedOrder, redeem, undo

    undone = undo(conn, loader.undoing_orders(conn, table), now, channel)
    report = redeem(conn, [CodedOrder(r.external_id, r.customer_id, r.ordered_at, r.status,
                                      list(r.discount_codes or [])) for r in
                           loader.coded_orders(conn, table)], now, channel)
    report.undone = undone
    return report


def _stage_and_merge(
    conn: Connection,
    kind: str,
    rows: Iterable[dict[str, Any]],
    result: ImportResult,
    report: Callable[[int, str, str], None],
    clock: Clock,
    channel: str,
) -> None:
    table = loader.customer_staging() if kind == "customers" else loader.order_staging()
    loader.create_staging(conn, table)
    if kind == "orders":
        rows = _with_codes(rows)
    staged = loader.load_staging(conn, table, rows)
    id_column = "customer_id" if kind == "customers" else "order_id"
    for line, external_id, kept in loader.take_duplicates(conn, table):
        staged -= 1
        report(line, f"{id_column} {external_id!r} appears again on line {kept}; "
                     "the later line is imported", REPEATED)
    if kind == "customers":
        for line, _external_id in loader.take_unknown_without_email(conn, table):
            staged -= 1
            report(line, UNKNOWN_NO_EMAIL, UNKNOWN_NO_EMAIL)
    now = clock.now()
    if kind == "customers":
        result.inserted, result.updated = loader.merge_customers(conn, table, now)
    else:
        if channel != HISTORY:
            loader.lock_orders(conn, table)
        loader.fill_known_orders(conn, table)
        result.customers_without_email = loader.unknown_without_email(conn, table)
        result.customers_created = loader.create_missing_customers(conn, table, now)
        result.customers_changed = loader.note_changed_customers(conn, table)
        result.status_changes = loader.record_status_changes(conn, table, now, channel)
        result.inserted, result.updated = loader.merge_orders(conn, table, now)
        result.announced = loader.announce_orders(conn, table, now, channel)
        result.redemptions = _redeem(conn, table, now, channel)
    result.unchanged = staged - result.inserted - result.updated
    loader.drop_staging(conn, table)
