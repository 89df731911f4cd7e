"""The renderer picks each part of an email from the customer's locale folder, along the
fallback chain, and tells the part its language and the layout's words."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lifecycle.mail.templates as templates
from lifecycle.flows.definitions import Context
from lifecycle.mail.templates import Renderer, TemplateError, emails_in


def put(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def hello(tmp_path: Path) -> Path:
    """An email with an English and a German folder, an Austrian subject alone, and a root
    body in the shop's own words; each part says where it came from."""
    return put(tmp_path, {
        "hello/en/subject.txt": "Hello ({{ lang }})",
        "hello/en/body.txt": "en body in {{ lang }}: {{ words.bye }}",
        "hello/de/subject.txt": "Hallo ({{ lang }})",
        "hello/de/body.txt": "de body in {{ lang }}: {{ words.bye }}",
        "hello/de_AT/subject.txt": "Servus ({{ lang }})",
        "hello/body.html": "<p>root in {{ lang }}</p>",
        "_base/en/words.yaml": "bye: Bye\nthanks: Thanks\n",
        "_base/de/words.yaml": "bye: Tschüss\n",
        "_base/de_AT/words.yaml": "bye: Pfiat di\n",
    })


@pytest.mark.parametrize(("locale", "subject", "text"), [
    ("de-AT", "Servus (de-AT)", "de body in de: Pfiat di"),
    ("de_AT", "Servus (de-AT)", "de body in de: Pfiat di"),
    ("de-DE", "Hallo (de)", "de body in de: Tschüss"),
    ("DE", "Hallo (de)", "de body in de: Tschüss"),
    ("fr-FR", "Hello (en)", "en body in en: Bye"),
    ("", "Hello (en)", "en body in en: Bye"),
    (None, "Hello (en)", "en body in en: Bye"),
    ("../../etc", "Hello (en)", "en body in en: Bye"),
])
def test_each_part_comes_from_the_first_locale_folder_of_the_chain_that_has_it(
        tmp_path: Path, locale: str | None, subject: str, text: str) -> None:
    out = Renderer(hello(tmp_path)).render("hello", {"customer": {"locale": locale}})
    assert (out.subject, out.text) == (subject, text)
    # No locale folder has an HTML part: the root's, in the shop's default language.
    assert out.html == "<p>root in en</p>"


def test_the_shop_default_locale_is_the_fallback_and_the_language_of_root_parts(
        tmp_path: Path) -> None:
    renderer = Renderer(hello(tmp_path), default_locale="de")
    out = renderer.render("hello", {"customer": {"locale": "sv"}})
    assert (out.subject, out.text) == ("Hallo (de)", "de body in de: Tschüss")
    assert "root in de" in (out.html or "")
    # An explicit locale (a preview in another language) wins over the customer's.
    assert renderer.render("hello", {"customer": {"locale": "sv"}}, locale="en").subject \
        == "Hello (en)"


def test_norwegian_and_nynorsk_customers_read_the_bokmal_folder(tmp_path: Path) -> None:
    put(tmp_path, {"hi/nb/subject.txt": "Hei ({{ lang }})", "hi/nb/body.txt": "x",
                   "hi/en/subject.txt": "Hi", "hi/en/body.txt": "x"})
    renderer = Renderer(tmp_path)
    for locale in ("no", "nn", "nn-NO", "no-NO", "nb_NO"):
        assert renderer.render("hi", {"customer": {"locale": locale}}).subject == "Hei (nb)", locale


def test_a_locale_folder_extends_the_shared_layout_which_speaks_the_part_s_language(
        tmp_path: Path) -> None:
    put(tmp_path, {
        "_base/body.html": '<html lang="{{ lang }}"><body>{% block content %}{% endblock %}'
                           "<footer>{{ words.unsubscribe }}</footer></body></html>",
        "_base/en/words.yaml": "unsubscribe: Unsubscribe\n",
        "_base/pl/words.yaml": "unsubscribe: Wypisz się\n",
        "mail/pl/subject.txt": "Cześć", "mail/en/subject.txt": "Hi",
        "mail/pl/body.html": '{% extends "_base/body.html" %}{% block content %}<p>Dzień dobry</p>'
                             "{% endblock %}",
    })
    html = Renderer(tmp_path).render("mail", {"customer": {"locale": "pl-PL"}}).html or ""
    assert html == ('<html lang="pl"><body><p>Dzień dobry</p><footer>Wypisz się</footer></body>'
                    "</html>")


def test_a_word_missing_in_the_language_comes_from_the_shop_default_then_english(
        tmp_path: Path) -> None:
    put(tmp_path, {
        "m/sv/subject.txt": "{{ words.a }} {{ words.b }} {{ words.c }}", "m/sv/body.txt": "x",
        "_base/sv/words.yaml": "a: sv-a\n",
        "_base/de/words.yaml": "a: de-a\nb: de-b\n",
        "_base/en/words.yaml": "a: en-a\nb: en-b\nc: en-c\nno: yes\n",
    })
    renderer = Renderer(tmp_path, default_locale="de")
    assert renderer.render("m", {"customer": {"locale": "sv"}}).subject == "sv-a de-b en-c"
    assert renderer.words("", ("de",))["no"] == "yes"  # every value is text (not a boolean)


@pytest.mark.parametrize(("words", "error"), [
    ("hi: Hi\nbye: a: b\n", "_base/en/words.yaml:2: not valid YAML"),
    ("- a\n- b\n", "_base/en/words.yaml:1: must be a mapping of words"),
    ("bye:\n  nested: x\n", "_base/en/words.yaml: 'bye' must be a name"),
    ("good bye: x\n", "_base/en/words.yaml: 'good bye' must be a name"),
])
def test_a_broken_words_file_fails_the_mail_naming_the_file(tmp_path: Path, words: str,
                                                             error: str) -> None:
    put(tmp_path, {"m/en/subject.txt": "{{ words.bye }}", "m/en/body.txt": "x",
                   "_base/en/words.yaml": words})
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path).render("m", {})
    assert str(caught.value).startswith(error)


def test_an_error_in_a_locale_folder_names_that_folder(tmp_path: Path) -> None:
    put(tmp_path, {"m/de/subject.txt": "Hallo", "m/de/body.txt": "a\n{{ customer.nickname }}\n"})
    with pytest.raises(TemplateError) as caught:
        Renderer(tmp_path, default_locale="de").render("m", {"customer": {"locale": "de"}})
    assert str(caught.value).startswith("m/de/body.txt:2: 'dict object' has no attribute")


def test_an_email_lacking_a_part_for_the_chain_says_which_folders_were_tried(
        tmp_path: Path) -> None:
    put(tmp_path, {"m/fr/subject.txt": "Salut", "m/fr/body.txt": "x"})
    renderer = Renderer(tmp_path)
    assert renderer.exists("m") and emails_in(tmp_path) == {"m"}
    with pytest.raises(TemplateError) as caught:
        renderer.render("m", {"customer": {"locale": "de-AT"}})
    assert str(caught.value) == ("m/: no subject.txt and body.txt or body.html in m/de_AT/, "
                                 "m/de/, m/en/ or m/")
    assert renderer.render("m", {"customer": {"locale": "fr-CA"}}).subject == "Salut"


def test_flows_see_emails_kept_only_in_locale_folders(tmp_path: Path) -> None:
    put(tmp_path, {"a/en/subject.txt": "x", "a/en/body.html": "x",  # locale folders only
                   "b/subject.txt": "x", "b/body.txt": "x",  # the root only
                   "c/en/subject.txt": "x",  # no body anywhere
                   "_base/en/subject.txt": "x", "_base/en/body.txt": "x"})
    assert Context.from_folders(tmp_path, set()).templates == {"a", "b"}


def test_a_new_locale_folder_is_picked_up_by_a_running_renderer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path, {"m/en/subject.txt": "Hi", "m/en/body.txt": "x"})
    renderer = Renderer(tmp_path)
    assert renderer.render("m", {"customer": {"locale": "da"}}).subject == "Hi"
    put(tmp_path, {"m/da/subject.txt": "Hej", "m/da/body.txt": "x"})
    monkeypatch.setattr(templates, "CHECK_SECONDS", 0.0)
    assert renderer.render("m", {"customer": {"locale": "da"}}).subject == "Hej"
    words = put(tmp_path, {"_base/da/words.yaml": "w: en\n", "m/da/body.txt": "{{ words.w }}"})
    assert renderer.render("m", {"customer": {"locale": "da"}}).text == "en"
    path = words / "_base" / "da" / "words.yaml"
    path.write_text("w: to\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert renderer.render("m", {"customer": {"locale": "da"}}).text == "to"


def test_blank_lines_left_by_template_blocks_collapse_in_text_parts(tmp_path: Path) -> None:
    put(tmp_path, {"m/en/subject.txt": "Hi", "m/en/body.txt":
                   "\nHi,\n\n{% if a %}\nA\n{% endif %}\n\n\n\nB\n-- \nfoot\n"})
    assert Renderer(tmp_path).render("m", {"a": False}).text == "Hi,\n\nB\n-- \nfoot\n"


def test_style_rules_are_inlined_and_media_rules_kept_but_a_mail_with_none_is_left_alone(
        tmp_path: Path) -> None:
    media = "@media (max-width: 480px) { .x { color: red !important; } }"
    put(tmp_path, {
        "a/subject.txt": "a",
        "a/body.html": f"<style>/* a */ p {{ color: #123456; }} {media}</style><p>A</p>",
        "b/subject.txt": "b", "b/body.html": f"<style>{media}</style><p style=\"margin: 0\">B</p>",
    })
    renderer = Renderer(tmp_path)
    inlined = renderer.render("a", {}).html or ""
    assert '<p style="color: #123456;">A</p>' in inlined and "@media" in inlined
    assert renderer.render("b", {}).html == f'<style>{media}</style><p style="margin: 0">B</p>'
