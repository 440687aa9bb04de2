"""GRPO of the SFT adapter, rewarded by the trained preference model."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.prompts import training_prompts
from hf_cai.pipeline.stages.training import (
    policy_for_preference_training,
    train,
    trained_model_result,
    training_args,
)


def run_grpo(context: RunContext, directory: Path) -> StageResult:
    """GRPO of the SFT adapter with the trained preference model as ``ConstitutionalReward``, with the run's QLoRA
    profile filling the settings the recipe's ``grpo`` section does not give, as for the other training stages."""
    from datasets import Dataset

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAIGRPOConfig, CAIGRPOTrainer, ConstitutionalReward

    prompts = [{"prompt": conversation} for conversation in training_prompts(context)]
    # The judge is loaded as the reward stage trained it (NF4 exactly when that stage quantised its base).
    reward = ConstitutionalReward.from_reward_model(str(context.output("reward", "model")))
    trainer = CAIGRPOTrainer(
        model=policy_for_preference_training(context, context.qlora_profile()),
        reward_funcs=[reward],
        args=training_args(CAIGRPOConfig, context, directory, context.recipe.grpo),
        train_dataset=Dataset.from_list(prompts),
        processing_class=load_tokenizer(context.output("sft", "model")),
        constitution=context.constitution,
    )
    return trained_model_result(context, directory, train(trainer, directory))
