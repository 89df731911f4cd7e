"""`lifecycle timeline`: newest first, in pages by cursor, filtered by kind, as a table or JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.config import load_settings
from lifecycle.models import Customer, Touchpoint
from lifecycle.timeline import summary
from lifecycle.timeutil import UTC

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
HISTORY = [
    ("order_placed", {"order_id": "O1", "total": "42.50", "nth": 1}),
    ("email_sent", {"subject": "Thank you, Sam", "flow": "thank_you", "step": "thanks"}),
    ("email_opened", {"flow": "thank_you", "step": "thanks", "machine": False}),
    ("replied", {"text": "Lovely tea!\n\nSam", "from": "b0@example.com"}),
    ("feedback", {"score": 9, "comment": "Quick delivery"}),
    ("support", {"type": "call", "summary": "Asked about the discount code"}),
    ("unsubscribed", {"scope": "marketing", "via": "one-click"}),
]


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def a_history(env: dict[str, str]) -> None:
    app = App(replace(load_settings(env), database_url=make_url(env["LIFECYCLE_DATABASE_URL"])))
    with app.engine.begin() as conn:
        cid = conn.execute(insert(Customer).returning(Customer.id).values(
            external_id="C1", email="b0@example.com", first_name="Sam", attributes={},
            timezone="Europe/Berlin", created_at=T0, updated_at=T0)).scalar_one()
        conn.execute(insert(Touchpoint), [
            {"customer_id": cid, "kind": kind, "channel": "email",
             "occurred_at": T0 + timedelta(hours=n), "recorded_at": T0, "data": data}
            for n, (kind, data) in enumerate(HISTORY)])
        assert conn.execute(select(Customer.id)).scalar_one() == cid
    app.close()


def test_the_timeline_reads_newest_first_in_the_customers_time(cli_env: dict[str, str]) -> None:
    a_history(cli_env)
    text = run({**cli_env, "COLUMNS": "200"}, "timeline", "C1")  # rich wraps at the width
    order = [text.index(words) for words in (
        "Unsubscribed (marketing, via one-click)", "Support call: Asked about the discount",
        "Feedback: 9/10 — Quick delivery", "Replied: Lovely tea!", "Mail opened",
        "Mail sent: “Thank you, Sam”", "Order O1: 42.50 (order no. 1)")]
    assert order == sorted(order)
    assert "2026-06-03 14:00" in text  # 12:00 UTC is 14:00 in Berlin


def test_pages_follow_their_cursor_without_gaps_or_repeats(cli_env: dict[str, str]) -> None:
    a_history(cli_env)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        args = ["timeline", "C1", "--json", "--limit", "3"] + (["--before", cursor]
                                                                if cursor else [])
        data = json.loads(run(cli_env, *args))
        seen += [entry["kind"] for entry in data["entries"]]
        cursor = data["next"]
        if cursor is None:
            break
    assert seen == [kind for kind, _ in reversed(HISTORY)]


def test_a_kind_filter_and_a_bad_cursor(cli_env: dict[str, str]) -> None:
    a_history(cli_env)
    data = json.loads(run(cli_env, "timeline", "b0@example.com", "--json", "--kind", "replied",
                          "--kind", "feedback"))
    assert [e["kind"] for e in data["entries"]] == ["feedback", "replied"]
    result = CliRunner().invoke(cli, ["timeline", "C1", "--before", "yesterday"], env=cli_env)
    assert result.exit_code == 2 and "not a timeline cursor" in result.output


def test_erased_entries_say_so_and_unknown_kinds_read_plainly() -> None:
    assert summary("replied", {"erased": True}) == "replied (personal data erased)"
    assert summary("note_added", {}) == "note added"
