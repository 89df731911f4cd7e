"""Configuration comes from environment variables only, and bad values say which."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.config import DEFAULT_SENDGRID_API_HOST, SETTINGS, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
#: A key the settings accept.
GOOD_KEY = "Tq7vX2mK9zL4wR8pN3yB6cD1hJ5gS0eA"


def test_no_variables_give_the_embedded_default() -> None:
    settings = load_settings({})
    assert settings.database_url.render_as_string() == "sqlite:///lifecycle.db"
    assert settings.broker_url is None and settings.is_embedded
    assert settings.mail_transport == "file"
    assert settings.sendgrid_api_host == DEFAULT_SENDGRID_API_HOST
    assert settings.secret_key is None  # the key kept in the database (tests/test_secret.py)
    assert settings.secret_key_previous == ()


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
        "LIFECYCLE_SECRET_KEY": GOOD_KEY,
        "LIFECYCLE_BASE_URL": "https://crm.shop.example",
        "LIFECYCLE_TIMEZONE": "Europe/Berlin",
    })
    assert not settings.is_embedded
    assert settings.sendgrid_api_host == "http://127.0.0.1:9999"
    assert settings.secret_key == GOOD_KEY
    assert settings.timezone == "Europe/Berlin"


@pytest.mark.parametrize(("env", "named"), [
    ({"LIFECYCLE_DATABASE_URL": "not a url"}, "LIFECYCLE_DATABASE_URL"),
    ({"LIFECYCLE_DATABASE_URL": "mysql://root@localhost/x"}, "LIFECYCLE_DATABASE_URL"),
    ({"LIFECYCLE_BROKER_URL": "kafka://broker:9092"}, "LIFECYCLE_BROKER_URL"),
    ({"LIFECYCLE_MAIL_TRANSPORT": "pigeon"}, "LIFECYCLE_MAIL_TRANSPORT"),
    ({"LIFECYCLE_MAIL_TRANSPORT": "sendgrid", "LIFECYCLE_SECRET_KEY": GOOD_KEY},
     "SENDGRID_API_KEY"),
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


def _config_env(**values: str) -> dict[str, str | None]:
    """A CliRunner environment with no Lifecycle or SendGrid variable but ``values`` (wide output)."""
    env: dict[str, str | None] = {name: None for name in os.environ
                                  if name.startswith(("LIFECYCLE_", "SENDGRID_"))}
    env.update(values)
    env["COLUMNS"] = "400"
    return env


def _run_config(env: dict[str, str | None], *args: str) -> str:
    from click.testing import CliRunner

    from lifecycle.cli import cli

    result = CliRunner().invoke(cli, ["config", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


SECRETS = {
    "LIFECYCLE_DATABASE_URL": ("postgresql://app:db-pw-3141@db.internal/lc?sslpassword=ssl-pw-2718",
                               ("db-pw-3141", "ssl-pw-2718")),
    "LIFECYCLE_BROKER_URL": ("redis://:broker-pw-1618@redis.internal:6379/0", ("broker-pw-1618",)),
    "LIFECYCLE_SMTP_URL": ("smtps://mailer:smtp-pw-1414@smtp.internal:465", ("smtp-pw-1414",)),
    "SENDGRID_API_KEY": ("SG.api-key-1732", ("SG.api-key-1732", "api-key-1732")),
    "LIFECYCLE_SECRET_KEY": ("Hk4q-Zr8w-Vn2x-Lp6t-Bc9y-Md3f-Js7g", ("Hk4q-Zr8w", "Bc9y-Md3f")),
    "LIFECYCLE_SECRET_KEY_PREVIOUS": ("Qm5t-Xw2r-Kp8v-Zn4y-Lc7b-Hd1g-Fs6j,Wd3k-Pr9x-Tn5m-Bq2v-Gy8c-Lz4h-Ka7e",
                                      ("Qm5t-Xw2r", "Lz4h")),
}


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_config_shows_every_setting_with_its_source_and_no_secret(as_json: bool) -> None:
    env = _config_env(**{name: value for name, (value, _) in SECRETS.items()},
                      LIFECYCLE_MAIL_TRANSPORT="sendgrid", LIFECYCLE_SHOP_NAME="Tea Corner")
    output = _run_config(env, *(["--json"] if as_json else []))
    for _, hidden in SECRETS.values():
        for secret in hidden:
            assert secret not in output
    from_environment = {*SECRETS, "LIFECYCLE_MAIL_TRANSPORT", "LIFECYCLE_SHOP_NAME"}
    if as_json:
        described = json.loads(output)
        rows = {row["name"]: row for row in described["settings"]}
        assert list(rows) == [setting.name for setting in SETTINGS]
        for name, row in rows.items():
            assert row["source"] == ("environment" if name in from_environment else "default"), name
        assert rows["LIFECYCLE_DATABASE_URL"]["value"] == (
            "postgresql+psycopg://app:***@db.internal/lc?sslpassword=***")
        assert rows["LIFECYCLE_BROKER_URL"]["value"] == "redis://:***@redis.internal:6379/0"
        assert rows["LIFECYCLE_SMTP_URL"]["value"] == "smtps://mailer:***@smtp.internal:465"
        assert rows["SENDGRID_API_KEY"]["value"] == "(set)"
        assert rows["LIFECYCLE_SECRET_KEY"]["value"] == "(set)"
        assert rows["LIFECYCLE_SECRET_KEY_PREVIOUS"]["value"] == "(set)"
        assert rows["LIFECYCLE_SHOP_NAME"]["value"] == "Tea Corner"
        assert described["secret_key"] == {"source": "environment", "state": "set",
                                           "previous_keys": 2}
    else:
        lines = {line.split()[1]: line for line in output.splitlines()
                 if line.startswith("│") and line.split()[1] in {s.name for s in SETTINGS}}
        for setting in SETTINGS:
            expected = "environment" if setting.name in from_environment else "default"
            assert expected in lines[setting.name].split("│")[3], lines[setting.name]
        assert "smtps://mailer:***@smtp.internal:465" in lines["LIFECYCLE_SMTP_URL"]
        assert "The secret key comes from the environment (LIFECYCLE_SECRET_KEY)." in output
        assert "2 earlier key(s) from LIFECYCLE_SECRET_KEY_PREVIOUS" in output


def test_config_says_the_secret_key_comes_from_the_database_when_unset_without_printing_it(
        cli_env: dict[str, str]) -> None:
    from sqlalchemy import create_engine

    from lifecycle.secret import stored_key

    env = _config_env(**{k: v for k, v in cli_env.items() if k.startswith("LIFECYCLE_")})
    described = json.loads(_run_config(env, "--json"))
    rows = {row["name"]: row for row in described["settings"]}
    assert described["secret_key"] == {"source": "database", "state": "not made yet",
                                       "previous_keys": 0}
    assert rows["LIFECYCLE_SECRET_KEY"] == {"name": "LIFECYCLE_SECRET_KEY",
                                            "value": "(kept in the database)", "source": "default"}
    assert "the first process that needs a key makes one" in _run_config(env)

    from click.testing import CliRunner

    from lifecycle.cli import cli

    assert CliRunner().invoke(cli, ["webhooks"], env=env).exit_code == 0  # a process that signs
    engine = create_engine(cli_env["LIFECYCLE_DATABASE_URL"])
    with engine.connect() as conn:
        key = stored_key(conn)
    engine.dispose()
    assert key is not None
    for args in (["--json"], []):
        output = _run_config(env, *args)
        assert key not in output
    assert json.loads(_run_config(env, "--json"))["secret_key"]["state"] == "kept"
    assert "every process on this database signs with the key kept there" in _run_config(env)


def test_config_names_a_misspelt_variable_without_printing_its_value() -> None:
    env = _config_env(LIFECYCLE_DATABSE_URL="postgresql://app:typo-pw-577@db/lc")
    output = _run_config(env)
    assert "LIFECYCLE_DATABSE_URL is set but is not a Lifecycle setting" in output
    assert "typo-pw-577" not in output
    assert json.loads(_run_config(env, "--json"))["unknown_variables"] == ["LIFECYCLE_DATABSE_URL"]


def test_each_setting_lands_in_the_settings_field_config_reads() -> None:
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert {setting.attribute for setting in SETTINGS} <= fields
    assert fields - {setting.attribute for setting in SETTINGS} == set()


#: URLs an operator may well type, each with the secrets that must not be printed: passwords
#: with unencoded ``/``, ``?`` or ``#`` (base64 passwords have ``/``), credentials in the query
#: under any name or separator, percent-encoded names.
ODD_SECRETS = {
    "slash in the password": ("LIFECYCLE_BROKER_URL", "redis://:abc/def+gh=@redis.internal:6379/0",
                              ("abc/def", "def+gh")),
    "hash in the password": ("LIFECYCLE_BROKER_URL", "redis://:pa#ss7@redis.internal:6379/0",
                             ("pa#ss7", "ss7")),
    "question mark in the password": ("LIFECYCLE_BROKER_URL", "amqp://u:pa?ss8@mq.internal/",
                                      ("pa?ss8", "ss8")),
    "at sign in an smtp password": ("LIFECYCLE_SMTP_URL", "smtps://me:p@ss-9@smtp.internal:465",
                                    ("p@ss-9", "ss-9")),
    "semicolon before the password parameter": (
        "LIFECYCLE_BROKER_URL", "redis://redis.internal:6379/0?db=0;password=semi-pw-31",
        ("semi-pw-31",)),
    "a client secret parameter": (
        "SENDGRID_API_HOST", "https://relay.internal/?client_secret=cs-41&auth_token=at-59",
        ("cs-41", "at-59")),
    "a percent-encoded parameter name": (
        "LIFECYCLE_BROKER_URL", "redis://redis.internal:6379/0?pass%77ord=pe-26", ("pe-26",)),
    "userinfo of an https URL": ("SENDGRID_API_HOST", "https://relay:https-pw-53@relay.internal",
                                 ("https-pw-53",)),
}


@pytest.mark.parametrize("case", list(ODD_SECRETS), ids=list(ODD_SECRETS))
def test_config_hides_a_password_however_the_url_spells_it(case: str) -> None:
    name, url, hidden = ODD_SECRETS[case]
    env = _config_env(**{name: url})
    for output in (_run_config(env, "--json"), _run_config(env)):
        for secret in hidden:
            assert secret not in output
    row = {r["name"]: r for r in json.loads(_run_config(env, "--json"))["settings"]}[name]
    assert "***" in row["value"] and row["source"] == "environment"


@pytest.mark.parametrize(("name", "url", "secret"), [
    ("LIFECYCLE_BROKER_URL", "http://u:broker-pw-61@redis.internal", "broker-pw-61"),
    ("LIFECYCLE_SMTP_URL", "smtps://apikey:smtp/pw-62@smtp.internal:465", "pw-62"),
    ("LIFECYCLE_SMTP_URL", "smtp://u:smtp-pw-63@smtp.internal:99999", "smtp-pw-63"),
    ("SENDGRID_API_HOST", "ftp://u:host-pw-64@relay.internal", "host-pw-64"),
    ("LIFECYCLE_BASE_URL", "ftp://u:base-pw-65@shop.internal", "base-pw-65"),
    ("LIFECYCLE_DATABASE_URL", "postgresql://u:db-pw-66@db.internal:notaport/lc", "db-pw-66"),
    ("LIFECYCLE_DATABASE_URL", "mysql+nope://u:db-pw-67@db.internal/lc", "db-pw-67"),
    ("LIFECYCLE_BROKER_URL", "redis://:broker-pw-68@[::1", "broker-pw-68"),
    ("LIFECYCLE_SMTP_URL", "smtp://:smtp-pw-69@[::1", "smtp-pw-69"),
], ids=["broker scheme", "smtp slash", "smtp port", "api host", "base url", "database port",
        "database dialect", "broker ipv6", "smtp ipv6"])
def test_a_bad_url_is_named_without_its_password(name: str, url: str, secret: str) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        load_settings({name: url})
    assert secret not in str(refused.value)
    from click.testing import CliRunner

    from lifecycle.cli import cli

    result = CliRunner().invoke(cli, ["config"], env=_config_env(**{name: url}))
    assert result.exit_code == 2 and name in result.output, result.output
    assert secret not in result.output


def test_config_prints_values_with_square_brackets_as_they_are() -> None:
    """The table is drawn with rich, whose markup would eat ``[bold]`` or crash on ``[/]``."""
    env = _config_env(LIFECYCLE_SHOP_NAME="Tea [/] Corner",
                      LIFECYCLE_SHOP_ADDRESS="[bold]1 Road[/bold]")
    output = _run_config(env)
    assert "Tea [/] Corner" in output and "[bold]1 Road[/bold]" in output


@pytest.mark.parametrize("url", ["REDIS://:broker-pw-91@127.0.0.1:6379/9",
                                 "Amqp://guest:broker-pw-91@127.0.0.1:5672/"])
def test_a_broker_url_the_settings_accept_builds_a_broker_whatever_the_schemes_case(
        url: str) -> None:
    """URL schemes are case-insensitive: the settings accepted these, and building the broker
    failed with the password in the error."""
    from lifecycle.tasks.broker import build

    broker = build(load_settings({"LIFECYCLE_BROKER_URL": url}).broker_url)
    assert type(broker).__name__ == ("RedisBroker" if url.startswith("R")
                                     else "NamespacedRabbitmqBroker")
    broker.close()
