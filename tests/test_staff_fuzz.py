"""Hypothesis over the staff pages' query strings and forms, logged in as an admin, and over the
pages behind a mail's links: no generated request gets a 5xx.  (The ingest API has its own
Schemathesis run: tests/test_api_fuzz.py.)"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.app import App
from lifecycle.links import sign
from lifecycle.timeline import TIMELINE_KINDS
from tests.factories import WEB_SECRET, WEB_T0, account, add_campaign, csrf_of, logged_in

#: Odd text: NUL, a superscript digit, digits no BIGINT holds, a LIKE wildcard, long text.
ODD = st.sampled_from(["\x00", "a\x00b", "\u00b9", "9" * 20, "-1", "%", "_", "1e400", "nan",
                       "x" * 5000, "2026-06-01T00:00:00Z~" + "9" * 30, "", " ", "../..",
                       "//evil.example", "\u202e", "{{ 7*7 }}", "<b>"])
TEXT = st.one_of(ODD, st.text(st.characters(exclude_categories=("Cs",)), max_size=40))


def one_of_or(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(known), TEXT)


def path_part(value: str) -> str:
    return quote(value, safe="") or "x"


def requests(cid: int, mid: int, tokens: dict[str, str]) -> list[st.SearchStrategy[Any]]:
    """(method, path, query, form) of every staff page and form, and the link pages."""
    ids = one_of_or([str(cid), str(mid), "1"])
    flows = one_of_or(["thank_you", "win_back", "second_purchase"])
    gets = [
        st.builds(lambda q: ("GET", "/customers", {"q": q}, None), TEXT),
        st.builds(lambda k, kind, b, a: ("GET", f"/customers/{path_part(k)}",
                                         {"kind": kind, "before": b, "after": a}, None),
                  ids, one_of_or(list(TIMELINE_KINDS)), TEXT, TEXT),
        st.builds(lambda c, m: ("GET", f"/customers/{path_part(c)}/mails/{path_part(m)}", {},
                                None), ids, ids),
        st.builds(lambda f, d, w: ("GET", f"/flows/{path_part(f)}", {"days": d, "window": w},
                                   None), flows, TEXT, TEXT),
        st.builds(lambda f, c: ("GET", f"/flows/{path_part(f)}/preview", {"customer": c}, None),
                  flows, one_of_or(["b0@example.com"])),
        st.builds(lambda d: ("GET", "/segments", {"days": d}, None), TEXT),
        st.builds(lambda n: ("GET", "/login", {"next": n}, None), TEXT),
        st.builds(lambda s: ("GET", f"/f/{tokens['feedback']}", {"score": s}, None), TEXT),
        st.builds(lambda t: ("GET", f"/u/{path_part(t)}", {}, None),
                  one_of_or([tokens["unsubscribe"]])),
        st.builds(lambda t: ("GET", f"/p/{path_part(t)}", {}, None),
                  one_of_or([tokens["preferences"]])),
    ]
    posts = [
        st.builds(lambda c, n: ("POST", f"/customers/{path_part(c)}/notes", {}, {"note": n}),
                  ids, TEXT),
        st.builds(lambda c, m, a: ("POST", f"/customers/{path_part(c)}/mails/{path_part(m)}/"
                                           f"{path_part(a)}", {}, {}),
                  ids, ids, one_of_or(["pause", "resume", "cancel"])),
        st.builds(lambda f, s, t, n, c: ("POST", f"/flows/{path_part(f)}/test", {}, {
            "step": s, "template": t, "nonce": n, "customer_id": c, "customer": c}),
            flows, one_of_or(["send"]), one_of_or(["thank_you"]), TEXT, ids),
        st.builds(lambda e, r, p, n: ("POST", "/admin/staff", {}, {
            "email": e, "role": r, "password": p, "name": n}),
            one_of_or(["new@shop.example"]), one_of_or(["support", "manager", "admin"]),
            one_of_or(["correct horse battery staple"]), TEXT),
        st.builds(lambda i, r, a: ("POST", f"/admin/staff/{path_part(i)}", {}, {
            "role": r, "active": a}), ids, one_of_or(["support", "manager"]),
            one_of_or(["yes", "no"])),
        st.builds(lambda n, s: ("POST", "/admin/apikeys", {}, {"name": n, "scope": s}),
                  TEXT, st.lists(one_of_or(["orders:write", "customers:write"]), max_size=3)),
        st.builds(lambda p: ("POST", f"/admin/apikeys/{path_part(p)}/revoke", {}, {}), TEXT),
        st.builds(lambda e, p, n: ("POST", "/login", {}, {"email": e, "password": p,
                                                          "next": n}), TEXT, TEXT, TEXT),
        st.builds(lambda c: ("POST", f"/f/{tokens['feedback']}", {}, {"comment": c}), TEXT),
        st.builds(lambda s, m: ("POST", f"/p/{tokens['preferences']}", {}, {
            "scope": s, "marketing": m}), one_of_or(["marketing"]), one_of_or(["on"])),
    ]
    return [*gets, *posts]


def test_no_generated_staff_page_request_or_form_gets_a_5xx(app: App, web: TestClient) -> None:
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, WEB_T0)
        from sqlalchemy import select

        from lifecycle.models import Message

        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
    tokens = {purpose: sign(WEB_SECRET, purpose, {"c": cid, "m": mid})
              for purpose in ("feedback", "unsubscribe", "preferences")}
    account(app, "ada@shop.example", "admin")
    logged_in(web, "ada@shop.example")
    csrf = csrf_of(web.get("/customers").text)

    for strategy in requests(cid, mid, tokens):  # each route its own examples

        @given(request=strategy)
        @settings(max_examples=20, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_5xx(request: Any) -> None:
            method, path, query, form = request
            if method == "GET":
                answer = web.get(path, params=query, follow_redirects=False)
            else:
                answer = web.post(path, params=query, data={"csrf": csrf, **form},
                                  follow_redirects=False)
            assert answer.status_code < 500, (method, path, query, form, answer.status_code,
                                              answer.text[:300])

        no_5xx()
