"""The process-wide :class:`~lifecycle.app.App`, for actors and jobs.

Set once at process start by the command that starts the process.
"""

from __future__ import annotations

from lifecycle.app import App

_app: App | None = None


def set_app(app: App | None) -> None:
    global _app
    _app = app


def get_app() -> App:
    if _app is None:
        raise RuntimeError("no App is configured in this process; call lifecycle.runtime.set_app")
    return _app
