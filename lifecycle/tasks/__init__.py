"""Background work: dramatiq actors named ``domain.verb`` that take ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq

from lifecycle.tasks.broker import ACTORS


def actor(name: str, **options: Any) -> Callable[[Callable[..., Any]], dramatiq.Actor]:  # type: ignore[type-arg]
    """Declare a Lifecycle actor; :func:`lifecycle.tasks.broker.install` binds it later."""

    def decorate(fn: Callable[..., Any]) -> dramatiq.Actor:  # type: ignore[type-arg]
        declared = dramatiq.actor(fn, actor_name=name, **options)
        ACTORS.append(declared)
        return declared

    return decorate


def load_actors() -> None:
    """Import every module that declares actors."""
    from lifecycle.offers import tasks as offers  # noqa: F401
    from lifecycle.tasks import heartbeat, mail  # noqa: F401
