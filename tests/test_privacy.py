"""`lifecycle customer export` and `erase`: everything we hold, then nothing personal."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.mail.events import receive_events
from lifecycle.mail.sending import dispatch, send_batch
from lifecycle.mail.transports import FileTransport
from lifecycle.models import Customer, Message, MessageContent, Order, ProviderEvent, Suppression, Touchpoint
from lifecycle.models import email_hash as hash_of
from lifecycle.timeutil import UTC
from tests.factories import add_campaign

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)
ADDRESS = "b0@example.com"


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def a_customer_with_history(env: dict[str, str]) -> App:
    app = App(replace(load_settings(env), database_url=make_url(env["LIFECYCLE_DATABASE_URL"]),
                      secret_key="p" * 40), clock=ManualClock(T0))
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        conn.execute(Customer.__table__.update().values(last_name="Lovelace"))
    ids: list[int] = []
    dispatch(app, ids.extend)
    send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir))
    with app.engine.begin() as conn:
        receive_events(conn, [{"event": "open", "sg_event_id": "o1", "email": ADDRESS,
                               "timestamp": int(T0.timestamp()) + 60,
                               "lifecycle_message_id": str(mid)}], T0)
        conn.execute(insert(Touchpoint).values(
            customer_id=conn.execute(select(Customer.id)).scalar_one(), kind="support",
            channel="support", occurred_at=T0, recorded_at=T0,
            data={"type": "call", "summary": "Ada Lovelace asked about her tea"}))
    return app


def test_export_holds_everything_about_the_customer(cli_env: dict[str, str]) -> None:
    app = a_customer_with_history(cli_env)
    data = json.loads(run(cli_env, "customer", "export", "b0"))
    assert data["customer"]["email"] == ADDRESS and data["customer"]["last_name"] == "Lovelace"
    assert [o["external_id"] for o in data["orders"]] == ["o0"]
    assert [m["status"] for m in data["mails"]] == ["sent"]
    [content] = data["mail_contents"]  # the mail as it went out, with the customer's name
    assert content["message_id"] == data["mails"][0]["id"] and "Hi Sam" in content["text"]
    kinds = [t["kind"] for t in data["timeline"]]
    assert {"email_sent", "email_opened", "support"} <= set(kinds)
    assert [e["event"] for e in data["provider_events"]] == ["open"]
    assert run(cli_env, "customer", "export", ADDRESS) == run(cli_env, "customer", "export", "b0")
    app.close()


def test_erase_removes_personal_data_keeps_figures_and_never_mails_the_address_again(
        cli_env: dict[str, str]) -> None:
    app = a_customer_with_history(cli_env)
    with app.engine.connect() as conn:
        cid = conn.execute(select(Customer.id)).scalar_one()
    with app.engine.begin() as conn:  # a mail still waiting when the request comes
        waiting = conn.execute(insert(Message).returning(Message.id).values(
            idempotency_key="later", customer_id=cid, flow="win_back", step="one",
            template="thank_you", to_email=ADDRESS, status="scheduled",
            due_at=T0 + timedelta(days=3), attempts=0, context={"order_id": "o0"},
            created_at=T0, updated_at=T0)).scalar_one()
    said = run(cli_env, "customer", "erase", "b0", "--yes")
    assert f"now erased:{cid}" in said and "mails cancelled 1" in said
    exported = run(cli_env, "customer", "export", f"erased:{cid}")
    for personal in (ADDRESS, "Lovelace", "Sam", "Ada"):
        assert personal not in exported, personal
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Order)).scalar_one() == 1
        assert conn.execute(select(Message.status).where(Message.id == waiting)) \
            .scalar_one() == "cancelled"
        assert conn.execute(select(ProviderEvent.email)).scalar_one() is None
        assert conn.execute(select(func.count()).select_from(MessageContent)).scalar_one() == 0
        [(scope, reason, email)] = conn.execute(select(
            Suppression.scope, Suppression.reason, Suppression.email).where(
            Suppression.email_hash == hash_of(ADDRESS))).all()
        assert (scope, reason, email) == ("all", "erased", None)
    # The shop imports the person again under a new id: the address still gets nothing.
    with app.engine.begin() as conn:
        new_cid = conn.execute(insert(Customer).returning(Customer.id).values(
            external_id="again", email=ADDRESS, attributes={}, marketing_consent=True,
            created_at=T0, updated_at=T0)).scalar_one()
        again = conn.execute(insert(Message).returning(Message.id).values(
            idempotency_key="again", customer_id=new_cid, flow="thank_you", step="thanks",
            template="thank_you", to_email=ADDRESS, status="scheduled", due_at=T0,
            attempts=0, context={}, created_at=T0, updated_at=T0)).scalar_one()
    ids: list[int] = []
    dispatch(app, ids.extend)
    assert send_batch(app, ids, transport=FileTransport(app.settings.outbox_dir)) \
        ["suppressed"] == 1
    with app.engine.connect() as conn:
        assert conn.execute(select(Message.last_error).where(Message.id == again)) \
            .scalar_one() == "erased"
    app.close()


def test_an_unknown_customer_is_a_clear_error(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["customer", "erase", "nobody", "--yes"], env=cli_env)
    assert result.exit_code == 2 and "no customer with customer_id or email 'nobody'" in \
        result.output
