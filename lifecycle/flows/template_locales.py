"""Checks of the locale folders of the templates flows send (``lifecycle flows validate``).

A template folder may hold one folder per locale (``templates/email/thank_you/de/``)
next to parts at its root; the renderer picks each part from the first folder of
the customer's fallback chain that has it (:func:`lifecycle.locales.fallback_chain`).
A locale folder that lacks a part the template has elsewhere sends that part in
another language, so each such gap is a problem, as is a folder whose name is not
a locale the renderer can ever choose (it must be Babel's identifier: ``de_AT``,
not ``de-AT`` or ``german``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lifecycle import locales
from lifecycle.yamlfile import Problem

#: The parts of a mail template.
PARTS = ("subject.txt", "body.txt", "body.html")
#: The layout folder every template may extend.
LAYOUT = "_base"


def locale_folders(template: Path) -> list[Path]:
    """The subfolders of a template folder (those not starting with ``_`` or ``.``)."""
    if not template.is_dir():
        return []
    return sorted(p for p in template.iterdir() if p.is_dir() and p.name[:1] not in "_.")


def _problem(folder: Path, message: str) -> Problem:
    return Problem(str(folder), 1, 1, message)


def folder_problems(template: Path, *, layout: bool = False) -> list[Problem]:
    """The problems of one template's locale folders.

    For a mail template the parts are :data:`PARTS` found at its root or in any
    of its locale folders; for the layout (``layout``), every file of any of its
    locale folders (the layout decides which words it keeps per locale).
    """
    problems: list[Problem] = []
    folders = locale_folders(template)
    valid: list[Path] = []
    for folder in folders:
        name = folder.name
        parsed = locales.parse_locale(name)
        if parsed != name:
            hint = f"; did you mean {parsed}?" if parsed else ""
            problems.append(_problem(folder, f"folder {name!r} of template {template.name} is not "
                                             f"a locale folder name (a locale such as de, de_AT "
                                             f"or nb, as Babel writes it){hint}"))
        else:
            valid.append(folder)
    if layout:
        wanted = sorted({p.name for f in valid for p in f.iterdir() if p.is_file()})
    else:
        wanted = [part for part in PARTS
                  if (template / part).is_file() or any((f / part).is_file() for f in valid)]
    for folder in valid:
        for part in wanted:
            if not (folder / part).is_file():
                where = [f.name + "/" for f in valid if (f / part).is_file()]
                if not layout and (template / part).is_file():
                    where.append("the template's root")
                problems.append(_problem(folder, (
                    f"locale folder {folder.name}/ of template {template.name} lacks {part} "
                    f"(the template has it in {', '.join(where)}): a customer reading "
                    f"{folder.name} would get that part in another language")))
    return problems


def template_problems(templates_dir: Path, names: Iterable[str]) -> list[Problem]:
    """The locale-folder problems of the templates ``names`` (those flows send) and of the
    layout they extend."""
    problems: list[Problem] = []
    for name in sorted(set(names)):
        problems.extend(folder_problems(templates_dir / name))
    if (templates_dir / LAYOUT).is_dir():
        problems.extend(folder_problems(templates_dir / LAYOUT, layout=True))
    return problems


def templates_sent(flows: Iterable[object]) -> set[str]:
    """The names of every template the ``flows`` (:class:`~lifecycle.flows.definitions.Flow`)
    may send."""
    from lifecycle.flows.definitions import Send

    names: set[str] = set()
    for flow in flows:
        for step in getattr(flow, "steps", ()):
            if isinstance(step.action, Send):
                names.update(variant.template for variant in step.action.variants)
    return names
