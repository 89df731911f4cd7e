"""The flow page shows the content and data checks of ``lifecycle flows validate`` for its flow."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient
from markupsafe import escape

from lifecycle.app import App
from tests.factories import WEB_T0, account, add_customer, add_order, logged_in

ROOT = Path(__file__).resolve().parent.parent


def test_the_flow_page_lists_template_errors_and_data_warnings(
        app: App, web: TestClient, tmp_path: Path) -> None:
    templates, flows = tmp_path / "email", tmp_path / "flows"
    shutil.copytree(ROOT / "templates" / "email", templates)
    shutil.copytree(ROOT / "flows", flows)
    german = templates / "thank_you" / "de" / "body.txt"
    german.write_text(german.read_text(encoding="utf-8").replace(
        "{{ customer.first_name }}", "{{ customer.frist_name }}"), encoding="utf-8")
    (flows / "coffee_fans.yaml").write_text(
        "trigger: {first_order: {category: Coffee}}\nsteps:\n  - send: loyalty_offer\n",
        encoding="utf-8")
    with app.engine.begin() as conn:
        ada = add_customer(conn, "ada", WEB_T0, first_name="Ada")
        add_order(conn, ada, WEB_T0 - WEB_T0.resolution * 10**6, "9.00", items=[
            {"sku": "COF-1", "name": "Beans", "price": "9.00", "category": "coffee"}])
    account(app, "max@shop.example", "manager")
    logged_in(web, "max@shop.example")
    app.settings = replace(app.settings, templates_dir=templates, flows_dir=flows)

    thanks = web.get("/flows/thank_you").text
    assert '<h2 id="checks">Checks</h2>' in thanks
    assert "1 problem in the templates this flow sends" in thanks
    assert (f"<code>{german}:1</code>: "
            + str(escape("`customer` has no `frist_name`; did you mean `first_name`?"))) in thanks
    assert "rendered for 1 customer (ada) in every locale" in thanks

    coffee = web.get("/flows/coffee_fans").text
    assert "1 warning: this flow names what no data has" in coffee
    assert str(escape("no order has category 'Coffee'; known: coffee (1); did you mean "
                      "'coffee'?")) in coffee
    assert "problem in the templates" not in coffee

    assert 'id="checks"' not in web.get("/flows/win_back").text


def test_a_flow_page_s_checks_are_kept_for_a_minute_while_its_file_stays_the_same(
        app: App, tmp_path: Path) -> None:
    from lifecycle.flows.checks import CHECKS_KEPT_SECONDS, check_flow
    from lifecycle.flows.definitions import Context, load_flow

    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    context = Context.from_folders(app.settings.templates_dir, {"lapsed", "vip", "loyal"})
    flow = load_flow(flows / "thank_you.yaml", context)
    first = check_flow(app.settings, app.engine, flow, WEB_T0)
    assert check_flow(app.settings, app.engine, flow, WEB_T0) is first  # not rendered again
    assert CHECKS_KEPT_SECONDS == 60.0
    path = flows / "thank_you.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    edited = load_flow(path, context)
    assert check_flow(app.settings, app.engine, edited, WEB_T0) is not first  # a new file
