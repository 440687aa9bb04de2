"""What a user meets first on the command line: ``hf-cai constitution`` (built-in names everywhere, ``export``, every
problem of a file at once, the paper's files named as they are read), the config keys of ``generate`` and ``train``,
and the help of every command. In-process, no model."""

from __future__ import annotations

import logging

import pytest
import yaml

from hf_cai.cli import build_parser, main, subcommands
from hf_cai.constitution import Constitution, ConstitutionError

HARMLESS = Constitution.builtin("harmless")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ----------------------------------------------------------------- built-in names everywhere


def test_validate_and_convert_take_a_builtin_name(tmp_path, capsys):
    status, out, _ = _run(capsys, "constitution", "validate", "harmless")
    assert status == 0 and out.startswith("harmless: OK (harmless v") and HARMLESS.sha256 in out
    status, out, _ = _run(capsys, "constitution", "validate", "harmless", "--format", "llm-swarm")
    assert status == 0, "a built-in name is not a file: --format does not apply to it"
    target = tmp_path / "mine.yaml"
    status, out, _ = _run(capsys, "constitution", "convert", "harmless", str(target))
    assert status == 0 and f"wrote {target} (sha256 {HARMLESS.sha256})" in out
    assert Constitution.load(target).sha256 == HARMLESS.sha256


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "harmles"],
        ["validate", "harmles"],
        ["convert", "harmles", "out.yaml"],
        ["export", "harmles", "out.yaml"],
    ],
)
def test_a_typo_of_a_builtin_name_gets_the_closest_name(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = _run(capsys, "constitution", *argv)
    assert status == 2
    assert "'harmles'" in err and "(did you mean 'harmless'?)" in err and "available: harmless, helpful-honest" in err
    assert "file not found" not in err
    assert not (tmp_path / "out.yaml").exists()


def test_a_missing_file_is_still_a_missing_file(tmp_path, capsys):
    status, _, err = _run(capsys, "constitution", "validate", str(tmp_path / "mine.yaml"))
    assert status == 2 and f"{tmp_path / 'mine.yaml'}: file not found" in err
    status, _, err = _run(capsys, "constitution", "show", "nothing-like-it")
    assert status == 2
    assert "'nothing-like-it' is neither a constitution file nor a built-in constitution; available: harmless" in err


def test_library_suggests_the_closest_builtin_name():
    with pytest.raises(ConstitutionError, match=r"no built-in constitution 'helpful-honst' \(did you mean 'helpful-honest'\?\)"):
        Constitution.builtin("helpful-honst")
    with pytest.raises(ConstitutionError, match="did you mean 'harmless'"):
        Constitution.resolve("Harmless")


def test_export_writes_a_builtin_and_keeps_an_existing_file(tmp_path, capsys):
    target = tmp_path / "start" / "mine.json"
    status, out, _ = _run(capsys, "constitution", "export", "helpful-honest", str(target))
    assert status == 0 and f"wrote {target}: the built-in constitution 'helpful-honest'" in out
    assert f"hf-cai constitution validate {target}" in out
    assert Constitution.load(target).sha256 == Constitution.builtin("helpful-honest").sha256
    target.write_text("my edits")
    status, _, err = _run(capsys, "constitution", "export", "harmless", str(target))
    assert status == 2 and f"{target} already exists; pass --force to overwrite it" in err
    assert target.read_text() == "my edits"
    assert _run(capsys, "constitution", "export", "harmless", str(target), "--force")[0] == 0
    assert Constitution.load(target).sha256 == HARMLESS.sha256
    status, _, err = _run(capsys, "constitution", "export", "harmless", str(tmp_path / "mine.toml"))
    assert status == 2 and "unknown file extension '.toml'; use .yaml, .yml or .json" in err


def test_a_folder_stands_for_its_constitution_file(tmp_path, capsys):
    HARMLESS.save(tmp_path / "model" / "constitution.yaml")
    status, out, _ = _run(capsys, "constitution", "validate", str(tmp_path / "model"))
    assert status == 0 and HARMLESS.sha256 in out
    (tmp_path / "empty").mkdir()
    status, _, err = _run(capsys, "constitution", "show", str(tmp_path / "empty"))
    assert status == 2 and "folder holds no constitution.yaml (nor the paper's CritiqueRevisionInstructions.json" in err


# ----------------------------------------------------------------- every problem of a file


def test_validate_reports_every_problem_with_its_field(tmp_path, capsys):
    data = {
        "name": "mine",
        "versoin": "2",
        "principles": [
            {"id": "a", "critique": "Find problems."},
            {"id": "a", "critique": ["not", "text"], "revision": "", "weight": -1},
            {"id": "bad id", "preference": "Which is kinder?", "colour": "red"},
        ],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    status, out, err = _run(capsys, "constitution", "validate", str(path))
    assert status == 2 and out == ""
    assert f"{path}: 8 problems:" in err
    for line in (
        "field 'versoin': unknown field (did you mean 'version'?); known fields: description, few_shot",
        "field 'principles[0].revision': missing required field (critique and revision go together)",
        "field 'principles[1].id': duplicate principle id 'a' (first used at principles[0])",
        "field 'principles[1].critique': must be a string, got list",
        "field 'principles[1].revision': must not be empty",
        "field 'principles[1].weight': must be a number > 0, got -1",
        "field 'principles[2].colour': unknown field; known fields: critique, id, preference",
        "field 'principles[2].id': 'bad id' is not a valid id",
    ):
        assert f"\n  {line}" in err, line


def test_one_error_lists_every_problem_and_keeps_each(tmp_path):
    data = {"name": "", "principles": [{"id": "x"}], "few_shot": {"preference": [{"answer": "C"}]}}
    with pytest.raises(ConstitutionError) as caught:
        Constitution.from_dict(data, source="mine.yaml")
    error = caught.value
    assert [p.field_path for p in error.problems] == [
        "name",
        "principles[0].critique",
        "few_shot.preference[0].prompt",
        "few_shot.preference[0].response_a",
        "few_shot.preference[0].response_b",
        "few_shot.preference[0].question",
        "few_shot.preference[0].answer",
    ]
    assert all(p.source == "mine.yaml" for p in error.problems)
    assert str(error).startswith("mine.yaml: 7 problems:\n  field 'name': must not be empty\n")
    # A single problem keeps its one-line wording.
    with pytest.raises(ConstitutionError, match=r"^mine.yaml, field 'principles': must contain at least one principle$"):
        Constitution.from_dict({"name": "x", "principles": []}, source="mine.yaml")


# ----------------------------------------------------------------- the paper's files are named as they are read


@pytest.mark.parametrize("command", ["convert", "validate"])
def test_importing_the_paper_names_every_file_it_read(command, fixtures_dir, tmp_path, capsys, caplog):
    paper = fixtures_dir / "anthropic-paper" / "CritiqueRevisionInstructions.json"
    argv = ["constitution", command, str(paper)]
    argv += [str(tmp_path / "paper.yaml")] if command == "convert" else ["--format", "anthropic-paper"]
    with caplog.at_level(logging.INFO, logger="hf_cai.constitution.importers"):
        assert main(argv) == 0
    message = next(r.getMessage() for r in caplog.records if r.name == "hf_cai.constitution.importers")
    assert f"imported the paper's files from {paper.parent}: " in message
    for part in (
        "CritiqueRevisionInstructions.json (16 critique/revision principles)",
        "RLMadisonInstructions.json (16 feedback principles)",
        "CritiqueRevisionFewShotPrompts.json (5 critique/revision examples)",
        "RLMadisonFewShotPrompts.json (",
    ):
        assert part in message, part


# ----------------------------------------------------------------- config keys of generate and train


def test_generate_refuses_an_unknown_key_with_the_closest_one(tmp_path, capsys):
    config = tmp_path / "sl.yaml"
    config.write_text(yaml.safe_dump({"model": "unused", "roundz": 2, "constitution": "harmless", "prompts": ["x"]}))
    status, _, err = _run(capsys, "generate", "sl", "--config", str(config))
    assert status == 2 and f"{config}: unknown key(s) roundz (did you mean 'rounds'?); known keys: " in err


def test_train_refuses_an_unknown_key_before_any_other_check(tmp_path, capsys):
    from hf_cai.cli.train import read_training_config

    config = tmp_path / "sft.yaml"
    # bf16 on a CPU machine would fail TRL's own checks: the key check comes first, and names the closest key.
    config.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset_name": "d", "learnig_rate": 1e-4, "bf16": True}))
    with pytest.raises(ValueError, match=r"sft.yaml: unknown key\(s\) learnig_rate \(did you mean 'learning_rate'\?\)$"):
        read_training_config("sft", ["--config", str(config)])
    for stage in ("dpo", "reward"):
        status, _, err = _run(capsys, "train", stage, "--config", str(config))
        assert status == 2 and "unknown key(s) learnig_rate (did you mean 'learning_rate'?)" in err, stage


def test_check_keys_lists_the_known_keys_only_when_few():
    from hf_cai.cli import CommandError, check_keys

    check_keys({"a": 1}, {"a", "b"}, "cfg.yaml")
    with pytest.raises(CommandError, match=r"^cfg.yaml: unknown key\(s\) zz; known keys: a, b$"):
        check_keys({"zz": 1}, {"a", "b"}, "cfg.yaml")
    many = {f"key_{i}" for i in range(50)}
    with pytest.raises(ValueError, match=r"^cfg.yaml: unknown key\(s\) key_x \(did you mean 'key_\d'\?\)$"):
        check_keys({"key_x": 1}, many, "cfg.yaml", error=ValueError)


# ----------------------------------------------------------------- help of every command


def test_every_command_has_a_description_and_every_option_a_help_text():
    missing = []
    for name, parser, short_help in subcommands(build_parser()):
        if not parser.description:
            missing.append(f"{name}: no description")
        if not short_help:
            missing.append(f"{name}: no short help")
        for action in parser.arguments:
            if not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}: no help text")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["eval"], ["--max-prompts MAX_PROMPTS", "(default: 32)", "(default: 128)", "(default: eval-results)",
                    "(default: harmless)"]),
        (["chat"], ["(default: 7860)", "(default: 256)", "(default: 0.7)", "(default: 2000)", "(default 127.0.0.1"]),
        (["demo"], ["(default: runs/demo)", "offline on SmolLM2-135M-Instruct"]),
        (["publish-dataset"], ["Publish a dataset saved by a builder"]),
        (["hub", "list"], ["(default: 50)", "(repeatable; default: constitutional-ai)"]),
        (["constitution", "validate"], ["(default: auto)", "list every problem found"]),
        (["constitution", "export"], ["overwrite FILE if it exists", "to edit into your own"]),
    ],
)
def test_help_shows_descriptions_and_defaults(command, shown, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_status:
        main([*command, "--help"])
    assert exit_status.value.code == 0
    out = capsys.readouterr().out
    for text in shown:
        assert text in out, text
    assert "(default: None)" not in out and "(default: False)" not in out
