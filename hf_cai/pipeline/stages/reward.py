"""The preference (reward) model that scores replies for GRPO, trained on the AI-labelled pairs."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.training import preference_splits, train, trained_model_result, training_args


def run_reward(context: RunContext, directory: Path) -> StageResult:
    """A preference (reward) model on the AI-labelled pairs, with the soft Bradley–Terry target."""
    from hf_cai.trainers import CAIRewardConfig, CAIRewardTrainer

    train_split, eval_split = preference_splits(context)
    args = training_args(CAIRewardConfig, context, directory, context.recipe.reward)
    trainer = CAIRewardTrainer(
        model=context.base_model_path(),
        args=args,
        train_dataset=train_split,
        eval_dataset=eval_split,
        constitution=context.constitution,
    )
    return trained_model_result(context, directory, train(trainer, directory))
