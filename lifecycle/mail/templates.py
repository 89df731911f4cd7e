"""Rendering the email templates that CRM managers edit: untrusted input.

Each email is a folder ``templates/email/<name>/`` with ``subject.txt``,
``body.txt`` and ``body.html`` (which may extend ``_base/body.html``).  They
render in a sandboxed, immutable Jinja2 environment: no attribute access to
internals, no mutation of the context, HTML autoescaped, and any undefined
variable is an error.  Every failure becomes a :class:`TemplateError` naming
the file and line.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

_SPACE = re.compile(r"\s+")
MAX_SUBJECT = 255


class TemplateError(ValueError):
    """A template that cannot render; ``str()`` is ``FILE:LINE: message``."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


@dataclass(frozen=True)
class Rendered:
    template: str
    subject: str
    text: str | None
    html: str | None


class Renderer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=False,
            auto_reload=False,  # see _fresh: one look at the folder every CHECK_SECONDS
        )
        self._seen: dict[str, tuple[bool, bool, bool]] = {}
        self._checked = time.monotonic()
        self._signature = _signature(folder)

    def _fresh(self) -> None:
        """Forget compiled templates and folder contents when a file changed (checked at most
        every :data:`CHECK_SECONDS`: a batch of mails must not stat every file per mail)."""
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        signature = _signature(self.folder)
        if signature != self._signature:
            self._signature = signature
            self.env.cache.clear()  # type: ignore[union-attr]
            self._seen.clear()

    def _parts(self, name: str) -> tuple[bool, bool, bool]:
        """Which of subject.txt, body.txt, body.html email ``name`` has."""
        self._fresh()
        parts = self._seen.get(name)
        if parts is None:
            folder = self.folder / name
            parts = ((folder / "subject.txt").is_file(), (folder / "body.txt").is_file(),
                     (folder / "body.html").is_file())
            self._seen[name] = parts
        return parts

    def exists(self, name: str) -> bool:
        subject, text, html = self._parts(name)
        return not name.startswith("_") and subject and (text or html)

    def _render(self, path: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(path).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(exc.name or path, exc.lineno, exc.message or "syntax error") \
                from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(path, None, f"template {exc.name!r} not found") from None
        except (jinja2.UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError,
                LookupError) as exc:
            file, line = _template_position(path)
            raise TemplateError(file, line, _describe(exc)) from None

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        """Render subject, text and HTML of email ``name`` (TemplateError on failure)."""
        if not self.exists(name):
            raise TemplateError(f"{name}/", None, "no such email: it needs subject.txt and "
                                                  "body.txt or body.html")
        subject = _SPACE.sub(" ", self._render(f"{name}/subject.txt", context)).strip()
        if not subject:
            raise TemplateError(f"{name}/subject.txt", 1, "the subject is empty")
        if len(subject) > MAX_SUBJECT:
            raise TemplateError(f"{name}/subject.txt", 1,
                                f"the subject is {len(subject)} characters; at most {MAX_SUBJECT}")
        _subject, has_text, has_html = self._parts(name)
        text = self._render(f"{name}/body.txt", context) if has_text else None
        html = self._render(f"{name}/body.html", context) if has_html else None
        if html is not None:
            try:  # mail clients drop <style>: every rule goes onto its elements
                html = _INLINER.inline(html)
            except ValueError as exc:
                raise TemplateError(f"{name}/body.html", None, f"CSS could not be inlined: {exc}") \
                    from None
        return Rendered(name, subject, text, html)


#: Seconds the templates folder is trusted unchanged before it is looked at again.
CHECK_SECONDS = 2.0
#: Inlines <style> rules; never fetches a stylesheet a (manager-edited) template links to.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)


def _signature(folder: Path) -> tuple[tuple[str, int], ...]:
    """Every file under ``folder`` with its modification time (ns)."""
    found = []
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            found.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(found))


def _template_position(default: str) -> tuple[str, int | None]:
    """The template file and line where the current exception was raised."""
    tb = sys.exc_info()[2]
    found: tuple[str, int | None] = (default, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".txt", ".html")) and not filename.endswith(".py"):
            found = (Path(filename).name if "/" not in default else _relative(filename, default),
                     tb.tb_lineno)
        tb = tb.tb_next
    return found


def _relative(filename: str, default: str) -> str:
    parts = Path(filename).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else default


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"{exc.message} (every variable a template uses must be given)"
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    return f"{type(exc).__name__}: {exc}"
