"""Email templates render in a sandbox: escaped HTML, strict variables, errors with lines."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import pytest

from lifecycle.mail.templates import Renderer, TemplateError
from tests.mail_samples import EMAILS, LOCALES, TEMPLATES, rich_context


def full_context(locale: str = "en") -> dict[str, Any]:
    """Every variable of the context contract, with a name that must be escaped."""
    context = rich_context(locale)
    context["customer"]["first_name"] = "Zoë <script>"
    return context


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", EMAILS)
def test_each_shipped_email_renders_in_each_language_with_the_documented_variables(
        name: str, locale: str) -> None:
    out = Renderer(TEMPLATES).render(name, full_context(locale))
    assert out.subject and "\n" not in out.subject
    assert out.text is not None and "Zoë <script>" in out.text  # plain text is not escaped
    assert out.html is not None and "Zoë &lt;script&gt;" in out.html and "<script>" not in out.html
    assert f'<html lang="{locale}"' in out.html
    for part in (out.html, out.text):
        assert "https://shop.example/u/TOKEN" in part and "https://shop.example/p/TOKEN" in part
        assert "Brooksfleet 7, 20457 Hamburg" in part  # the postal address, in both parts
    assert "\n-- \n" in out.text  # the signature separator is dash dash space


def test_the_feedback_mail_links_all_eleven_scores() -> None:
    out = Renderer(TEMPLATES).render("feedback_request", full_context())
    for score in range(11):
        assert f"https://shop.example/f/TOKEN?score={score}" in out.html
        assert f"https://shop.example/f/TOKEN?score={score}" in out.text


def test_a_missing_variable_names_the_file_and_line() -> None:
    context = full_context()
    del context["offer"]
    with pytest.raises(TemplateError) as caught:
        Renderer(TEMPLATES).render("winback_2", context)
    assert str(caught.value).startswith("winback_2/en/subject.txt:1: 'offer' is undefined")


def write(folder: Path, name: str, subject: str, text: str) -> Renderer:
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "subject.txt").write_text(subject, encoding="utf-8")
    (folder / name / "body.txt").write_text(text, encoding="utf-8")
    return Renderer(folder)


@pytest.mark.parametrize("body", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ customer.__init__.__globals__ }}",
    "{% set x = customer.update({'first_name': 'mallory'}) %}",
])
def test_the_sandbox_refuses_what_a_template_must_not_do(tmp_path: Path, body: str) -> None:
    renderer = write(tmp_path, "evil", "Hi", "line one\n" + body + "\n")
    with pytest.raises(TemplateError) as caught:
        renderer.render("evil", {"customer": {"first_name": "Ann"}})
    assert "evil/body.txt:2:" in str(caught.value)


def test_names_read_from_a_dict_mean_what_they_mean_in_jinja(tmp_path: Path) -> None:
    """A dict's own attributes come before its keys, as in Jinja (``order.items`` is the
    method even when the order has a key ``items``), every other name is the key, and a
    missing key is an error naming the line."""
    body = ("{{ order.id }}|{{ order['items'] }}|{{ order.items is callable }}|"
            "{{ order.get('id') }}|{{ order.lines|length }}|{{ order.keys()|list|length }}\n"
            "{{ order.missing }}\n")
    renderer = write(tmp_path, "dicts", "Hi", body)
    context = {"order": {"id": "A-1", "items": "listed", "lines": [1, 2], "get": "shadowed"}}
    plain = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    expected = plain.from_string(body.splitlines()[0]).render(context)
    with pytest.raises(TemplateError) as caught:
        renderer.render("dicts", context)
    assert str(caught.value).startswith("dicts/body.txt:2: 'dict object' has no attribute "
                                        "'missing'")
    shown = write(tmp_path, "shown", "Hi", body.splitlines()[0]).render("shown", context)
    assert shown.text == expected == "A-1|listed|True|A-1|2|4"


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    renderer = write(tmp_path, "broken", "Hi", "ok\nok\n{% if %}\n")
    with pytest.raises(TemplateError) as caught:
        renderer.render("broken", {})
    assert str(caught.value).startswith("broken/body.txt:3:")


def test_a_subject_cannot_smuggle_header_lines(tmp_path: Path) -> None:
    renderer = write(tmp_path, "s", "Hello {{ name }}", "x")
    out = renderer.render("s", {"name": "Ann\r\nBcc: victim@example.com"})
    assert out.subject == "Hello Ann Bcc: victim@example.com"


def test_an_email_without_a_subject_file_is_unknown(tmp_path: Path) -> None:
    shutil.copytree(TEMPLATES / "thank_you" / "en", tmp_path / "thank_you")
    (tmp_path / "thank_you" / "subject.txt").unlink()
    with pytest.raises(TemplateError, match="no such email"):
        Renderer(tmp_path).render("thank_you", full_context())


def test_an_edited_template_is_picked_up_by_a_running_renderer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import lifecycle.mail.templates as templates

    renderer = write(tmp_path, "hello", "Hi\n", "first\n")
    assert renderer.render("hello", {}).text == "first\n"
    body = tmp_path / "hello" / "body.txt"
    body.write_text("second\n", encoding="utf-8")
    os.utime(body, ns=(body.stat().st_mtime_ns + 10**9,) * 2)
    assert renderer.render("hello", {}).text == "first\n"  # within the check interval
    monkeypatch.setattr(templates, "CHECK_SECONDS", 0.0)
    assert renderer.render("hello", {}).text == "second\n"
    (tmp_path / "hello" / "body.html").write_text("<p>new part</p>", encoding="utf-8")
    assert renderer.render("hello", {}).html == "<p>new part</p>"  # no <style>: nothing inlined


#: Templates that would freeze or fill a process: each must fail alone, fast, naming its file.
BLOWUPS = [
    "{{ (x + 9) ** (9 ** 8) }}",
    "{{ 'a' * 2000000000 }}",
    "{{ 2000000000 * [1] }}",
    "{% set a = 2 ** 9000 %}{{ a * a * a > 0 }}",
    "{{ range(100000)|list|length }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%0*d' % (999999999, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{:.{}f}'.format(1.5, 999999999) }}",
    "{{ 'x'.center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x'.rjust(10**9) }}",
    "{{ 'x'.zfill(10**9) }}",
    "{{ ('\t' * 1000).expandtabs(100000) }}",
    "{{ ('a' * 1000).replace('', 'b' * 100000) }}",
    "{{ ('x' * 100000).join(range(10000)|map('string')) }}",
    "{{ 'x'|indent(10**9, true) }}",
    "{{ 'x'|center(10**9) }}",
    "{{ 'x y z'|wordwrap(1, wrapstring='x' * 1000000) }}",
    "{{ range(10)|batch(10**9, 'x')|list }}",
    "{{ [1]|slice(10**9)|list }}",
    "{{ '%0999999999d'|format(1) }}",
    "{{ range(10000)|map('string')|join('x' * 100000) }}",
    "{% set a = 'x' * 900000 %}{{ range(10000)|map('replace', '', a)|list|length }}",
    "{% set a = 'x' * 900000 %}{{ ([a] * 1000)|string }}",
    "{% set a = 'x' * 1000000 %}{{ [a, a, a, a, a, a] }}",
    "{% set a = 'x' * 1000000 %}{{ a ~ a ~ a ~ a ~ a ~ a }}",
    "{% set ns = namespace(x='a') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}"
    "{% endfor %}{{ ns.x|length }}",
    "{% macro f(n) %}{% if n %}{% set x = f(n - 1) %}{{ x }}{{ x }}{% else %}a{% endif %}"
    "{% endmacro %}{{ f(60) }}",
    "{% set s %}{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}{{ s|length }}",
    "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
    "{{ lipsum(1000000) }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ ('f' * 3000)|int(base=16) }}",
    "{{ ('0x' ~ 'f' * 3000)|int(base=0) }}",
    "{{ ['f' * 3000]|map('int', base=16)|list }}",
    "{{ ('9' * 1000000)|float }}",
    "{{ 0x" + "f" * 3000 + " // 3 }}",
    "{% set a = 2 ** 9999 %}{{ (a + a) // 3 }}",
    "{{ [2 ** 9999, 2 ** 9999]|sum }}",
    "{{ ([[0] * 100] * 1000)|sum(start=[])|length }}",
    "{{ (1).to_bytes(2000000, 'big')|length }}",
    "{{ (0).from_bytes(('x' * 2000).encode(), 'big').bit_length() }}",
    "{{ 'ab'.encode('punycode') }}",
    "{% set s = ('%999999d' * 20) % ((1,) * 20) %}x",
    "{{ x|round(-100000) }}",
    "{{ 1.5|round(100000, 'floor') }}",
    # Output-less and slow: only the time limit stops these.
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% set r = range(10000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
]
BLOWUP_IDS = [
    "huge_power",
    "huge_str_repetition",
    "huge_list_repetition",
    "huge_product",
    "huge_range",
    "printf_width",
    "printf_star_width",
    "format_width",
    "format_nested_precision",
    "center_method",
    "ljust_method",
    "rjust_method",
    "zfill_method",
    "expandtabs_method",
    "replace_method",
    "join_method",
    "indent_filter",
    "center_filter",
    "wordwrap_filter",
    "batch_filter",
    "slice_filter",
    "format_filter",
    "join_filter",
    "map_replace_filter",
    "string_of_repeated_list",
    "list_literal_of_big_values",
    "concat_of_big_values",
    "doubling_in_a_namespace",
    "doubling_macro",
    "set_block",
    "output",
    "lipsum",
    "endless_recursion",
    "int_filter_of_a_long_string",
    "int_filter_with_a_prefix",
    "int_filter_through_map",
    "float_filter_of_a_long_string",
    "huge_int_literal",
    "int_sum_past_the_bits",
    "sum_filter_past_the_bits",
    "sum_filter_of_lists",
    "to_bytes_method",
    "from_bytes_method",
    "quadratic_codec",
    "printf_many_widths",
    "round_filter_precision",
    "round_filter_floor_precision",
    "nested_loops",
    "nested_loops_over_a_variable",
    "exponential_macro_calls",
]


@pytest.mark.parametrize("body", BLOWUPS, ids=BLOWUP_IDS)
def test_a_template_that_would_freeze_or_fill_the_process_fails_within_seconds_naming_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    import time

    import lifecycle.mail.templates as templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 1.0)
    renderer = write(tmp_path, "runaway", "Hi", "line one\n" + body + "\n")
    started = time.thread_time()  # this thread's processor time: what the limit counts
    with pytest.raises(TemplateError) as caught:
        renderer.render("runaway", {"x": 1})
    assert time.thread_time() - started < 1.5
    assert str(caught.value).startswith("runaway/body.txt")
    assert "rendering limit" in str(caught.value) or "'lipsum' is undefined" in str(caught.value)


def test_no_operator_takes_or_makes_an_integer_over_the_bit_limit(tmp_path: Path) -> None:
    for operator in ("//", "/", "-", "%", "+", "*", "**"):
        renderer = write(tmp_path, "big", "Hi", f"{{{{ x {operator} 3 }}}}")
        expected = re.escape(operator) + " was given an integer of 20,001 bits; at most 10,000"
        with pytest.raises(TemplateError, match=expected):
            renderer.render("big", {"x": 2 ** 20000})
    renderer = write(tmp_path, "edge", "Hi", "{{ x - 1 }} {{ (x + x).bit_length() }}")
    with pytest.raises(TemplateError, match=r"\+ made an integer of 10,001 bits"):
        renderer.render("edge", {"x": 2 ** 9999})


@pytest.mark.parametrize(("body", "refused"), [
    ("{{ 'ab'.encode().title() }}", "the method title() of bytes is not allowed"),
    ("{{ (1.5).fromhex('0x1p3') }}", "the method fromhex() of a number or bytes is not allowed"),
    ("{{ (3).from_bytes('a'.encode(), 'big') }}", "the method from_bytes() of a number or"),
    ("{{ 'a'.encode().decode('punycode') }}", "decode() with the codec 'punycode' is not"),
])
def test_numbers_and_bytes_have_only_a_few_methods_and_strings_only_linear_codecs(
        tmp_path: Path, body: str, refused: str) -> None:
    renderer = write(tmp_path, "m", "Hi", body)
    with pytest.raises(TemplateError, match=re.escape(refused)):
        renderer.render("m", {})
    allowed = write(tmp_path, "ok", "Hi", "{{ (3).bit_length() }} {{ 'é'.encode('latin-1').hex() }}")
    assert allowed.render("ok", {}).text == "2 e9"


def test_the_limits_leave_ordinary_arithmetic_formatting_and_loops_alone(tmp_path: Path) -> None:
    renderer = write(tmp_path, "fine", "Hi", (
        "{{ (x + 9) ** 3 }} {{ 'ab' * 3 }} {{ '%05d' % 42 }} {{ '{:>6}'.format('r') }} "
        "{{ 'x'|center(5) }}|{{ range(3)|join(',') }} {{ 2 ** 64 }} "
        "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}"
        "{{ ('y' * 10000)|length }} {{ '-'.join(range(3)|map('string')) }} "
        "{{ 7 // 2 }} {{ 7 - 2 }} {{ 7 / 2 }} {{ '0x1f'|int(base=0) }} {{ '3.5'|float }} "
        "{{ [1, 2]|sum }} {{ (255).to_bytes(2, 'big').hex() }} {{ 'é'.encode('utf-8')|length }}"))
    assert renderer.render("fine", {"x": 1}).text == (
        "1000 ababab 00042      r   x  |0,1,2 18446744073709551616 10000 0-1-2 "
        "3 5 3.5 31 3.5 3 00ff 2")


def test_what_one_mail_builds_in_all_and_its_ranges_are_bounded(tmp_path: Path) -> None:
    build = "{% for i in range(N) %}{% set x = 'x' * 1000000 %}{% endfor %}{{ range(R)|length }}"
    fits = write(tmp_path, "fits", "Hi", build.replace("N", "9").replace("R", "10000"))
    assert fits.render("fits", {}).text == "10000"
    too_much = write(tmp_path, "much", "Hi", build.replace("N", "11").replace("R", "1"))
    with pytest.raises(TemplateError, match="past 10,000,000 characters or items built in all"):
        too_much.render("much", {})
    too_long = write(tmp_path, "long", "Hi", build.replace("N", "1").replace("R", "10001"))
    with pytest.raises(TemplateError, match=r"range\(\) of 10,001 items; at most 10,000"):
        too_long.render("long", {})


def test_after_a_mail_ran_out_of_time_the_next_mails_get_a_short_limit_and_ordinary_ones_render(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import lifecycle.mail.templates as templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 2.0)
    renderer = write(tmp_path, "mail", "Hi", (
        "{% if loop_for_ever %}{% for i in range(10000) %}{% for j in range(10000) %}"
        "{% endfor %}{% endfor %}{% endif %}Dear {{ name }}"))
    took = []
    for _ in range(3):
        started = time.thread_time()
        with pytest.raises(TemplateError) as caught:
            renderer.render("mail", {"loop_for_ever": True, "name": "Ann"})
        took.append(time.thread_time() - started)
    assert 2.0 <= took[0] < 2.5 and all(0.5 <= t < 0.8 for t in took[1:])
    assert str(caught.value).endswith("rendering used more than 0.5 seconds of processor time, "
                                      "the limit for one mail for 60 seconds after one ran out "
                                      "of time")
    assert renderer.render("mail", {"loop_for_ever": False, "name": "Bo"}).text == "Dear Bo"
    monkeypatch.setattr(templates, "STRAINED_SECONDS", 0.0)  # the minute is over
    renderer.render("mail", {"loop_for_ever": False, "name": "Bo"})
    started = time.thread_time()
    with pytest.raises(TemplateError):
        renderer.render("mail", {"loop_for_ever": True, "name": "Ann"})
    assert time.thread_time() - started >= 2.0


class Stalls:
    """A value whose reading waits without working, as a thread does on a busy machine."""

    @property
    def name(self) -> str:
        import time

        time.sleep(0.6)
        return "Ann"


def test_a_mail_that_waits_rather_than_works_is_not_stopped_by_the_time_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lifecycle.mail.templates as templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.5)
    renderer = write(tmp_path, "slow", "Hi", "{% for i in range(3) %}{{ who.name }} {% endfor %}")
    assert renderer.render("slow", {"who": Stalls()}).text == "Ann Ann Ann "
