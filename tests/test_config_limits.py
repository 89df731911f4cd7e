"""Configuration files are untrusted too: a file that would take the process down is that
file's problem, named with its line, and the other files keep running."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lifecycle.flows.definitions import MAX_STEPS, Context, load_folder
from lifecycle.yamlfile import MAX_DEPTH, MAX_VALUES, InvalidFile, load, loads

ROOT = Path(__file__).resolve().parent.parent


def test_nested_aliases_that_would_expand_to_billions_are_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    with pytest.raises(InvalidFile) as caught:
        loads("\n".join(lines) + "\n", "bomb.yaml")
    [problem] = caught.value.problems
    assert problem.file == "bomb.yaml" and f"more than {MAX_VALUES:,} values" in problem.message


def test_deep_nesting_is_refused_with_a_message_not_a_recursion_error() -> None:
    deep = "a: " + "[" * 2000 + "]" * 2000 + "\n"
    with pytest.raises(InvalidFile) as caught:
        loads(deep, "deep.yaml")
    assert f"nested more than {MAX_DEPTH} levels" in caught.value.problems[0].message
    mapping = "".join(f"{'  ' * n}k{n}:\n" for n in range(60)) + f"{'  ' * 60}x\n"
    with pytest.raises(InvalidFile) as caught:
        loads(mapping, "deep.yaml")
    assert f"nested more than {MAX_DEPTH} levels" in caught.value.problems[0].message


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 5_000_000 + "\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match="a configuration file has at most"):
        load(big)


def test_a_flow_of_too_many_steps_is_its_own_problem_and_the_others_still_load(
        tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("thank_you.yaml", "segments.yaml"):
        (folder / name).write_text((ROOT / "flows" / name).read_text(encoding="utf-8"),
                                   encoding="utf-8")
    steps = "".join(f"  - id: s{n}\n    set: {{attribute: a{n}, value: 1}}\n"
                    for n in range(MAX_STEPS + 800))
    (folder / "long.yaml").write_text("status: draft\ntrigger: {first_order: {}}\nsteps:\n"
                                      + steps, encoding="utf-8")
    loaded = load_folder(folder, Context({"thank_you"}, set()))
    assert "thank_you" in loaded.flows and "long" not in loaded.flows
    [problem] = loaded.problems
    assert f"a flow has at most {MAX_STEPS} steps; this one has {MAX_STEPS + 800}" in \
        problem.message


ODD_TEXT = {  # what each makes PyYAML raise out of the loader, and what the file is told
    "tag.yaml": ("steps:\n  - send: !foo thank_you\n", 2, "the tag !foo is not supported"),
    "merge.yaml": ("steps:\n  - <<: {exit: x}\n", 2, "a merge key (<<) is not supported"),
    "key.yaml": ("? [a, b]\n: 1\n", 1, "a key must be a plain name"),
    "stamp.yaml": ("when: !!timestamp x\n", 1, "cannot be read as timestamp"),
    "float.yaml": ("n: !!float x\n", 1, "cannot be read as float"),
    "digits.yaml": ("n: " + "9" * 5000 + "\n", 1, "cannot be read as int"),
    "control.yaml": ("description: a\x07b\n", 1, "is not allowed in a YAML file"),
}


@pytest.mark.parametrize("name", sorted(ODD_TEXT))
def test_text_the_yaml_loader_chokes_on_is_the_file_s_problem_at_its_line(name: str) -> None:
    text, line, words = ODD_TEXT[name]
    with pytest.raises(InvalidFile) as caught:
        loads(text, name)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (name, line) and words in problem.message, problem


def test_a_file_that_is_not_utf8_a_device_or_a_pipe_is_refused_before_it_is_read(
        tmp_path: Path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("status: draft\ndescription: Gr\xfc\xdfe\n".encode("latin-1"))
    with pytest.raises(InvalidFile) as caught:
        load(latin)
    [problem] = caught.value.problems
    assert problem.line == 2 and "not UTF-8 text (byte 0xfc" in problem.message
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    with pytest.raises(InvalidFile, match="not a regular file"):
        load(zero)
    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    with pytest.raises(InvalidFile, match="not a regular file"):
        load(pipe)  # would wait for a writer forever if it were opened


def test_an_odd_flow_file_beside_the_others_is_its_problem_and_the_others_run(
        tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    (flows / "latin.yaml").write_bytes(b"status: draft\ndescription: Gr\xfc\xdfe\n")
    (flows / "tagged.yaml").write_text("status: draft\nsteps:\n  - send: !foo x\n",
                                       encoding="utf-8")
    (flows / "zero.yaml").symlink_to("/dev/zero")
    found = load_folder(flows, Context.from_folders(ROOT / "templates" / "email",
                                                    {"lapsed", "loyal", "vip", "promoter",
                                                     "coffee_due_again"}))
    broken = {Path(p.file).name for p in found.problems}
    assert {"latin.yaml", "tagged.yaml", "zero.yaml"} <= broken
    assert {"thank_you", "win_back"} <= set(found.flows)
