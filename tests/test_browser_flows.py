"""A flow's page in a real browser (Debian's Chromium, as tests/test_browser.py): the diagram
is drawn, visible, fits the page at 1280 px, and every text stays inside its box."""

from __future__ import annotations

import pytest

from lifecycle.app import App
from tests.factories import account
from tests.test_browser import log_in, page, site  # noqa: F401  (fixtures)
from tests.test_flow_diagram import a_win_back_week

pytest.importorskip("playwright.sync_api")

#: For each box of the diagram: how far its texts reach past the box's right edge (px, ≤ 0
#: when they fit), measured in the page's own pixels.
OVERHANG = """() => [...document.querySelectorAll('svg.flow-diagram g.box')].map(g => {
  const box = g.querySelector('rect').getBoundingClientRect();
  const right = Math.max(...[...g.querySelectorAll('text')].map(
      t => t.getBoundingClientRect().right));
  return [g.dataset.step, right - box.right];
})"""


def test_a_manager_sees_the_flow_drawn_with_its_figures_and_nothing_overflows(
        app: App, page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with app.engine.begin() as conn:
        a_win_back_week(conn, app.clock.now())
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")
    page.goto("/flows")
    page.get_by_role("link", name="win_back").first.click()
    picture = page.locator("svg.flow-diagram")
    assert picture.is_visible()
    assert page.get_by_role("alert").first.inner_text().startswith(
        "2 mails of this flow failed in the last 24 hours.")
    shape = picture.bounding_box()
    assert shape is not None and shape["width"] > 600 and shape["height"] > 600
    assert shape["x"] >= 0 and shape["x"] + shape["width"] <= 1280
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    # the per-step figures fit without scrolling sideways in their own box either
    steps = page.get_by_role("region", name="Per step")
    assert steps.evaluate("e => e.scrollWidth <= e.clientWidth"), steps.evaluate(
        "e => [e.scrollWidth, e.clientWidth]")
    overhang = dict(page.evaluate(OVERHANG))
    assert "miss-you" in overhang and "last-chance" in overhang
    assert all(px <= 0 for px in overhang.values()), overhang
    page.shots("flow-diagram")


def test_every_shipped_flow_is_drawn_whole_and_every_text_fits_its_box(
        app: App, page) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The diagram of each flow in flows/ (the shipped ones and any added to the gallery): one
    box per step, visible, inside the page at 1280 px, no text past its box."""
    from pathlib import Path

    from lifecycle.flows.definitions import Context, load_flow
    from lifecycle.segments.definitions import load_definitions

    folder = Path(__file__).resolve().parent.parent / "flows"
    shipped = [p for p in sorted(folder.glob("*.yaml"))
               if p.name not in ("segments.yaml", "policies.yaml")]
    assert len(shipped) >= 6
    account(app, "max@shop.example", "manager")
    log_in(page, "max@shop.example")
    for path in shipped:
        flow = load_flow(path, Context.from_folders(
            folder.parent / "templates" / "email",
            set(load_definitions(folder / "segments.yaml").all_names())))
        page.goto(f"/flows/{flow.name}")
        picture = page.locator("svg.flow-diagram")
        assert picture.is_visible(), flow.name
        shape = picture.bounding_box()
        assert shape is not None and shape["x"] + shape["width"] <= 1280, flow.name
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, flow.name
        overhang = dict(page.evaluate(OVERHANG))
        assert {step.id for step in flow.steps} <= set(overhang), flow.name
        assert all(px <= 0 for px in overhang.values()), (flow.name, overhang)
