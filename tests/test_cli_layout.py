"""The command line is a package: one module per command group, all on one ``cli`` group."""

from __future__ import annotations

import click

from lifecycle.cli import cli

#: Commands that share a module on purpose: the long-running processes and their health check.
PROCESSES = {"run", "worker", "scheduler", "web", "healthcheck"}


def test_every_command_group_is_defined_in_a_module_of_its_own() -> None:
    modules: dict[str, set[str]] = {}
    for name, command in cli.commands.items():
        module = command.callback.__module__
        assert module.startswith("lifecycle.cli.") and module != "lifecycle.cli.base", (name, module)
        modules.setdefault(module, set()).add(name)
    shared = {module: names for module, names in modules.items() if len(names) > 1}
    assert shared == {"lifecycle.cli.processes": PROCESSES}


def test_the_groups_keep_their_subcommands() -> None:
    groups = {name: sorted(command.commands) for name, command in cli.commands.items()
              if isinstance(command, click.Group)}
    assert groups == {
        "apikey": ["add", "list", "revoke"],
        "campaign": ["cancel", "create", "list", "load", "pause", "preview", "resume",
                     "schedule", "show", "test", "validate"],
        "customer": ["erase", "export", "show"],
        "db": ["check", "upgrade"],
        "flows": ["preview", "show", "simulate", "validate"],
        "import": ["customers", "orders"],
        "insights": ["all", "attribution", "clv", "cohorts", "nps", "repurchase", "stages"],
        "offers": ["export"],
        "predict": ["backtest", "fit"],
        "segments": ["list", "members", "refresh", "validate"],
        "staff": ["add", "password"],
    }
