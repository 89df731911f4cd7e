"""The scheduler's flow job: a broken file is logged and skipped, the valid flows run."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.flows.service import tick
from lifecycle.models import FlowEnrollment, Message
from lifecycle.timeutil import UTC
from tests.factories import add_customer, add_touchpoint

ROOT = Path(__file__).resolve().parent.parent


def test_a_broken_flow_is_skipped_with_its_line_while_the_others_run(
        fresh_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    (flows / "broken.yaml").write_text("trigger: {order_placed: {}}\nsteps:\n  - wait: soonish\n",
                                       encoding="utf-8")
    clock = ManualClock(datetime(2026, 6, 3, 12, tzinfo=UTC))
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      flows_dir=flows), clock=clock)
    with app.engine.begin() as conn:
        cid = add_customer(conn, "ivy", clock.now(), timezone="UTC")
    caplog.set_level(logging.ERROR, logger="lifecycle.flows.service")
    tick(app)  # the first tick only places the trigger cursor
    with app.engine.begin() as conn:
        add_touchpoint(conn, cid, "order_placed", clock.now(), order_id="o1", nth=1,
                       total="20.00")
    tick(app)
    assert f"{flows / 'broken.yaml'}:3:11: 'soonish' is not a duration" in caplog.text
    clock.advance(timedelta(hours=2))
    tick(app)
    with app.engine.connect() as conn:
        enrolled = set(conn.execute(select(FlowEnrollment.flow)).scalars())
        sent = [(m.template, m.status) for m in conn.execute(select(Message))]
    assert enrolled == {"thank_you", "feedback_request"}
    assert sent == [("thank_you", "scheduled")]
    app.close()
