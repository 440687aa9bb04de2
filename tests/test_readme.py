"""The README's promises: its set-up commands, the recipe-key reference (generated from the code) and the example
configs it points to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hf_cai.cli import main as cli_main
from hf_cai.cli.train import read_training_config
from hf_cai.pipeline.reference import BEGIN_MARKER, END_MARKER, recipe_reference, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_starts_with_the_two_setup_commands():
    first_block = README.read_text(encoding="utf-8").split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]


def test_recipe_key_reference_in_the_readme_is_current():
    text = README.read_text(encoding="utf-8")
    assert replace_block(text, recipe_reference()) == text, (
        "the README's recipe reference is out of date: run `python -m hf_cai.pipeline.reference --write README.md`"
    )


def test_recipe_key_reference_lists_every_section_and_top_level_key():
    from dataclasses import fields

    from hf_cai.pipeline.recipe import RecipeConfig, section_classes

    reference = recipe_reference()
    for section in section_classes():
        assert f"### `{section}:`" in reference
    for item in fields(RecipeConfig):
        if item.name not in section_classes():
            assert f"| `{item.name}` |" in reference
    assert "| `rounds` | `2` |" in reference  # a builder field with its default


def test_replacing_the_block_needs_both_markers():
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers here", "x")
    assert replace_block(f"a\n{BEGIN_MARKER}\nold\n{END_MARKER}\nb", "new\n") == f"a\n{BEGIN_MARKER}\n\nnew\n\n{END_MARKER}\nb"


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward", "grpo"])
def test_example_training_configs_parse(stage):
    setup = read_training_config(stage, ["--config", str(ROOT / "examples" / "steps" / f"{stage}.yaml")])
    assert setup.model_args.model_name_or_path and setup.script_args.dataset_name.startswith("runs/steps/")
    assert setup.config.output_dir.startswith("runs/steps/")


@pytest.mark.parametrize("kind", ["sl", "prefs"])
def test_example_generation_configs_pass_the_key_check(kind, capsys, monkeypatch):
    """The configs' keys are all valid: the command gets as far as loading the model, which offline it cannot."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = cli_main(["generate", kind, "--config", str(ROOT / "examples" / "steps" / f"{kind}.yaml")])
    error = capsys.readouterr().err
    assert status == 2
    assert "could not load the model 'Qwen/Qwen2.5-1.5B-Instruct'" in error
    assert "unknown key" not in error


def _tour_regions() -> dict[str, str]:
    tour = (ROOT / "examples" / "tour.py").read_text(encoding="utf-8")
    found = re.findall(r"# --8<-- \[start:(\w+)\]\n(.*?)# --8<-- \[end:\1\]", tour, flags=re.DOTALL)
    return {name: body.rstrip("\n") for name, body in found}


def test_the_readme_tour_is_the_tour_script():
    """Every step of examples/tour.py is a code block of the README's tour, character for character, so that what the
    README shows is what the script (and its test) runs."""
    regions = _tour_regions()
    assert set(regions) == {"tour", "evaluate"}
    text = README.read_text(encoding="utf-8")
    tour_section = text[text.index("## A 5-minute tour in Python") : text.index("## The same from the command line")]
    blocks = re.findall(r"```python\n(.*?)\n```", tour_section, flags=re.DOTALL)
    for name, body in regions.items():
        assert body in blocks, f"the README's tour lacks the '{name}' step of examples/tour.py as it is now"
    preamble = blocks[0]
    for variable in ("model_id", "cpu", "out", "max_prompts"):
        assert re.search(rf"\b{variable}\b", preamble), f"the README's first tour block must define {variable}"
