"""Supervised fine-tuning of the base model on the final revisions of the SL-CAI data."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.training import load_dataset, nonempty_split, train, trained_model_result, training_args


def run_sft(context: RunContext, directory: Path) -> StageResult:
    """QLoRA SFT of the base model on the final revisions (assistant-only loss)."""
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    data = load_dataset(context.output("sl_data", "dataset"))
    args = training_args(CAISFTConfig, context, directory, context.recipe.sft, assistant_only_loss=True)
    trainer = CAISFTTrainer(
        model=context.base_model_path(),
        args=args,
        train_dataset=data["train_sft"],
        eval_dataset=nonempty_split(data, "test_sft"),
        constitution=context.constitution,
    )
    return trained_model_result(context, directory, train(trainer, directory))
