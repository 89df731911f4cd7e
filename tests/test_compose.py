"""docker-compose.yml and the Dockerfile: real `lifecycle` commands, one image built once and run
as a non-root user, pinned images, health checks, the secret from the environment (Docker itself
cannot run here: the files are read as Docker reads them)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
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
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
#: The image every Lifecycle service runs.
APP_IMAGE = "lifecycle:local"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?message}``.
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class Refused(Exception):
    """Compose refuses to render the file: a required variable is unset."""


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """``value`` with variables replaced as ``docker compose`` does (the subset used here):
    ``:?`` with the variable unset or empty refuses, with the file's message."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        given = environ.get(name)
        unset = given is None or (op is not None and op.startswith(":") and given == "")
        if op in (":?", "?") and unset:
            raise Refused(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and unset:
            return arg
        return given or ""

    return _VARIABLE.sub(replace, value)


def rendered(environ: dict[str, str]) -> dict[str, Any]:
    return interpolate(COMPOSE, environ)


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
    env = rendered({"LIFECYCLE_SECRET_KEY": secrets.token_urlsafe(32)})["services"][service][
        "environment"]
    known = {s.name for s in SETTINGS}
    assert set(env) <= known, set(env) - known
    settings = load_settings({k: str(v) for k, v in env.items()})
    assert settings.database_url.get_backend_name() == "postgresql"
    assert settings.broker_url is not None and settings.broker_url.startswith("redis://")


def test_the_migration_runs_before_the_long_running_services() -> None:
    for name in ("worker", "scheduler", "web"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_refuses_to_start_without_a_secret_key_and_passes_the_one_given() -> None:
    with pytest.raises(Refused, match="LIFECYCLE_SECRET_KEY"):
        rendered({})
    with pytest.raises(Refused, match="LIFECYCLE_SECRET_KEY"):
        rendered({"LIFECYCLE_SECRET_KEY": ""})
    key = secrets.token_urlsafe(32)
    for name in APP_SERVICES:
        env = rendered({"LIFECYCLE_SECRET_KEY": key})["services"][name]["environment"]
        assert env["LIFECYCLE_SECRET_KEY"] == key
        assert load_settings(env).secret_key == key
    raw = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert re.search(r"LIFECYCLE_SECRET_KEY:\s*\"?\$\{LIFECYCLE_SECRET_KEY:\?", raw)


def test_compose_passes_previous_keys_for_a_rotation_and_none_by_default() -> None:
    key = secrets.token_urlsafe(32)
    env = rendered({"LIFECYCLE_SECRET_KEY": key})["services"]["web"]["environment"]
    assert load_settings(env).secret_key_previous == ()
    old = secrets.token_urlsafe(32)
    env = rendered({"LIFECYCLE_SECRET_KEY": key, "LIFECYCLE_SECRET_KEY_PREVIOUS": old})[
        "services"]["web"]["environment"]
    assert load_settings(env).secret_key_previous == (old,)


def test_one_image_is_built_once_and_every_lifecycle_service_runs_it() -> None:
    builders = [name for name, service in SERVICES.items() if "build" in service]
    assert len(builders) == 1, builders
    assert SERVICES[builders[0]]["image"] == APP_IMAGE
    for name in APP_SERVICES:
        assert SERVICES[name]["image"] == APP_IMAGE, name
        if name not in builders:  # never looked for on a registry (compose v2 may try: no such)
            assert SERVICES[name].get("pull_policy") == "never", name


#: An explicit version: ``15.10``, ``7.4.1``, ``v1.22.3``, ``3.11.11-slim-bookworm``.
_VERSION = re.compile(r":v?\d+\.\d+(\.\d+)?([-.][A-Za-z0-9.]+)*$")


def test_every_image_is_pinned_to_a_version() -> None:
    images = {name: s["image"] for name, s in SERVICES.items() if s.get("image") != APP_IMAGE}
    assert {"postgres", "redis", "mailpit"} <= set(images)
    for name, image in images.items():
        assert _VERSION.search(image) and "latest" not in image, f"{name}: {image}"
    [base] = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert re.search(r":\d+\.\d+\.\d+-", base), f"the base image {base} names no exact version"
    uv = re.search(r"uv==(\S+)", DOCKERFILE)
    assert uv and re.fullmatch(r"\d+\.\d+\.\d+", uv.group(1)), "uv is not pinned"


def test_the_image_runs_as_a_user_who_is_not_root() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users, "the Dockerfile sets no USER: everything would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert re.search(rf"useradd[^&]*\b{user}\b", DOCKERFILE), "the user is never made"
    lines = DOCKERFILE.splitlines()
    last_user = max(i for i, line in enumerate(lines) if line.startswith("USER"))
    assert all(not line.startswith(("RUN", "COPY")) for line in lines[last_user:]), \
        "files made after USER would belong to the app user"


def test_the_default_command_keeps_nothing_inside_the_container(tmp_path: Path) -> None:
    """No `lifecycle run` (a SQLite file inside the container): without a command the image
    prints the commands, and doing so writes nothing."""
    [cmd] = re.findall(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE, re.M)
    argv = json.loads(cmd)
    assert argv[0] == "lifecycle" and "run" not in argv and "demo" not in argv
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    done = subprocess.run([sys.executable, "-m", "lifecycle", *argv[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Commands:" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_postgresql_keeps_its_data_in_a_named_volume() -> None:
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "pgdata" in COMPOSE["volumes"]


def test_worker_and_scheduler_health_checks_are_real_lifecycle_commands() -> None:
    for name, kind in (("worker", "worker"), ("scheduler", "scheduler")):
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert resolve(test[1:]).name == "healthcheck"
        assert test[test.index("--kind") + 1] == kind


def _web_check(port: int) -> subprocess.CompletedProcess[str]:
    """The web service's health check, run as Docker runs it, against 127.0.0.1:``port``."""
    test = SERVICES["web"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", "python-slim has no curl: use its Python"
    argv = [sys.executable, *(arg.replace(":8000/", f":{port}/") for arg in test[2:])]
    assert any("/healthz" in arg for arg in argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_the_web_health_check_passes_while_the_app_answers_and_fails_when_it_does_not(
        served: int) -> None:
    assert _web_check(served).returncode == 0
    from tests.ports import free_port

    assert _web_check(free_port()).returncode != 0


def test_the_web_services_health_check_asks_the_port_it_serves() -> None:
    command = SERVICES["web"]["command"]
    port = command[command.index("--port") + 1]
    assert any(f"127.0.0.1:{port}/healthz" in arg for arg in SERVICES["web"]["healthcheck"]["test"])

