"""Supervised fine-tuning of the base model on the final revisions of the SL-CAI data that passed the quality gates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_cai.builders.quality_gates import QUALITY_COLUMN
from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError
from hf_cai.pipeline.stages.training import load_dataset, nonempty_split, train, trained_model_result, training_args


def run_sft(context: RunContext, directory: Path) -> StageResult:
    """QLoRA SFT of the base model on the final revisions (assistant-only loss), without the rows the quality gates
    flagged (unless ``sl_quality.exclude_flagged`` is false); stops before training when fewer than
    ``sl_quality.min_kept_share`` of the rows are left."""
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    data = load_dataset(context.output("sl_data", "dataset"))
    train_split, eval_split, metrics, notes = gated_splits(context, data)
    args = training_args(CAISFTConfig, context, directory, context.recipe.sft, assistant_only_loss=True)
    trainer = CAISFTTrainer(
        model=context.base_model_path(),
        args=args,
        train_dataset=train_split,
        eval_dataset=eval_split,
        constitution=context.constitution,
    )
    result = trained_model_result(context, directory, {**metrics, **train(trainer, directory)})
    result.notes = notes
    return result


def gated_splits(context: RunContext, data) -> tuple[Any, Any, dict[str, Any], list[str]]:
    """The train and evaluation splits SFT uses, the figures and the notes on what the quality gates left out.

    The gates' thresholds are the ones ``sl_data`` recorded in its ``quality.json`` (the recipe's ``sl_quality`` as
    that stage ran), so the rows trained on always follow from the ``sl_data`` output this stage's fingerprint holds.
    Data from a run made before the gates existed (no ``quality`` output) is trained on whole, as it was then.
    """
    from hf_cai.builders.quality_gates import (
        QualityGateConfig,
        QualityGateError,
        QualityGateResult,
        filter_for_training,
    )

    train_split, eval_split = data["train_sft"], nonempty_split(data, "test_sft")
    total = len(train_split)
    quality_output = context.manifest.stage("sl_data").get("outputs", {}).get("quality")
    if quality_output is None or QUALITY_COLUMN not in train_split.column_names:
        note = (f"trained on all {total} train_sft rows, unchecked: the SL-CAI data was made before the quality gates "
                "existed (run again with --from sl_data to check it)")
        return train_split, eval_split, {"train_rows": total, "train_rows_total": total}, [note]

    record = json.loads(context.output("sl_data", "quality").read_text(encoding="utf-8"))["splits"]["train_sft"]
    config = QualityGateConfig(**record["config"])
    examples = {flag: (e["where"], e["text"]) for flag, e in record.get("examples", {}).items()}
    result = QualityGateResult(flags=list(train_split[QUALITY_COLUMN]), config=config, examples=examples)
    try:
        kept = filter_for_training(train_split, result)
    except QualityGateError as error:
        raise PipelineError(
            f"stage 'sft' stopped before training: {error} The SL-CAI data and the gates' record are kept in "
            f"{context.output('sl_data', 'dataset').parent}: a rerun with other sl_quality settings checks them again "
            "without generating them again."
        ) from error
    if not len(kept):
        raise PipelineError(
            f"stage 'sft' stopped before training: the quality gates left none of the {total} train_sft rows "
            "(sl_quality.min_kept_share is 0, so nothing else stopped the run). Generate the SL-CAI data with a larger "
            "or stronger model, or set sl_quality.exclude_flagged: false to train on the flagged rows."
        )
    if eval_split is not None and config.exclude_flagged:
        passed = [i for i, flags in enumerate(eval_split[QUALITY_COLUMN]) if not flags]
        eval_split = eval_split.select(passed) if passed else None
    if not result.flagged:
        note = f"trained on all {total} train_sft rows: the quality gates flagged none"
    elif config.exclude_flagged:
        note = (f"trained on {len(kept)} of {total} train_sft rows ({result.kept_share:.0%}): the quality gates left "
                f"out {result.flagged} flagged rows (see sl_data)")
    else:
        note = (f"trained on all {total} train_sft rows, {result.flagged} of them flagged by the quality gates "
                "(sl_quality.exclude_flagged: false)")
    return kept, eval_split, {"train_rows": len(kept), "train_rows_total": total}, [note]
