"""``lifecycle flows validate`` checks the locale folders of the templates flows send."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from lifecycle.cli import cli
from lifecycle.flows.template_locales import folder_problems, template_problems

ROOT = Path(__file__).resolve().parent.parent


def templates_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "email"
    shutil.copytree(ROOT / "templates" / "email", folder)
    return folder


def test_validate_names_a_locale_folder_that_lacks_a_part_and_one_that_is_no_locale(
        tmp_path: Path) -> None:
    templates = templates_copy(tmp_path)
    german = templates / "thank_you" / "de"
    (german / "body.html").unlink()
    (templates / "thank_you" / "de-AT").mkdir()
    (templates / "thank_you" / "german").mkdir()
    (templates / "unused").mkdir()
    (templates / "unused" / "xx").mkdir()  # no flow sends it: not checked
    result = CliRunner().invoke(cli, ["flows", "validate"],
                                env={"LIFECYCLE_TEMPLATES_DIR": str(templates)})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"{german}:1:1: locale folder de/ of template thank_you lacks body.html (the " \
           "template has it in da/, en/, nb/, pl/, sv/): a customer reading de would get that " \
           "part in another language" in lines
    assert any(line.startswith(f"{templates / 'thank_you' / 'de-AT'}:1:1: folder 'de-AT' of "
                               "template thank_you is not a locale folder name")
               and line.endswith("did you mean de_AT?") for line in lines)
    assert any("folder 'german' of template thank_you is not a locale folder name" in line
               for line in lines)
    assert not any("unused" in line for line in lines)
    assert len(lines) == 3


def test_complete_locale_folders_pass_and_the_layout_s_words_are_compared_across_locales(
        tmp_path: Path) -> None:
    templates = templates_copy(tmp_path)
    for language in ("en", "de", "nb_NO"):
        folder = templates / "thank_you" / language
        folder.mkdir(exist_ok=True)
        for part in ("subject.txt", "body.txt", "body.html"):
            (folder / part).write_text("x\n", encoding="utf-8")
    assert folder_problems(templates / "thank_you") == []
    (templates / "_base" / "en" / "footer.txt").write_text("x\n", encoding="utf-8")
    problems = [p.message for p in template_problems(templates, ["thank_you"])]
    assert problems == [f"locale folder {language}/ of template _base lacks footer.txt (the "
                        "template has it in en/): a customer reading "
                        f"{language} would get that part in another language"
                        for language in ("da", "de", "nb", "pl", "sv")]


def test_the_shipped_flows_and_templates_validate() -> None:
    ok = CliRunner().invoke(cli, ["flows", "validate"])
    assert ok.exit_code == 0, ok.stderr


def test_a_flow_label_names_its_locales_as_babel_writes_them(tmp_path: Path) -> None:
    import pytest

    from lifecycle.flows.definitions import Context, load_flow
    from lifecycle.yamlfile import InvalidFile

    path = tmp_path / "flow.yaml"
    body = "trigger: {first_order: {}}\nsteps:\n  - send: thank_you\n"
    path.write_text("label: {de: Angebote, en: Offers}\n" + body, encoding="utf-8")
    context = Context({"thank_you"}, set())
    flow = load_flow(path, context)
    assert flow.label(["de_AT", "de", "en"]) == "Angebote"
    assert flow.label(["fr", "en"]) == "Offers" and flow.label(["fr"]) == ""
    path.write_text("description: Staff words\nlabel: {de-AT: x, german: y, sv: 3}\n" + body,
                    encoding="utf-8")
    with pytest.raises(InvalidFile) as caught:
        load_flow(path, context)
    assert [p.message for p in caught.value.problems] == [
        "'de-AT' is not a locale as Babel writes it (en, de, de_AT, nb …)",
        "'german' is not a locale as Babel writes it (en, de, de_AT, nb …)",
        "a label is a text"]
