"""What the training stages share: their datasets, their training arguments, the SFT policy they continue, and
training that resumes from the last complete checkpoint and saves the model to ``final/``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult

logger = logging.getLogger(__name__)

FINAL = "final"
"""Folder of a training stage's trained model, beside its checkpoints."""


def load_dataset(path: Path):
    """A dataset an earlier stage saved to ``path``."""
    from datasets import load_from_disk

    return load_from_disk(str(path))


def nonempty_split(dataset, name: str):
    """The split ``name`` of ``dataset``, or ``None`` when it has no such split or the split is empty."""
    # A lone Dataset has no splits (and `in` on it would scan its rows); a DatasetDict is a dict.
    return dataset[name] if isinstance(dataset, dict) and name in dataset and len(dataset[name]) else None


def preference_splits(context: RunContext):
    """The train and evaluation splits of the pairs the ``pref_data`` stage labelled (a lone dataset trains, with no
    evaluation)."""
    data = load_dataset(context.output("pref_data", "dataset"))
    train_split = data["train"] if isinstance(data, dict) and "train" in data else data
    return train_split, nonempty_split(data, "test")


def training_args(config_class, context: RunContext, directory: Path, section: dict[str, Any], **defaults: Any):
    """``config_class`` for a stage training into ``directory``: the run's seed, precision and QLoRA profile, then
    the stage's ``defaults``, then the recipe's ``section`` of the stage."""
    settings = {
        "output_dir": str(directory),
        "qlora_profile": context.qlora_profile(),
        "seed": context.recipe.seed,
        "load_in_4bit": context.recipe.load_in_4bit,
        "report_to": "none",
        "save_strategy": "steps",
        "logging_steps": 1,
        **defaults,
        **section,
    }
    return config_class(**settings)


def policy_for_preference_training(context: RunContext, profile: str):
    """The SFT model as a trainable adapter on the base (4-bit where the recipe asks); TRL keeps a frozen copy as the
    DPO reference."""
    from hf_cai.trainers import load_model_for_training

    adapter = str(context.output("sft", "model"))
    return load_model_for_training(adapter, profile, load_in_4bit=context.recipe.load_in_4bit)


def train(trainer, directory: Path) -> dict[str, Any]:
    """Train (from the last complete checkpoint in ``directory`` if any), save ``final/``, and return the figures."""
    checkpoint = _resume_checkpoint(directory) if directory.is_dir() else None
    if checkpoint:
        logger.info("resuming training from %s", checkpoint)
    metrics: dict[str, Any] = {}
    if trainer.eval_dataset is not None and checkpoint is None:
        metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    output = trainer.train(resume_from_checkpoint=checkpoint)
    metrics["train_loss"] = output.training_loss
    metrics["steps"] = output.global_step
    if checkpoint:
        metrics["resumed_from"] = Path(checkpoint).name
    if trainer.eval_dataset is not None:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
    trainer.save_model(str(directory / FINAL))
    return metrics


def trained_model_result(context: RunContext, directory: Path, metrics: dict[str, Any]) -> StageResult:
    """A training stage's result: the model it saved to ``final/`` and its figures."""
    return StageResult(outputs={"model": context.relative(directory / FINAL)}, metrics=metrics)


def _resume_checkpoint(directory: Path) -> str | None:
    """The newest complete ``checkpoint-N`` to resume from, or ``None`` to start from the beginning.

    A checkpoint is complete once its ``trainer_state.json`` is written (the Trainer writes it last); one that a kill
    or a full disk cut short is deleted, with a warning. A checkpoint at the last step is passed over for the one
    before it: resumed from there, the Trainer would run one step past the end.
    """
    checkpoints = sorted(
        (p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for checkpoint in checkpoints:
        try:
            state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("deleting %s: its saving was interrupted (no complete trainer_state.json)", checkpoint)
            shutil.rmtree(checkpoint)
            continue
        if state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]:
            logger.info("%s holds the last step; resuming from the checkpoint before it", checkpoint.name)
            continue
        return str(checkpoint)
    return None
