"""Drop-in: one plain TRL script, run with TRL's trainer/config pair, with hf_cai's, and with only the trainer class
swapped (TRL's config, hf_cai's trainer), trains and saves the same."""

from __future__ import annotations

import json

import pytest
import yaml
from datasets import Dataset
from peft import LoraConfig
from scripts import train_pair
from scripts.synthetic_cai import preference_rows, sl_cai_rows, split_prompts
from trl import DPOConfig, SFTConfig, SFTTrainer
from trl.trainer import utils as trl_utils

from hf_cai.trainers import CAIDPOTrainer, CAISFTTrainer

pytestmark = pytest.mark.min_versions


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward", "grpo"])
def test_the_same_script_trains_identically_with_either_pair(stage, tiny_model_dir, tiny_reward_model_dir, tmp_path):
    model = tiny_reward_model_dir if stage == "reward" else tiny_model_dir
    runs = {}
    for pair in ("trl", "cai", "swap"):
        output = tmp_path / pair
        runs[pair] = train_pair.main(["--pair", pair, "--stage", stage, "--model", str(model), "--output", str(output)])
        assert (output / "adapter_model.safetensors").is_file() and (output / "adapter_config.json").is_file()
    for pair in ("cai", "swap"):
        record = json.loads((tmp_path / pair / "cai_training.json").read_text())
        assert record["stage"] == stage and record["qlora_profile"] is None, pair
        assert not (tmp_path / pair / "constitution.yaml").exists(), "none given, none in the data"
    assert not (tmp_path / "trl" / "cai_training.json").exists()
    # Per step: the loss, the gradient's norm (GRPO's first loss on its own samples is 0 whatever the weights) and,
    # for GRPO, the mean reward of the sampled completions.
    logged = ("loss", "grad_norm", "reward") if stage == "grpo" else ("loss", "grad_norm")
    steps = {
        pair: [[entry[key] for key in logged] for entry in run["log_history"] if "loss" in entry]
        for pair, run in runs.items()
    }
    assert len(steps["trl"]) == 2 and steps["trl"][0][1] > 0
    for pair in ("cai", "swap"):
        for step, expected in zip(steps[pair], steps["trl"], strict=True):
            assert step == pytest.approx(expected, abs=1e-6), pair


def test_a_plain_trl_config_takes_the_constitution_and_soft_labels(tiny_model_dir, tmp_path):
    """TRL's DPOConfig has no CAI fields: the constitution comes from the trainer argument, and a 'chosen_prob'
    column trains soft labels as with CAIDPOConfig's default."""
    rows = preference_rows(split_prompts(4, 0)[0], chosen_prob=0.8)
    args = DPOConfig(
        str(tmp_path / "out"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to="none",
        save_strategy="no",
        bf16=False,
    )
    trainer = CAIDPOTrainer(
        model=str(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        constitution="harmless",
    )
    assert trainer.soft_labels is True
    trainer.train()
    trainer.save_model()
    assert yaml.safe_load((tmp_path / "out" / "constitution.yaml").read_text())["name"] == "harmless"
    record = json.loads((tmp_path / "out" / "cai_training.json").read_text())
    assert record["soft_labels"] is True and record["global_step"] == 1


def test_a_trl_without_the_internals_the_trainers_extend_is_named(tiny_model_dir, tmp_path, monkeypatch):
    """An older TRL, simulated by removing what TRL 1.15 added or what the trainers override: construction stops first,
    naming the TRL version needed."""
    plain = {"report_to": "none", "bf16": False}
    monkeypatch.delattr(trl_utils, "add_fused_lm_head")
    prefs = Dataset.from_list(preference_rows(split_prompts(2, 0)[0], chosen_prob=0.8))
    with pytest.raises(ImportError, match=r"fused LM head .*: hf-cai needs trl>=1\.16 "):
        CAIDPOTrainer(model=str(tiny_model_dir), args=DPOConfig(str(tmp_path), **plain), train_dataset=prefs)
    monkeypatch.delattr(SFTTrainer, "_prepare_dataset")
    sl = Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0]))
    with pytest.raises(ImportError, match=r"CAISFTTrainer extends SFTTrainer\._prepare_dataset, .* trl>=1\.16"):
        CAISFTTrainer(model=str(tiny_model_dir), args=SFTConfig(str(tmp_path), **plain), train_dataset=sl)
