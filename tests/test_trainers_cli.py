"""``hf-cai train sft|dpo|reward|grpo --config cfg.yaml [--name value ...]``, on TRL's parser and under TRL's names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict
from scripts.saved_adapter import save_sft_adapter
from scripts.synthetic_cai import preference_rows, sl_cai_rows, split_prompts

from hf_cai.cli import main
from hf_cai.cli.train import read_training_config, trainer_model_arguments

pytestmark = pytest.mark.min_versions
TRL_STYLE_SFT = Path(__file__).parent / "data" / "trl_sft.yaml"


def _write_config(path, **settings) -> str:
    base = {"report_to": "none", "save_strategy": "no", "max_steps": 2, "logging_steps": 1, "qlora_profile": "cpu"}
    path.write_text(yaml.safe_dump(base | settings))
    return str(path)


def test_train_sft_from_a_builder_output_folder(tiny_model_dir, tmp_path, capsys):
    prompts, held_out = split_prompts(6, 2)
    DatasetDict(
        {"train_sft": Dataset.from_list(sl_cai_rows(prompts)), "test_sft": Dataset.from_list(sl_cai_rows(held_out))}
    ).save_to_disk(str(tmp_path / "sl-cai" / "dataset"))
    config = _write_config(
        tmp_path / "sft.yaml",
        model_name_or_path=str(tiny_model_dir),
        dataset_name=str(tmp_path / "sl-cai"),
        dataset_test_split="test_sft",
        constitution="harmless",
    )
    assert main(["train", "sft", "--config", config, "--output-dir", str(tmp_path / "out")]) == 0
    assert "trained sft for 2 steps" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "cai_training.json").read_text())
    assert record["hyperparameters"]["assistant_only_loss"] is True, "the CLI trains on the revisions only"
    assert record["dataset_sizes"] == {"train": 6, "eval": 2} and record["qlora_profile"] == "cpu"
    assert (tmp_path / "out" / "constitution.yaml").is_file()
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_train_dpo_from_a_jsonl_file(tiny_model_dir, tmp_path):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in preference_rows(split_prompts(4, 0)[0], chosen_prob=0.8)))
    config = _write_config(
        tmp_path / "dpo.yaml",
        model_name_or_path=str(tiny_model_dir),
        dataset_name=str(data),
        output_dir=str(tmp_path / "o"),
    )
    assert main(["train", "dpo", "--config", config]) == 0
    record = json.loads((tmp_path / "o" / "cai_training.json").read_text())
    assert record["stage"] == "dpo" and record["soft_labels"] is True and record["global_step"] == 2


def test_bad_configs_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    config = _write_config(
        tmp_path / "typo.yaml", model_name_or_path=str(tiny_model_dir), dataset_name="unused", learnig_rate=1e-4
    )
    assert main(["train", "sft", "--config", config]) == 2
    assert "learnig_rate" in capsys.readouterr().err
    DatasetDict({"test": Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0]))}).save_to_disk(str(tmp_path / "d"))
    config = _write_config(
        tmp_path / "split.yaml", model_name_or_path=str(tiny_model_dir), dataset_name=str(tmp_path / "d")
    )
    assert main(["train", "sft", "--config", config]) == 2
    assert "no split train_sft / train; its splits are: test" in capsys.readouterr().err


def test_dpo_and_reward_continue_a_saved_sft_adapter(tiny_model_dir, tmp_path, one_torch_thread):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in preference_rows(split_prompts(4, 0)[0], chosen_prob=0.8)))
    sft = save_sft_adapter(tiny_model_dir, tmp_path / "sft" / "final")
    bare = save_sft_adapter(tiny_model_dir, tmp_path / "bare", with_tokenizer=False)  # tokenizer from its base
    for stage, adapter in (("dpo", sft), ("reward", bare)):
        config = _write_config(
            tmp_path / f"{stage}.yaml", model_name_or_path=str(adapter), dataset_name=str(data), load_in_4bit=False
        )
        assert main(["train", stage, "--config", config, "--output-dir", str(tmp_path / stage)]) == 0
        record = json.loads((tmp_path / stage / "cai_training.json").read_text())
        assert record["global_step"] == 2 and record["method"] == "lora", stage
        assert record["base_model"] == str(tiny_model_dir), stage


def test_given_values_are_kept_even_when_they_equal_trl_defaults(tmp_path):
    """8 and 1 are TRL's batch size and accumulation; the 8gb profile would set 1 and 16, and fills only the rest."""
    config_file = _write_config(
        tmp_path / "sft.yaml", model_name_or_path="unused", dataset_name="unused", per_device_train_batch_size=8
    )
    setup = read_training_config(
        "sft", ["--config", config_file, "--qlora_profile", "8gb", "--gradient_accumulation_steps", "1"]
    )
    config = setup.config
    assert config.per_device_train_batch_size == 8, "TRL's default, but written in the YAML"
    assert config.gradient_accumulation_steps == 1, "TRL's default, but given on the command line"
    assert config.qlora_profile == "8gb" and config.learning_rate == 2e-4, "the profile's, not given"
    assert {"per_device_train_batch_size", "gradient_accumulation_steps", "qlora_profile"} <= setup.given
    assert "learning_rate" not in setup.given


def test_a_trl_style_sft_config_trains_with_overrides_on_the_command_line(tiny_model_dir, tmp_path, capsys):
    """TRL's own kind of config (ModelConfig's use_peft/lora_r, ScriptArguments' dataset_name, SFTConfig's fields):
    the model and the data, which offline cannot be fetched, and the run's length come from the command line."""
    shutil.copy(TRL_STYLE_SFT, tmp_path / "sft.yaml")
    DatasetDict({"train": Dataset.from_list(sl_cai_rows(split_prompts(4, 0)[0]))}).save_to_disk(str(tmp_path / "d"))
    argv = ["--config", str(tmp_path / "sft.yaml"), "--model_name_or_path", str(tiny_model_dir)]
    argv += ["--dataset_name", str(tmp_path / "d"), "--output_dir", str(tmp_path / "out"), "--max_steps", "2"]
    argv += ["--lora_alpha", "8", "--dtype", "float32", "--report_to", "none"]
    setup = read_training_config("sft", argv)
    peft_config = trainer_model_arguments(setup)["peft_config"]
    assert (peft_config.r, peft_config.lora_alpha) == (4, 8), "lora_r from the YAML, lora_alpha from the command line"
    assert setup.config.model_init_kwargs == {"dtype": "float32"}, "ModelConfig's loading settings, as TRL's sft.py"
    assert setup.config.learning_rate == 1e-4 and setup.config.gradient_accumulation_steps == 2
    assert main(["train", "sft", *argv]) == 0
    assert "trained sft for 2 steps" in capsys.readouterr().out
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 8)
    record = json.loads((tmp_path / "out" / "cai_training.json").read_text())
    assert record["qlora_profile"] is None and record["method"] == "lora"


def test_a_profile_takes_the_lora_settings_given(tmp_path):
    config_file = _write_config(tmp_path / "dpo.yaml", model_name_or_path="unused", dataset_name="unused", lora_r=4)
    setup = read_training_config("dpo", ["--config", config_file, "--lora_dropout", "0.0"])
    peft_config = trainer_model_arguments(setup)["peft_config"]
    assert (peft_config.r, peft_config.lora_dropout, peft_config.target_modules) == (4, 0.0, "all-linear")
    assert trainer_model_arguments(read_training_config("dpo", ["--config", config_file]))["peft_config"].r == 4
    no_lora = _write_config(tmp_path / "plain.yaml", model_name_or_path="unused", dataset_name="unused")
    assert trainer_model_arguments(read_training_config("dpo", ["--config", no_lora]))["peft_config"] is None, (
        "the trainer adds the profile's own adapter"
    )
    with pytest.raises(ValueError, match="qlora_profile 'cpu' loads the model itself .* load_in_8bit"):
        read_training_config("dpo", ["--config", config_file, "--load_in_8bit"])


@pytest.mark.parametrize(("old", "new"), [("dataset", "dataset_name"), ("train_split", "dataset_train_split")])
def test_the_earlier_key_names_are_refused_with_trl_s(old, new, tmp_path):
    config_file = _write_config(tmp_path / "old.yaml", model_name_or_path="unused", **{old: "x"})
    with pytest.raises(ValueError, match=f"old.yaml: {old} is now {new} \\(TRL's name\\)"):
        read_training_config("sft", ["--config", config_file])
    config_file = _write_config(tmp_path / "new.yaml", model_name_or_path="unused", dataset_name="x")
    with pytest.raises(ValueError, match="command line: eval_split is now dataset_test_split"):
        read_training_config("sft", ["--config", config_file, "--eval_split", "test"])


def test_train_grpo_with_a_preference_model_a_feedback_model_and_trl_reward_functions(
    tiny_model_dir, tiny_reward_model_dir, tmp_path, capsys, one_torch_thread
):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in preference_rows(split_prompts(2, 0)[0])))
    grpo = {"per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4, "max_steps": 1}
    config = _write_config(tmp_path / "grpo.yaml", model_name_or_path=str(tiny_model_dir), dataset_name=str(data), **grpo)
    assert main(["train", "grpo", "--config", config]) == 2
    assert "GRPO needs a reward: set reward_model_name_or_path" in capsys.readouterr().err
    argv = ["--config", config, "--reward_model_name_or_path", str(tiny_reward_model_dir)]
    argv += ["--reward_funcs", "think_format_reward", "--output_dir", str(tmp_path / "out")]
    setup = read_training_config("grpo", argv)
    assert setup.script_args.reward_funcs == ["think_format_reward"] and setup.config.num_generations == 2
    assert main(["train", "grpo", *argv]) == 0
    assert "trained grpo for 1 steps" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "cai_training.json").read_text())
    assert record["stage"] == "grpo" and record["method"] == "qlora" and record["quantization"] == "nf4"
    feedback = ["--config", config, "--feedback_model_name_or_path", str(tiny_model_dir)]
    assert main(["train", "grpo", *feedback]) == 2
    assert "feedback_model_name_or_path asks the constitution's questions: set `constitution`" in capsys.readouterr().err
    feedback += ["--constitution", "harmless", "--load_in_4bit", "false", "--output_dir", str(tmp_path / "fb")]
    assert main(["train", "grpo", *feedback]) == 0
    record = json.loads((tmp_path / "fb" / "cai_training.json").read_text())
    assert record["constitution"]["name"] == "harmless" and record["method"] == "lora"
    assert main(["train", "grpo", "--config", config, "--reward_funcs", "no_such_reward"]) == 2
    assert "reward_funcs: unknown function 'no_such_reward'" in capsys.readouterr().err
