"""The pages a customer reaches from a mail speak that customer's language: unsubscribe,
preferences, feedback and the pages they answer with, in each of the six shipped languages,
with ``<html lang>`` naming it and no English left."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient
from jinja2.ext import babel_extract
from sqlalchemy import select, update

from lifecycle.app import App
from lifecycle.links import sign
from lifecycle.locales import SHIPPED
from lifecycle.models import Customer, Message
from lifecycle.web import i18n
from tests.factories import WEB_SECRET as SECRET
from tests.factories import WEB_T0 as T0
from tests.factories import add_campaign

TEMPLATES = Path(i18n.__file__).parent / "templates"
PUBLIC_PAGES = ("_page", "bad_link", "test_link", "unsubscribe", "preferences", "feedback")

#: A customer's locale as a shop might have it, for each language (fallbacks included).
CUSTOMER_LOCALE = {"en": "en-US", "de": "de-AT", "nb": "no", "sv": "sv_SE", "da": "DA",
                   "pl": "pl-PL"}

#: Words a native reader would see on each page, per language.
WORDS = {
    "ask": {"en": "Unsubscribe from Example Shop?", "de": "Von Example Shop abmelden?",
            "nb": "Vil du melde deg av e-post fra Example Shop?",
            "sv": "Vill du sluta få mejl från Example Shop?",
            "da": "Vil du afmelde mails fra Example Shop?",
            "pl": "Wypisać się z wiadomości od Example Shop?"},
    "done": {"en": "You are unsubscribed", "de": "Du bist abgemeldet", "nb": "Du er avmeldt",
             "sv": "Du är avregistrerad", "da": "Du er afmeldt", "pl": "Wypisano Cię z listy"},
    "preferences": {"en": "Offers when it has been a while",
                    "de": "Angebote, wenn Deine letzte Bestellung eine Weile her ist",
                    "nb": "Tilbud når det er en stund siden", "sv": "Erbjudanden när det var",
                    "da": "Tilbud, når det er et stykke tid siden", "pl": "Oferty, gdy od"},
    "saved": {"en": "Saved.", "de": "Gespeichert.", "nb": "Lagret.", "sv": "Sparat.",
              "da": "Gemt.", "pl": "Zapisano."},
    "send": {"en": "Send my answer", "de": "Meine Antwort senden", "nb": "Send svaret mitt",
             "sv": "Skicka mitt svar", "da": "Send mit svar", "pl": "Wyślij moją ocenę"},
    "feedback": {"en": "out of 10", "de": "von 10", "nb": "av 10", "sv": "av 10",
                 "da": "ud af 10", "pl": "na 10"},
    "commented": {"en": "Thanks for telling us more", "de": "Danke, dass Du uns mehr",
                  "nb": "Takk for at du fortalte", "sv": "Tack för att du berättade",
                  "da": "Tak, fordi du fortalte", "pl": "Dziękujemy za Twoją opinię"},
    "bad": {"en": "This link is not valid", "de": "Dieser Link ist nicht gültig",
            "nb": "Denne lenken er ikke gyldig", "sv": "Den här länken är inte giltig",
            "da": "Dette link er ikke gyldigt", "pl": "Ten link jest nieprawidłowy"},
    "test": {"en": "This was a test mail", "de": "Das war eine Test-E-Mail",
             "nb": "Dette var en test-e-post", "sv": "Det här var ett testmejl",
             "da": "Dette var en testmail", "pl": "To była wiadomość testowa"},
}


def messages() -> list[str]:
    """Every English message of the public pages, as their templates write it."""
    found: list[str] = []
    for page in PUBLIC_PAGES:
        for _line, message, _comments, _context in extract_from_file(
                babel_extract, str(TEMPLATES / f"{page}.html"),
                options={"extensions": "jinja2.ext.i18n"}):
            if message not in found:
                found.append(message)
    return found


def english_phrases() -> set[str]:
    """The English of the pages in pieces of two words or more (between the placeholders and
    the markup), and the shipped flows' staff descriptions: none may show on another
    language's page."""
    pieces = {piece.strip(" .,:?!—") for message in messages()
              for piece in re.split(r"%\(\w+\)s|<[^>]+>", message)}
    descriptions = {"Bring lapsed customers back", "Nudge new customers",
                    "Thank customers who become loyal"}
    return {p for p in pieces if " " in p} | descriptions


def visible(html: str) -> str:
    """The text a reader sees (tags out, entities read), spaces made plain."""
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(text)).replace("\xa0", " ")


def test_every_message_of_the_public_pages_is_translated_into_every_shipped_language() -> None:
    wanted = set(messages())
    assert sorted(i18n.LANGUAGES) == sorted(SHIPPED)
    for language in SHIPPED:
        if language == "en":
            continue
        with (i18n.CATALOGS / f"{language}.po").open("rb") as po:
            catalog = read_po(po)
        have = {m.id: m for m in catalog if m.id}
        assert wanted - have.keys() == set(), language
        assert have.keys() - wanted == set(), f"{language}: messages no page uses"
        for message in have.values():
            assert message.string and not message.fuzzy, (language, message.id)
            assert re.findall(r"%\(\w+\)s", message.id) \
                == re.findall(r"%\(\w+\)s", message.string) or \
                sorted(re.findall(r"%\(\w+\)s", message.id)) \
                == sorted(re.findall(r"%\(\w+\)s", message.string)), (language, message.id)


#: A person's browser (the score form's post from a library's client counts as a scanner).
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/126.0.0.0 Safari/537.36")


def customers_in_every_language(app: App) -> dict[str, tuple[int, int]]:
    """A customer with a mail for each shipped language (their locale spelled as in
    :data:`CUSTOMER_LOCALE`): language -> (customer id, mail id)."""
    with app.engine.begin() as conn:
        mids = add_campaign(conn, len(SHIPPED), T0)
        found = {}
        for language, mid in zip(SHIPPED, mids, strict=True):
            cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
            conn.execute(update(Customer).where(Customer.id == cid).values(
                locale=CUSTOMER_LOCALE[language]))
            found[language] = (cid, mid)
    return found


def token(purpose: str, cid: int, mid: int, **extra: int) -> str:
    return sign(SECRET, purpose, {"c": cid, "m": mid, **extra})


def check(page: str, language: str, words: str, english: set[str]) -> None:
    """``page`` is in ``language``: its lang attribute, its words, and no English left."""
    assert re.search(rf'<html lang="{language}">', page), page[:200]
    text = visible(page)
    assert words in text, (language, words, text)
    if language != "en":
        left = sorted(p for p in english if re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text))
        assert left == [], (language, left)


def test_each_public_page_speaks_the_mailed_customer_s_language(app: App,
                                                               web: TestClient) -> None:
    english = english_phrases()
    for language, (cid, mid) in customers_in_every_language(app).items():
        ask = web.get(f"/u/{token('unsubscribe', cid, mid)}")
        assert ask.status_code == 200
        check(ask.text, language, WORDS["ask"][language], english)

        prefs = web.get(f"/p/{token('preferences', cid, mid)}")
        check(prefs.text, language, WORDS["preferences"][language], english)

        done = web.post(f"/u/{token('unsubscribe', cid, mid)}")
        check(done.text, language, WORDS["done"][language], english)

        saved = web.post(f"/p/{token('preferences', cid, mid)}",
                         data={"scope": ["marketing"], "marketing": "on"})
        check(saved.text, language, WORDS["saved"][language], english)

        asked = web.get(f"/f/{token('feedback', cid, mid)}", params={"score": 9})
        assert asked.status_code == 200
        check(asked.text, language, WORDS["send"][language], english)
        answer = web.post(f"/f/{token('feedback', cid, mid)}", data={"score": "9"},
                          headers={"User-Agent": BROWSER})
        check(answer.text, language, WORDS["feedback"][language], english)
        commented = web.post(f"/f/{token('feedback', cid, mid)}", data={"comment": "ok"},
                             headers={"User-Agent": BROWSER})
        check(commented.text, language, WORDS["commented"][language], english)

        test_mail = web.get(f"/u/{token('unsubscribe', cid, mid, t=1)}",
                            headers={"Accept-Language": f"{CUSTOMER_LOCALE[language]}, en;q=0.1"})
        check(test_mail.text, language, WORDS["test"][language], english)


@pytest.mark.parametrize("accept, language", [
    ("de-CH,de;q=0.9,en;q=0.8", "de"), ("nn-NO", "nb"), ("fr-FR, sv;q=0.5", "sv"),
    ("pl", "pl"), ("da-DK", "da"), ("fr", "en"), (None, "en"),
])
def test_a_bad_link_follows_the_browser_s_language(app: App, web: TestClient, accept: str | None,
                                                   language: str) -> None:
    headers = {"Accept-Language": accept} if accept else {}
    page = web.get("/u/not-a-token", headers=headers)
    assert page.status_code == 400
    check(page.text, language, WORDS["bad"][language], english_phrases())


def test_a_customer_without_a_known_locale_reads_the_shop_s_default_language(
        app: App, web: TestClient) -> None:
    from dataclasses import replace

    app.settings = replace(app.settings, locale="sv")
    with app.engine.begin() as conn:
        [mid] = add_campaign(conn, 1, T0)
        cid = conn.execute(select(Message.customer_id).where(Message.id == mid)).scalar_one()
        conn.execute(update(Customer).where(Customer.id == cid).values(locale="tlh-garbage"))
    page = web.get(f"/u/{token('unsubscribe', cid, mid)}")
    check(page.text, "sv", WORDS["ask"]["sv"], english_phrases())


def test_staff_pages_stay_english(app: App, web: TestClient) -> None:
    login = web.get("/login", headers={"Accept-Language": "de"})
    assert '<html lang="en">' in login.text and "Skip to content" in login.text
