"""docker-compose.yml runs real `lifecycle` commands (Docker itself cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from lifecycle.cli import cli
from lifecycle.config import SETTINGS, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = sorted(name for name, s in SERVICES.items() if "command" in s)


def resolve(argv: list[str]) -> click.Command:
    """Walk ``lifecycle a b --opt`` down the command tree and parse its options."""
    assert argv[0] == "lifecycle"
    command: click.Command = cli
    args = list(argv[1:])
    names = ["lifecycle"]
    while isinstance(command, click.Group):
        name = args.pop(0)
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"`{' '.join(names)} {name}` is not a lifecycle command"
        names.append(name)
        command = found
    command.make_context(" ".join(names), args)  # raises on an unknown option or bad value
    return command


def test_compose_has_the_services_production_needs() -> None:
    assert {"postgres", "redis", "migrate", "worker", "scheduler", "web", "mailpit"} <= set(SERVICES)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_command_is_a_real_lifecycle_command(service: str) -> None:
    command = SERVICES[service]["command"]
    assert isinstance(command, list)
    assert resolve(command).name in {"upgrade", "worker", "scheduler", "web"}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_each_service_has_a_valid_configuration_of_known_variables(service: str) -> None:
    env = SERVICES[service]["environment"]
    known = {s.name for s in SETTINGS}
    assert set(env) <= known, set(env) - known
    settings = load_settings({k: str(v) for k, v in env.items()})
    assert settings.database_url.get_backend_name() == "postgresql"
    assert settings.broker_url is not None and settings.broker_url.startswith("redis://")


def test_the_migration_runs_before_the_long_running_services() -> None:
    for name in ("worker", "scheduler", "web"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
