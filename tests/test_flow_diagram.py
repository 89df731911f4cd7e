"""Flows you can see: each step's figures, the flow drawn as SVG, the flows list's columns, the
red notice of failing mails, the failed and skipped result columns, and `lifecycle flows show`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Connection, insert
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.cli import cli
from lifecycle.config import load_settings
from lifecycle.flows.definitions import Context, load_flow
from lifecycle.flows.diagram import (
    CHARS,
    boxes_of_file,
    boxes_of_flow,
    diagram,
    problems_by_box,
)
from lifecycle.flows.figures import flow_overview, recent_failures, step_figures
from lifecycle.models import FlowEnrollment, Message
from lifecycle.results import flow_results
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app
from lifecycle.yamlfile import InvalidFile, load
from tests.factories import WEB_T0, account, add_customer, logged_in

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
TEMPLATE_ERROR = "template error: 'first_name' is undefined (winback_1/en/body.txt:3)"


def win_back() -> object:
    return load_flow(ROOT / "flows" / "win_back.yaml",
                     Context.from_folders(ROOT / "templates" / "email", {"lapsed"}))


def a_mail(conn: Connection, cid: int, step: str, status: str, at: datetime,
           error: str | None = None, flow: str = "win_back") -> None:
    conn.execute(insert(Message).values(
        idempotency_key=f"{flow}:{cid}:{step}:{status}:{at.isoformat()}", customer_id=cid,
        flow=flow, step=step, template="winback_1", to_email="x@example.com", status=status,
        due_at=at, sent_at=at if status == "sent" else None, attempts=1, last_error=error,
        context={}, created_at=at, updated_at=at))


def an_enrollment(conn: Connection, cid: int, key: str, status: str, step: str,
                  at: datetime, reason: str | None = None) -> None:
    conn.execute(insert(FlowEnrollment).values(
        customer_id=cid, flow="win_back", entry_key=key, status=status, current_step=step,
        next_run_at=at + timedelta(days=7) if status == "active" else None, enrolled_at=at,
        finished_at=None if status == "active" else at, exit_reason=reason, context={}))


def a_win_back_week(conn: Connection, now: datetime) -> int:
    """Three customers waiting (two at pause-1, one at morning), one who ordered; miss-you
    mails sent 2, failed 3 (two of one reason), skipped 2 (capped, cancelled), 1 not sent yet;
    and a mail of another flow that failed."""
    a, b, c, d = (add_customer(conn, name, now - timedelta(days=400)) for name in "abcd")
    an_enrollment(conn, a, "wb:a", "active", "pause-1", now - timedelta(days=2))
    an_enrollment(conn, b, "wb:b", "active", "pause-1", now - timedelta(days=2))
    an_enrollment(conn, c, "wb:c", "active", "morning", now - timedelta(hours=3))
    an_enrollment(conn, d, "wb:d", "exited", "pause-1", now - timedelta(days=3), "goal: ordered")
    an_enrollment(conn, d, "wb:d2", "completed", "last-chance", now - timedelta(days=40),
                  "completed")
    hour = timedelta(hours=1)
    a_mail(conn, a, "miss-you", "sent", now - 30 * hour)
    a_mail(conn, b, "miss-you", "sent", now - 20 * hour)
    a_mail(conn, c, "miss-you", "failed", now - 2 * hour, TEMPLATE_ERROR)
    a_mail(conn, d, "miss-you", "failed", now - 3 * hour, TEMPLATE_ERROR)
    a_mail(conn, d, "ten-percent", "failed", now - 4 * 24 * hour, "SendGrid said 400: bad address")
    a_mail(conn, a, "ten-percent", "suppressed", now - 5 * hour, "frequency cap reached")
    a_mail(conn, b, "ten-percent", "cancelled", now - 6 * hour, "cancelled by sue@shop.example")
    a_mail(conn, c, "ten-percent", "scheduled", now - 1 * hour)
    a_mail(conn, a, "thanks", "failed", now - 1 * hour, "nothing to do with win_back",
           flow="thank_you")
    return a


def test_each_step_counts_who_waits_and_what_its_mails_did_with_reasons(
        conn: Connection) -> None:
    now = WEB_T0
    a_win_back_week(conn, now)
    f = step_figures(conn, "win_back", now - timedelta(days=30), now + timedelta(seconds=1))
    assert f.active == 3
    assert (f.step("pause-1").waiting, f.step("morning").waiting) == (2, 1)
    miss = f.step("miss-you")
    assert (miss.sent, miss.failed, miss.skipped, miss.pending) == (2, 2, 0, 0)
    assert miss.failed_reasons == [(TEMPLATE_ERROR, 2)]
    ten = f.step("ten-percent")
    assert (ten.sent, ten.failed, ten.skipped, ten.pending) == (0, 1, 2, 1)
    assert sorted(ten.skipped_reasons) == [("cancelled: cancelled by sue@shop.example", 1),
                                           ("suppressed: frequency cap reached", 1)]
    assert f.endings == {"goal: ordered": 1}  # begun in the period only
    assert f.step("last-chance").empty


def test_flow_results_count_failed_and_skipped_mails(conn: Connection) -> None:
    now = WEB_T0
    a_win_back_week(conn, now)
    r = flow_results(conn, "win_back", now - timedelta(days=30), now + timedelta(seconds=1),
                     timedelta(days=7), ["miss-you", "ten-percent"])
    rows = {row.step: row.counts for row in r.rows}
    assert (rows["miss-you"]["decided"], rows["miss-you"]["sent"],
            rows["miss-you"]["failed"]) == (4, 2, 2)
    assert (rows["ten-percent"]["failed"], rows["ten-percent"]["skipped"]) == (1, 2)
    assert (r.total.counts["failed"], r.total.counts["skipped"]) == (3, 2)


def test_the_list_counts_customers_now_and_mails_of_the_last_seven_days(
        conn: Connection) -> None:
    now = WEB_T0
    a = a_win_back_week(conn, now)
    a_mail(conn, a, "miss-you", "sent", now - timedelta(days=8))  # before the week
    seen = flow_overview(conn, now)
    assert (seen["win_back"].active, seen["win_back"].sent, seen["win_back"].failed) == (3, 2, 3)
    assert (seen["thank_you"].sent, seen["thank_you"].failed) == (0, 1)
    lately = recent_failures(conn, "win_back", now)
    assert lately.count == 2 and lately.reasons == [(TEMPLATE_ERROR, 2)]  # 4 days ago: no


def test_the_diagram_is_well_formed_svg_with_every_step_and_its_figures(
        conn: Connection) -> None:
    now = WEB_T0
    a_win_back_week(conn, now)
    flow = win_back()
    figures = step_figures(conn, "win_back", now - timedelta(days=60), now + timedelta(hours=1))
    svg = str(diagram(boxes_of_flow(flow), figures, title="win_back"))
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and "script" not in svg
    drawn = [g.get("data-step") for g in root.iter(f"{SVG}g")]
    assert drawn == ["(trigger)", "(goals)"] + [s.id for s in flow.steps] + ["(end)"]
    texts = {g.get("data-step"): " | ".join("".join(t.itertext()) for t in g.iter(f"{SVG}text"))
             for g in root.iter(f"{SVG}g")}
    assert "waiting now 2" in texts["pause-1"]
    assert "sent 2 · failed 2 · skipped 0" in texts["miss-you"]
    assert "failed 2: template error" in texts["miss-you"]
    assert "skipped 1: suppressed: frequency cap reached" in texts["ten-percent"]
    assert "not sent yet 1" in texts["ten-percent"] and "completed 1" in texts["(end)"]
    assert "if clicked the mail of step ten-percent" in texts["clicked-before"]
    assert "then → exit" in svg  # the branch's jump, labelled
    assert "goal: ordered 1" in texts["(goals)"] and "in the flow now 3" in texts["(trigger)"]


def test_text_in_the_diagram_is_escaped_and_long_text_is_cut_with_a_tooltip(
        tmp_path: Path) -> None:
    value = "<script>alert('x')</script> & " + "very " * 40 + "long"
    path = tmp_path / "odd.yaml"
    path.write_text("trigger:\n  first_order: {}\nsteps:\n  - id: check\n    branch:\n"
                    f"      if: {{attribute: {{name: note, op: '=', value: {json.dumps(value)}}}}}\n"
                    "      then: exit\n  - id: thanks\n    send: thank_you\n", encoding="utf-8")
    flow = load_flow(path, Context({"thank_you"}, set()))
    svg = str(diagram(boxes_of_flow(flow), title="odd & <flow>"))
    root = ET.fromstring(svg)  # raises if anything went in unescaped
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    branch = next(g for g in root.iter(f"{SVG}g") if g.get("data-step") == "check")
    lines = [t for t in branch.iter(f"{SVG}text")]
    assert all(len("".join(t.itertext()).strip()) <= CHARS + 2 for t in lines
               if t.find(f"{SVG}title") is None)
    cut = [t for t in lines if t.find(f"{SVG}title") is not None]
    assert cut and "".join(cut[-1].itertext()).endswith("…")
    assert cut[-1].find(f"{SVG}title").text.endswith('very long"')  # the whole condition
    assert root.find(f"{SVG}title").text == "odd & <flow>"


def test_a_step_named_end_is_a_step_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "ends.yaml"
    path.write_text("trigger:\n  first_order: {}\nsteps:\n  - id: check\n    branch:\n"
                    "      if: {ordered: true}\n      then: end\n"
                    "  - id: wait\n    wait: 2 hours\n  - id: end\n    send: thank_you\n",
                    encoding="utf-8")
    svg = str(diagram(boxes_of_flow(load_flow(path, Context({"thank_you"}, set())))))
    drawn = [g.get("data-step") for g in ET.fromstring(svg).iter(f"{SVG}g")]
    assert drawn == ["(trigger)", "check", "wait", "end", "(end)"]
    assert "then → end" in svg and ">else<" in svg  # else: the next step, below


def test_a_loop_back_and_an_early_exit_run_on_the_right(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("trigger:\n  first_order: {}\nsteps:\n  - id: pause\n    wait: 2 days\n"
                    "  - id: nudge\n    send: thank_you\n  - id: again\n    branch:\n"
                    "      if: {clicked: nudge}\n      then: done\n      else: later\n"
                    "  - id: done\n    exit: clicked\n  - id: later\n    wait: 1 day\n"
                    "  - id: back\n    branch:\n      if: {ordered: true}\n      then: exit\n"
                    "      else: pause\n", encoding="utf-8")
    root = ET.fromstring(str(diagram(boxes_of_flow(load_flow(path, Context({"thank_you"},
                                                                           set()))))))
    jumps = ["".join(t.itertext()) for t in root.iter(f"{SVG}text") if t.get("font-size") == "10"]
    assert jumps == ["else → later", "exit", "else → pause"]  # back then: exit, straight down
    lanes = [p.get("stroke-dasharray") for p in root.iter(f"{SVG}path") if " V" in p.get("d", "")]
    assert lanes == [None, None, "4 3"]  # the loop back is dashed


def test_a_problem_of_a_flow_file_is_marked_on_its_step(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("trigger:\n  first_order: {}\nsteps:\n  - id: pause\n    wait: 2 hours\n"
                    "  - id: thanks\n    send: no_such_template\n  - id: bye\n    exit: done\n",
                    encoding="utf-8")
    try:
        load_flow(path, Context({"thank_you"}, set()))
    except InvalidFile as exc:
        problems = exc.problems
    else:
        raise AssertionError("the file should have a problem")
    located = load(path)
    boxes = boxes_of_file(located)
    placed = problems_by_box(located, boxes, problems)
    assert list(placed) == ["thanks"] and "no_such_template" in placed["thanks"][0].message
    root = ET.fromstring(str(diagram(boxes, None, placed)))
    marked = {g.get("data-step"): g for g in root.iter(f"{SVG}g")}
    assert marked["thanks"].find(f"{SVG}rect").get("stroke") == "#b42318"
    assert marked["pause"].find(f"{SVG}rect").get("stroke") != "#b42318"
    assert "Problem, line 7" in "".join(marked["thanks"].itertext())
    assert "wait 2 hours" in "".join(marked["pause"].itertext())  # read as the checker reads it
    assert "send no_such_template" in "".join(marked["thanks"].itertext())


def test_the_flows_list_shows_status_trigger_and_counts(app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        a_win_back_week(conn, app.clock.now())
    account(app, "max@shop.example", "manager")
    page = logged_in(web, "max@shop.example").get("/flows").text
    for heading in ("Status", "Trigger", "Customers in it now", "Sent, last 7 days",
                    "Failed, last 7 days"):
        assert f">{heading}</th>" in page
    row = page[page.index('<a href="/flows/win_back">'):]
    row = row[:row.index("</tr>")]
    assert "<td>live</td><td>a customer enters the segment Lapsed</td>" in row
    assert '<td class="n">3</td><td class="n">2</td><td class="n error">3</td>' in row


def test_the_flow_page_draws_the_flow_and_warns_of_failing_mails(
        app: App, web: TestClient) -> None:
    account(app, "max@shop.example", "manager")
    logged_in(web, "max@shop.example")
    quiet = web.get("/flows/win_back").text
    assert 'class="flow-diagram"' in quiet and 'role="alert"' not in quiet
    with app.engine.begin() as conn:
        a_win_back_week(conn, app.clock.now())
    page = web.get("/flows/win_back").text
    notice = page[page.index('role="alert"'):]
    notice = notice[:notice.index("</p>")]
    assert "2 mails of this flow failed in the last 24 hours." in notice
    assert "template error: &#39;first_name&#39; is undefined" in notice
    svg = page[page.index("<svg"):page.index("</svg>") + 6]
    assert 'data-step="miss-you"' in svg and "failed 2: template error" in svg
    assert '<th scope="col" class="n">failed</th><th scope="col" class="n">skipped</th>' in page


def test_a_flow_file_with_problems_has_a_page_with_each_problem_on_its_step(
        app: App, tmp_path: Path) -> None:
    import shutil

    flows = tmp_path / "flows"
    shutil.copytree(app.settings.flows_dir, flows)
    text = (flows / "win_back.yaml").read_text("utf-8")
    (flows / "win_back.yaml").write_text(text.replace("send: winback_1", "send: winback_9"),
                                         "utf-8")
    broken = App(replace(app.settings, flows_dir=flows), clock=app.clock)
    account(broken, "max@shop.example", "manager")
    web = logged_in(TestClient(create_app(broken)), "max@shop.example")
    listing = web.get("/flows").text
    assert '<a href="/flows/win_back">win_back</a>: ' in listing  # under the problems
    page = web.get("/flows/win_back")
    assert page.status_code == 200 and "the flow does not run" in page.text
    svg = page.text[page.text.index("<svg"):page.text.index("</svg>") + 6]
    root = ET.fromstring(svg)
    step = next(g for g in root.iter(f"{SVG}g") if g.get("data-step") == "miss-you")
    assert "unknown template &#39;winback_9&#39;" in svg or "winback_9" in "".join(step.itertext())
    assert step.find(f"{SVG}rect").get("stroke") == "#b42318"
    broken.close()


def _cli_app(env: dict[str, str]) -> App:
    return App(replace(load_settings(env), database_url=make_url(env["LIFECYCLE_DATABASE_URL"])))


def test_flows_show_prints_the_steps_and_their_figures(cli_env: dict[str, str]) -> None:
    app = _cli_app(cli_env)
    now = datetime.now(UTC)
    with app.engine.begin() as conn:
        a_win_back_week(conn, now)
    app.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["flows", "show", "win_back"], env={**cli_env, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "win_back: live, when a customer enters the segment Lapsed; 3 customers in it now" \
        in text
    assert "2 mails of this flow failed in the last 24 hours" in text
    order = [text.index(f"· {step}:") for step in ("morning", "miss-you", "pause-1",
                                                    "ten-percent", "clicked-before")]
    assert order == sorted(order)
    assert "waiting now 2" in text and "sent 2 · failed 2 · skipped 0\n" in text
    assert f"failed 2: {TEMPLATE_ERROR}" in text
    assert "skipped 1: suppressed: frequency cap reached" in text
    assert "then → exit, else → next" in text
    data = json.loads(runner.invoke(cli, ["flows", "show", "win_back", "--json"],
                                    env=cli_env).stdout)
    steps = {s["key"]: s for s in data["steps"]}
    assert steps["pause-1"]["figures"]["waiting"] == 2
    assert steps["ten-percent"]["figures"]["skipped"] == 2
    assert data["failed_last_24_hours"]["mails"] == 2
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    assert data["from"] == (today - timedelta(days=89)).isoformat()
    week = json.loads(runner.invoke(cli, ["flows", "show", "win_back", "--json", "--days", "7"],
                                    env=cli_env).stdout)
    assert week["from"] == (today - timedelta(days=6)).isoformat()
    missing = runner.invoke(cli, ["flows", "show", "no_such_flow"], env=cli_env)
    assert missing.exit_code != 0 and "no flow 'no_such_flow'" in missing.output


def test_flows_show_puts_a_problem_on_its_step_and_fails(cli_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    import shutil

    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    text = (flows / "win_back.yaml").read_text("utf-8")
    (flows / "win_back.yaml").write_text(text.replace("wait: {for: 7 days", "wait: {for: 7 dais"),
                                         "utf-8")
    result = CliRunner().invoke(cli, ["flows", "show", "win_back"],
                                env={**cli_env, "LIFECYCLE_FLOWS_DIR": str(flows),
                                     "COLUMNS": "250"})
    assert result.exit_code == 1
    tree = result.stdout
    step = tree[tree.index("· pause-1:"):tree.index("· ten-percent:")]
    assert "problem: " in step and "'7 dais' is not a duration" in step
    assert tree.startswith("win_back: invalid;")
