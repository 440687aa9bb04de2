"""GRPO of the SFT adapter, rewarded by the trained preference model."""

from __future__ import annotations

import json
from pathlib import Path

from hf_cai.artifact_files import TRAINING_RECORD
from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.prompts import training_prompts
from hf_cai.pipeline.stages.training import (
    FINAL,
    policy_for_preference_training,
    train,
    trained_model_result,
    training_args,
)


def run_grpo(context: RunContext, directory: Path) -> StageResult:
    """GRPO of the SFT adapter with the trained preference model as ``ConstitutionalReward``, with the run's QLoRA
    profile filling the settings the recipe's ``grpo`` section does not give, as for the other training stages."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers import CAIGRPOConfig, ConstitutionalReward
    from hf_cai.trainers.artifacts import training_record, write_training_artifacts

    prompts = [{"prompt": conversation} for conversation in training_prompts(context)]
    reward_dir = context.output("reward", "model")
    trained = json.loads((reward_dir / TRAINING_RECORD).read_text(encoding="utf-8"))
    # The judge is loaded as the reward stage trained it: NF4 exactly when that stage quantised its base.
    reward = ConstitutionalReward.from_reward_model(
        str(reward_dir),
        load_in_4bit=trained.get("quantization") is not None,
        max_length=trained.get("hyperparameters", {}).get("max_length") or 1024,
    )
    trainer = GRPOTrainer(
        model=policy_for_preference_training(context, context.qlora_profile()),
        reward_funcs=[reward],
        args=training_args(CAIGRPOConfig, context, directory, context.recipe.grpo),
        train_dataset=Dataset.from_list(prompts),
        processing_class=load_tokenizer(context.output("sft", "model")),
    )
    metrics = train(trainer, directory)
    record = training_record(
        trainer,
        stage="grpo",
        constitution=context.constitution,
        hyperparameters=("beta", "num_generations", "max_completion_length", "loss_type", "temperature"),
    )
    write_training_artifacts(directory / FINAL, context.constitution, record)
    return trained_model_result(context, directory, metrics)
