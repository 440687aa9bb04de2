"""CAIRewardTrainer: soft Bradley-Terry loss, a QLoRA reward model that separates held-out preferences, a reward
model started from a saved SFT adapter, and the pipeline's reward stage, which starts from the base model."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from scripts.saved_adapter import adapter_weights, parameter_name, save_sft_adapter
from scripts.synthetic_cai import preference_rows, split_prompts

from hf_cai.modeling import load_tokenizer
from hf_cai.trainers import CAIRewardConfig, CAIRewardTrainer

pytestmark = pytest.mark.min_versions


@pytest.fixture(scope="module")
def tokenizer(tiny_reward_model_dir):
    return load_tokenizer(tiny_reward_model_dir)


def test_soft_bradley_terry_loss(tiny_reward_model_dir, tokenizer, tmp_path):
    prompts, _ = split_prompts(4, 0)
    probabilities = [1.0, 0.8, 0.5, 0.1]
    rows = [row | {"chosen_prob": p} for row, p in zip(preference_rows(prompts), probabilities, strict=True)]
    trainer = CAIRewardTrainer(
        model=str(tiny_reward_model_dir),
        args=CAIRewardConfig(
            output_dir=str(tmp_path), per_device_train_batch_size=4, bf16=False, report_to="none", seed=5
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS"),
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    p = batch["chosen_prob"]
    with torch.no_grad():
        scores = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        loss = trainer.compute_loss(trainer.model, dict(batch))
        hard_loss = trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k != "chosen_prob"})
    difference = torch.sub(*scores.chunk(2))
    assert difference.abs().min() > 1e-4, "the random score head should separate the pairs a little"
    logsigmoid = torch.nn.functional.logsigmoid
    expected = (-p * logsigmoid(difference) - (1 - p) * logsigmoid(-difference)).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert hard_loss.item() == pytest.approx(-logsigmoid(difference).mean().item(), abs=1e-6)


def test_qlora_reward_model_separates_held_out_pairs(tiny_reward_model_dir, tokenizer, tmp_path):
    train_prompts, test_prompts = split_prompts(32, 16)
    trainer = CAIRewardTrainer(
        model=str(tiny_reward_model_dir),
        args=CAIRewardConfig(
            output_dir=str(tmp_path),
            qlora_profile="cpu",
            max_steps=8,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(preference_rows(train_prompts, chosen_prob=0.95)),
        processing_class=tokenizer,
        constitution="harmless",
    )
    assert getattr(trainer.model, "is_loaded_in_4bit", False)
    trainer.train()
    metrics = trainer.evaluate(Dataset.from_list(preference_rows(test_prompts)))
    assert metrics["eval_accuracy"] > 0.9
    trainer.save_model()
    record = json.loads((tmp_path / "cai_training.json").read_text())
    assert record["stage"] == "reward" and record["method"] == "qlora" and record["soft_labels"] is True
    assert record["initial_adapter"] is None and record["base_model"] == str(tiny_reward_model_dir)
    assert record["lora"]["task_type"] == "SEQ_CLS" and "score" in record["lora"]["modules_to_save"]
    assert (tmp_path / "constitution.yaml").is_file()


def test_reward_model_starts_from_a_saved_sft_adapter(tiny_model_dir, tmp_path, one_torch_thread):
    sft = save_sft_adapter(tiny_model_dir, tmp_path / "sft")
    trainer = CAIRewardTrainer(
        model=str(sft),
        args=CAIRewardConfig(
            output_dir=str(tmp_path / "reward"),
            qlora_profile="cpu",
            max_steps=3,
            learning_rate=1e-2,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=Dataset.from_list(preference_rows(split_prompts(8, 0)[0], chosen_prob=0.9)),
        processing_class=load_tokenizer(sft),
    )
    model = trainer.model
    assert getattr(model, "is_loaded_in_4bit", False) and model.config.num_labels == 1
    assert model.peft_config["default"].task_type == "SEQ_CLS"
    trainable = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    saved = adapter_weights(sft)
    lora = {parameter_name(key, "default"): value for key, value in saved.items()}
    assert set(lora) < set(trainable), "the SFT LoRA weights are trained further"
    head = [name for name in trainable if "score" in name]
    assert head, "the new score head is trained in full"
    for name, value in lora.items():  # loaded from the SFT adapter (TRL keeps a 4-bit model's adapter in bfloat16)
        assert torch.equal(trainable[name], value.to(trainable[name].dtype)), name
    before = {name: parameter.detach().clone() for name, parameter in trainable.items()}
    assert trainer.train().global_step == 3
    assert all(not torch.equal(before[name], trainable[name]) for name in [*lora, *head])
    trainer.save_model()
    record = json.loads((tmp_path / "reward" / "cai_training.json").read_text())
    assert record["method"] == "qlora" and record["lora"]["task_type"] == "SEQ_CLS"
    assert record["initial_adapter"] == str(sft)


def test_the_pipeline_reward_stage_trains_from_the_base_model(tmp_path, one_torch_thread):
    from datasets import DatasetDict

    from hf_cai.pipeline import RecipeConfig
    from hf_cai.pipeline.context import RunContext
    from hf_cai.pipeline.stages.reward import run_reward

    run_dir = tmp_path / "run"
    recipe = RecipeConfig(run_dir=str(run_dir), model="tiny", tiny_pretrain_steps=0, qlora_profile="cpu",
                          load_in_4bit=False, reward={"max_steps": 1, "per_device_train_batch_size": 2})
    context = RunContext(recipe)
    base = context.base_model_path()
    # The run has an SFT adapter, as a real one does by then: the stage must not start from it.
    save_sft_adapter(base, run_dir / "sft" / "final")
    pairs = DatasetDict({"train": Dataset.from_list(preference_rows(split_prompts(4, 0)[0], chosen_prob=0.9))})
    pairs.save_to_disk(str(run_dir / "pref_data" / "dataset"))
    context.manifest.stage("sft").update(status="done", outputs={"model": "sft/final"})
    context.manifest.stage("pref_data").update(status="done", outputs={"dataset": "pref_data/dataset"})

    result = run_reward(context, run_dir / "reward")
    record = json.loads((run_dir / result.outputs["model"] / "cai_training.json").read_text())
    assert record["stage"] == "reward" and record["base_model"] == base
    assert record["initial_adapter"] is None, "the reward model starts from the base model, not the SFT adapter"
