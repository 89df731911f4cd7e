"""Configuration files are untrusted too: a file that would take the process down is that
file's problem, named with its line, and the other files keep running."""

from __future__ import annotations

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
