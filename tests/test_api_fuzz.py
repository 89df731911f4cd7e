"""Schemathesis against the ingest API's own OpenAPI document: no input gives a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy.engine import make_url

from lifecycle.apikeys import SCOPES, create_key
from lifecycle.app import App
from lifecycle.clock import ManualClock
from lifecycle.config import load_settings
from lifecycle.timeutil import UTC
from lifecycle.web.app import create_app

T0 = datetime(2026, 6, 3, 12, tzinfo=UTC)


@pytest.fixture
def api_app(fresh_database_url: str, tmp_path: Path) -> Iterator[App]:
    app = App(replace(load_settings({}), database_url=make_url(fresh_database_url),
                      secret_key="z" * 40, outbox_dir=tmp_path / "outbox"),
              clock=ManualClock(T0))
    yield app
    app.close()


@pytest.fixture
def api_key(api_app: App) -> str:
    with api_app.engine.begin() as conn:
        return f"Bearer {create_key(conn, 'fuzz', list(SCOPES), T0)}"


def test_no_generated_request_makes_the_api_answer_with_a_5xx(api_app: App,
                                                              api_key: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(api_app),
                                            headers={"Authorization": api_key})
    operations = [result.ok() for result in schema.get_all_operations()]
    tried = []
    for operation in operations:
        if not operation.path.startswith("/api/v1/"):
            continue
        tried.append(operation.path)

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def no_5xx(case: Any) -> None:
            for headers in ({"Authorization": api_key}, {}):  # with the key, and without
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, case.body,
                                                    response.status_code, response.text[:500])
                assert response.status_code in (200, 401, 403, 422), response.text[:500]

        no_5xx()
    assert sorted(tried) == ["/api/v1/customers", "/api/v1/events", "/api/v1/offers",
                             "/api/v1/orders", "/api/v1/referrals", "/api/v1/reviews",
                             "/api/v1/support"]
