"""`lifecycle flows preview` renders a flow's mails for one customer from stored data."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from lifecycle.cli import cli
from lifecycle.db import make_engine
from lifecycle.links import verify
from lifecycle.models import Customer, Order

SECRET = "Pv7kQ2mX9zL4wR8tN3yB6cD1hJ5gS0eA"


def test_preview_renders_every_mail_of_the_flow_with_the_customers_data(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "LIFECYCLE_SECRET_KEY": SECRET, "LIFECYCLE_SHOP_NAME": "Leaf and Bean",
           "LIFECYCLE_BASE_URL": "https://crm.leaf.example"}
    runner = CliRunner()
    assert runner.invoke(cli, ["sample-data", "--customers", "30", "--until", "2026-05-01"],
                         env=env).exit_code == 0
    engine = make_engine(env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        customer = conn.execute(select(Customer.__table__).where(
            Customer.id.in_(select(Order.customer_id).where(Order.status == "completed")))
            .order_by(Customer.id).limit(1)).one()
        latest = conn.execute(select(Order.external_id).where(
            Order.customer_id == customer.id, Order.status == "completed")
            .order_by(Order.ordered_at.desc()).limit(1)).scalar_one()
    engine.dispose()
    result = runner.invoke(cli, ["flows", "preview", "win_back", "--customer",
                                 customer.external_id, "--as-of", "2026-05-02",
                                 "--html-dir", str(tmp_path / "html")], env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.count("Subject: ") == 3
    assert f"Subject: We miss you, {customer.first_name}" in out
    # A preview shows a sample code, plainly not a real one; it stores none (tests/test_offers.py)
    assert "BACK10-TEST-CODE" in out and "BACK20-TEST-CODE" in out
    token = re.search(r"https://crm\.leaf\.example/u/(\S+)", out).group(1)  # type: ignore[union-attr]
    assert verify(SECRET, "unsubscribe", token)["c"] == customer.id
    assert sorted(p.name for p in (tmp_path / "html").iterdir()) == [
        "win_back-last-chance-winback_3.html", "win_back-miss-you-winback_1.html",
        "win_back-ten-percent-winback_2.html"]
    thanks = runner.invoke(cli, ["flows", "preview", "thank_you", "--customer",
                                 customer.external_id, "--as-of", "2026-05-02"], env=env)
    assert thanks.exit_code == 0 and f"order {latest}" in thanks.stdout
    assert "The Leaf and Bean team" in thanks.stdout


def test_preview_of_an_unknown_flow_is_one_clear_error(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["flows", "preview", "nope", "--customer", "x"], env=cli_env)
    assert result.exit_code == 2 and "no flow 'nope'" in result.stderr
