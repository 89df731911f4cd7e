"""The language of the public pages a customer reaches from a mail.

The pages behind a mail's links (unsubscribe ``/u/``, preferences ``/p/``,
feedback ``/f/`` and the pages they answer with) speak the mailed customer's
language, chosen like the mail's copy (:func:`lifecycle.locales.fallback_chain`:
``de-AT`` → ``de`` → ``LIFECYCLE_LOCALE`` → English).  A page that knows no
customer (a bad link, a test mail's link) follows the browser's
``Accept-Language`` among the languages there are, else the shop's default.

Their words are written in English in the templates (``{% trans %}`` and
``_()`` of jinja2's i18n extension); each other language is one gettext
catalog, ``translations/<locale>.po``, read with Babel when this module is
imported.  Adding a language is adding its ``.po`` file (see README,
*Languages*).  Staff pages carry no catalog and stay English.
"""

from __future__ import annotations

from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from jinja2 import Environment, pass_context

from lifecycle import locales
from lifecycle.money import preferred_tags

#: Folder of the catalogs, one ``<locale>.po`` per language besides English.
CATALOGS = Path(__file__).parent / "translations"
#: The language the templates are written in.
SOURCE_LANGUAGE = "en"


def _load(folder: Path) -> dict[str, Translations]:
    found: dict[str, Translations] = {}
    for path in sorted(folder.glob("*.po")):
        name = locales.parse_locale(path.stem)
        if name is None or name != path.stem:
            raise ValueError(f"{path}: the file name must be a locale such as de.po or de_AT.po")
        with path.open("rb") as po:
            catalog = read_po(po, locale=name, abort_invalid=True)
        mo = BytesIO()
        write_mo(mo, catalog)
        mo.seek(0)
        found[name] = Translations(mo)
    return found


_CATALOGS: dict[str, Translations] = _load(CATALOGS)
_ENGLISH = NullTranslations()

#: Every language the public pages are written in.
LANGUAGES: frozenset[str] = frozenset({SOURCE_LANGUAGE, *_CATALOGS})


def language_for(customer_locale: str | None, default: str) -> str:
    """The page language for a customer's locale: the first of its fallback chain that has
    a catalog (``default``: ``LIFECYCLE_LOCALE``); English when none has."""
    return locales.choose(customer_locale, LANGUAGES, default) or SOURCE_LANGUAGE


@lru_cache(maxsize=256)
def language_from_header(accept_language: str | None, default: str) -> str:
    """The page language for a browser's ``Accept-Language``: its tags by weight, each with
    its own fallback (``de-CH`` → ``de``), the first there is; else as for no customer."""
    for tag in preferred_tags(accept_language)[:10]:
        parsed = locales.parse_locale(tag)
        if parsed:
            found = locales.choose(parsed, LANGUAGES, parsed)
            if found:
                return found
    return language_for(None, default)


def translations(language: str) -> NullTranslations:
    """The catalog of ``language`` (English: the words as written)."""
    return _CATALOGS.get(language, _ENGLISH)


def page_context(language: str) -> dict[str, Any]:
    """What a public page's template needs to speak ``language``."""
    return {"lang": locales.html_lang(language), "i18n": translations(language)}


@pass_context
def _gettext(context: Any, message: str) -> str:
    return (context.get("i18n") or _ENGLISH).ugettext(message)


@pass_context
def _ngettext(context: Any, singular: str, plural: str, n: int) -> str:
    return (context.get("i18n") or _ENGLISH).ungettext(singular, plural, n)


def install(env: Environment) -> None:
    """Give ``env`` the i18n extension, translating with the ``i18n`` of each page's context
    (none: English)."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)  # type: ignore[attr-defined]
