"""The preference (reward) model that scores replies for GRPO, trained on the AI-labelled pairs.

It starts from the base model, not from the SFT adapter: the paper's preference models were fine-tuned from the
pretrained language model, and the SL-CAI model only generated the pairs (as the SFT policy does here, in
``pref_data``). Its ``cai_training.json`` says so: ``initial_adapter`` is null.
"""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.training import preference_splits, train, trained_model_result, training_args


def run_reward(context: RunContext, directory: Path) -> StageResult:
    """A preference (reward) model on the AI-labelled pairs, with the soft Bradley–Terry target, trained from the
    base model with a new adapter and score head."""
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
