"""CAIGRPOTrainer: TRL's GRPOTrainer with the CAI additions, on the SL-CAI data and a constitutional reward."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from scripts.saved_adapter import save_sft_adapter
from scripts.synthetic_cai import sl_cai_rows, split_prompts
from trl import GRPOConfig

from hf_cai.modeling import load_tokenizer
from hf_cai.trainers import CAIGRPOConfig, CAIGRPOTrainer, ConstitutionalReward
from hf_cai.trainers.data import DatasetFormatError

pytestmark = pytest.mark.min_versions
SHORT_RUN = {
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "num_generations": 2,
    "max_completion_length": 4,
    "report_to": "none",
    "save_strategy": "no",
    "logging_steps": 1,
    "seed": 3,
}


class RecordingReward(ConstitutionalReward):
    """The reward function as TRL calls it, keeping the prompts it was given."""

    def __init__(self, judge):
        super().__init__(judge)
        self.prompts: list = []

    def __call__(self, prompts, completions, **kwargs):
        self.prompts.extend(prompts)
        return super().__call__(prompts, completions, **kwargs)


def test_the_sl_cai_prompts_reach_the_reward_as_conversations(
    tiny_model_dir, tiny_reward_model_dir, tmp_path, one_torch_thread
):
    """The SL-CAI rows keep the red-team prompt as text beside 'messages'; GRPO is given the conversation's user turn,
    so that the chat template frames it, and the saved adapter continues from the SFT one, without TRL's reference
    copy of it (beta > 0)."""
    rows = sl_cai_rows(split_prompts(2, 0)[0])
    sft = save_sft_adapter(tiny_model_dir, tmp_path / "sft")
    reward = RecordingReward(ConstitutionalReward.from_reward_model(tiny_reward_model_dir).judge)
    trainer = CAIGRPOTrainer(
        model=str(sft),
        reward_funcs=reward,
        args=CAIGRPOConfig(str(tmp_path / "out"), qlora_profile="cpu", load_in_4bit=False, beta=0.1, **SHORT_RUN),
        train_dataset=Dataset.from_list(rows),
        constitution="harmless",
    )
    trainer.train()
    trainer.save_model()
    expected = [row["messages"][:-1] for row in rows]
    assert reward.prompts and all(prompt in expected for prompt in reward.prompts), reward.prompts
    output = tmp_path / "out"
    record = json.loads((output / "cai_training.json").read_text())
    assert record["stage"] == "grpo" and record["trainer"] == "CAIGRPOTrainer"
    assert record["initial_adapter"] == str(sft) and record["method"] == "lora"
    assert record["hyperparameters"]["beta"] == 0.1 and record["hyperparameters"]["num_generations"] == 2
    assert (output / "constitution.yaml").is_file() and (output / "adapter_model.safetensors").is_file()
    assert not (output / "ref").exists(), "TRL's frozen reference adapter is not part of the trained model"
    assert "constitutional-ai" in (output / "README.md").read_text()


def test_a_plain_grpo_config_trains_with_only_the_trainer_class_swapped(tiny_model_dir, tmp_path, one_torch_thread):
    """A user's GRPOTrainer script: plain text prompts stay plain text (TRL's meaning), TRL's own reward function."""

    def shorter_is_better(completions, **kwargs):
        return [-float(len(completion)) for completion in completions]

    trainer = CAIGRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=shorter_is_better,
        args=GRPOConfig(str(tmp_path / "out"), learning_rate=1e-3, bf16=False, **SHORT_RUN),
        train_dataset=Dataset.from_list([{"prompt": "Say hi."}, {"prompt": "Count to three."}]),
        processing_class=load_tokenizer(tiny_model_dir),
    )
    result = trainer.train()
    assert result.global_step == 1
    assert trainer.train_dataset[0]["prompt"] == "Say hi."
    logged = [entry for entry in trainer.state.log_history if "rewards/shorter_is_better/mean" in entry]
    assert len(logged) == 1


def test_a_dataset_without_prompts_is_refused_before_the_model_loads(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"columns \['text'\]; GRPO training expects a 'prompt' column"):
        CAIGRPOTrainer(
            model="never-loaded/model",
            reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
            args=CAIGRPOConfig(str(tmp_path), report_to="none", bf16=False),
            train_dataset=Dataset.from_list([{"text": "a"}]),
        )
