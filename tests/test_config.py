"""Configuration comes from environment variables only, and bad values say which."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.config import DEFAULT_SENDGRID_API_HOST, SETTINGS, ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_no_variables_give_the_embedded_default() -> None:
    settings = load_settings({})
    assert settings.database_url.render_as_string() == "sqlite:///lifecycle.db"
    assert settings.broker_url is None and settings.is_embedded
    assert settings.mail_transport == "file"
    assert settings.sendgrid_api_host == DEFAULT_SENDGRID_API_HOST
    assert len(settings.secret_key) >= 32


def test_postgresql_urls_are_driven_by_psycopg_3() -> None:
    settings = load_settings({"LIFECYCLE_DATABASE_URL": "postgresql://app@db.internal/lifecycle"})
    assert settings.database_url.drivername == "postgresql+psycopg"
    assert settings.database_url.database == "lifecycle"


def test_production_values_are_taken_as_given() -> None:
    settings = load_settings({
        "LIFECYCLE_DATABASE_URL": "postgresql+psycopg://app@db/lc",
        "LIFECYCLE_BROKER_URL": "amqp://guest:guest@mq:5672/",
        "LIFECYCLE_MAIL_TRANSPORT": "sendgrid",
        "SENDGRID_API_KEY": "SG.key",
        "SENDGRID_API_HOST": "http://127.0.0.1:9999/",
        "LIFECYCLE_SECRET_KEY": "s" * 40,
        "LIFECYCLE_BASE_URL": "https://crm.shop.example",
        "LIFECYCLE_TIMEZONE": "Europe/Berlin",
    })
    assert not settings.is_embedded
    assert settings.sendgrid_api_host == "http://127.0.0.1:9999"
    assert settings.secret_key == "s" * 40
    assert settings.timezone == "Europe/Berlin"


@pytest.mark.parametrize(("env", "named"), [
    ({"LIFECYCLE_DATABASE_URL": "not a url"}, "LIFECYCLE_DATABASE_URL"),
    ({"LIFECYCLE_DATABASE_URL": "mysql://root@localhost/x"}, "LIFECYCLE_DATABASE_URL"),
    ({"LIFECYCLE_BROKER_URL": "kafka://broker:9092"}, "LIFECYCLE_BROKER_URL"),
    ({"LIFECYCLE_MAIL_TRANSPORT": "pigeon"}, "LIFECYCLE_MAIL_TRANSPORT"),
    ({"LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "LIFECYCLE_SECRET_KEY": "k" * 32},
     "SENDGRID_API_KEY"),
    ({"LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "SENDGRID_API_KEY": "SG.x"},
     "LIFECYCLE_SECRET_KEY"),
    ({"SENDGRID_API_HOST": "api.sendgrid.com"}, "SENDGRID_API_HOST"),
    ({"SENDGRID_WEBHOOK_PUBLIC_KEY": "not base64!"}, "SENDGRID_WEBHOOK_PUBLIC_KEY"),
    ({"LIFECYCLE_SECRET_KEY": "short"}, "LIFECYCLE_SECRET_KEY"),
    ({"LIFECYCLE_BASE_URL": "ftp://files"}, "LIFECYCLE_BASE_URL"),
    ({"LIFECYCLE_SMTP_URL": "http://mail:25"}, "LIFECYCLE_SMTP_URL"),
    ({"LIFECYCLE_SMTP_URL": "smtp://mail:notaport"}, "LIFECYCLE_SMTP_URL"),
    ({"LIFECYCLE_TIMEZONE": "Moon/Base"}, "LIFECYCLE_TIMEZONE"),
    ({"LIFECYCLE_WORKER_THREADS": "many"}, "LIFECYCLE_WORKER_THREADS"),
    ({"LIFECYCLE_WORKER_THREADS": "0"}, "LIFECYCLE_WORKER_THREADS"),
    ({"LIFECYCLE_TICK_SECONDS": "-1"}, "LIFECYCLE_TICK_SECONDS"),
    ({"LIFECYCLE_LOG_LEVEL": "LOUD"}, "LIFECYCLE_LOG_LEVEL"),
    ({"LIFECYCLE_MAIL_FROM": "Zoë's Shop <shop@example.com>"}, "LIFECYCLE_MAIL_FROM"),
    ({"LIFECYCLE_MAIL_FROM": "no address"}, "LIFECYCLE_MAIL_FROM"),
    ({"LIFECYCLE_SHOP_URL": "shop.example"}, "LIFECYCLE_SHOP_URL"),
    ({"LIFECYCLE_FLOWS_DIR": "/no/such/folder"}, "LIFECYCLE_FLOWS_DIR"),
    ({"LIFECYCLE_SEND_LEASE_SECONDS": "10", "LIFECYCLE_SEND_TIMEOUT": "10"},
     "LIFECYCLE_SEND_LEASE_SECONDS=10 must be longer than LIFECYCLE_SEND_TIMEOUT=10"),
])
def test_each_bad_value_is_refused_naming_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_a_bad_value_stops_the_command_with_one_line_and_status_2(tmp_path: Path) -> None:
    env = {**os.environ, "LIFECYCLE_BROKER_URL": "kafka://nowhere"}
    done = subprocess.run([sys.executable, "-m", "lifecycle", "db", "upgrade"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "LIFECYCLE_BROKER_URL" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert f"| `{setting.name}` |" in readme, f"{setting.name} missing from the README table"
