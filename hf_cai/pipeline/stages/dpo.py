"""Direct preference optimisation of the SFT adapter on the AI-labelled pairs."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.training import (
    policy_for_preference_training,
    preference_splits,
    train,
    trained_model_result,
    training_args,
)


def run_dpo(context: RunContext, directory: Path) -> StageResult:
    """DPO on the AI-labelled pairs, with soft labels, continuing the SFT adapter."""
    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAIDPOConfig, CAIDPOTrainer

    train_split, eval_split = preference_splits(context)
    profile = context.qlora_profile()
    args = training_args(CAIDPOConfig, context, directory, context.recipe.dpo)
    trainer = CAIDPOTrainer(
        model=policy_for_preference_training(context, profile),
        args=args,
        train_dataset=train_split,
        eval_dataset=eval_split,
        processing_class=load_tokenizer(context.output("sft", "model")),
        constitution=context.constitution,
    )
    return trained_model_result(context, directory, train(trainer, directory))
