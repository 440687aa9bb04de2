"""``hf-cai train sft|dpo|reward --config cfg.yaml``."""

from __future__ import annotations

import json

import yaml
from datasets import Dataset, DatasetDict
from scripts.saved_adapter import save_sft_adapter
from scripts.synthetic_cai import preference_rows, sl_cai_rows, split_prompts

from hf_cai.cli import main
from hf_cai.cli.train import read_training_config


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
        dataset=str(tmp_path / "sl-cai"),
        eval_split="test_sft",
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
        tmp_path / "dpo.yaml", model_name_or_path=str(tiny_model_dir), dataset=str(data), output_dir=str(tmp_path / "o")
    )
    assert main(["train", "dpo", "--config", config]) == 0
    record = json.loads((tmp_path / "o" / "cai_training.json").read_text())
    assert record["stage"] == "dpo" and record["soft_labels"] is True and record["global_step"] == 2


def test_bad_configs_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    config = _write_config(
        tmp_path / "typo.yaml", model_name_or_path=str(tiny_model_dir), dataset="unused", learnig_rate=1e-4
    )
    assert main(["train", "sft", "--config", config]) == 2
    assert "learnig_rate" in capsys.readouterr().err
    DatasetDict({"test": Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0]))}).save_to_disk(str(tmp_path / "d"))
    config = _write_config(tmp_path / "split.yaml", model_name_or_path=str(tiny_model_dir), dataset=str(tmp_path / "d"))
    assert main(["train", "sft", "--config", config]) == 2
    assert "no split train_sft / train; its splits are: test" in capsys.readouterr().err


def test_dpo_and_reward_continue_a_saved_sft_adapter(tiny_model_dir, tmp_path, one_torch_thread):
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in preference_rows(split_prompts(4, 0)[0], chosen_prob=0.8)))
    sft = save_sft_adapter(tiny_model_dir, tmp_path / "sft" / "final")
    bare = save_sft_adapter(tiny_model_dir, tmp_path / "bare", with_tokenizer=False)  # tokenizer from its base
    for stage, adapter in (("dpo", sft), ("reward", bare)):
        config = _write_config(
            tmp_path / f"{stage}.yaml", model_name_or_path=str(adapter), dataset=str(data), load_in_4bit=False
        )
        assert main(["train", stage, "--config", config, "--output-dir", str(tmp_path / stage)]) == 0
        record = json.loads((tmp_path / stage / "cai_training.json").read_text())
        assert record["global_step"] == 2 and record["method"] == "lora", stage
        assert record["base_model"] == str(tiny_model_dir), stage


def test_yaml_values_are_kept_even_when_they_equal_trl_defaults(tmp_path):
    config_file = _write_config(
        tmp_path / "dpo.yaml", model_name_or_path="unused", dataset="unused", per_device_train_batch_size=8
    )
    _, config = read_training_config("dpo", config_file)
    assert config.per_device_train_batch_size == 8, "TRL's default, but written in the YAML"
    assert config.gradient_accumulation_steps == 2, "the cpu profile's for DPO, not written"
