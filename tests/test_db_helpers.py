"""The set-based helpers of lifecycle.db, on SQLite and PostgreSQL: what they write and select
is exactly what plain SQLAlchemy would."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, select

from lifecycle.db import among, insert_new
from lifecycle.models import Customer

_customers = Customer.__table__
T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)

#: Text an array parameter must carry unchanged: quotes, backslashes, braces and commas (the
#: array syntax of the text format), NULL spelled out, non-ASCII, an empty string.
AWKWARD = ['He said "hi"', "back\\slash", "{a,b}", "NULL", "", "Grüße, Jürgen ẞ", 'x"\\"y',
           "<td style=\"color: #fff\">&nbsp;</td>" * 5]


def _row(n: int, first_name: str | None) -> dict[str, object]:
    return {"external_id": f"h{n}", "email": f"h{n}@example.com", "first_name": first_name,
            "attributes": {"note": first_name}, "marketing_consent": True, "created_at": T0,
            "updated_at": T0}


def test_inserted_rows_keep_every_text_exactly_and_skip_taken_keys(conn: Connection) -> None:
    names: list[str | None] = [*AWKWARD, None]
    ids = insert_new(conn, _customers, [_row(n, name) for n, name in enumerate(names)],
                     ("external_id",), returning="id")
    assert len(ids) == len(names)
    stored = dict(conn.execute(select(_customers.c.external_id, _customers.c.first_name)
                               .where(_customers.c.id.in_(ids))).all())
    assert stored == {f"h{n}": name for n, name in enumerate(names)}
    attributes = {row.external_id: row.attributes for row in conn.execute(
        select(_customers.c.external_id, _customers.c.attributes).where(_customers.c.id.in_(ids)))}
    assert attributes["h0"] == {"note": 'He said "hi"'}
    again = insert_new(conn, _customers, [_row(0, "other"), _row(99, "new")], ("external_id",),
                       returning="id")
    assert len(again) == 1  # h0 is taken: only h99 is new
    assert conn.execute(select(_customers.c.first_name).where(
        _customers.c.external_id == "h0")).scalar_one() == 'He said "hi"'


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=40), min_size=1, max_size=5))
def test_any_text_goes_through_the_batch_insert_unchanged(conn: Connection,
                                                          names: list[str]) -> None:
    with conn.begin_nested() as savepoint:
        ids = insert_new(conn, _customers, [_row(n, name) for n, name in enumerate(names)],
                         ("external_id",), returning="id")
        got = conn.execute(select(_customers.c.first_name).where(_customers.c.id.in_(ids))
                           .order_by(_customers.c.id)).scalars().all()
        savepoint.rollback()
    assert got == names


def test_among_selects_what_in_selects_for_any_number_of_values(conn: Connection) -> None:
    ids = insert_new(conn, _customers, [_row(n, f"n{n}") for n in range(150)], ("external_id",),
                     returning="id")
    for chosen in ([], ids[:1], ids[:60], ids, [*ids[:3], -1]):
        with_among = conn.execute(select(_customers.c.id).where(
            among(conn, _customers.c.id, chosen))).scalars().all()
        with_in = conn.execute(select(_customers.c.id).where(
            _customers.c.id.in_(chosen))).scalars().all()
        assert sorted(with_among) == sorted(with_in) == sorted(set(chosen) & set(ids))
    texts = conn.execute(select(_customers.c.first_name).where(
        among(conn, _customers.c.external_id, ["h1", "h2", "nobody"]))).scalars().all()
    assert sorted(texts) == ["n1", "n2"]
