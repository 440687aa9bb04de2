"""Supervised fine-tuning of the base model on the final revisions of the SL-CAI data that passed the quality gates.

The trainer leaves out the rows the gates flagged (their ``quality_flags`` column) and stops when too few are left;
this stage gives it the thresholds ``sl_data`` recorded in its ``quality.json`` (the recipe's ``sl_quality`` as that
stage ran), so the rows trained on always follow from the ``sl_data`` output this stage's fingerprint holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError
from hf_cai.pipeline.stages.training import load_dataset, nonempty_split, train, trained_model_result, training_args


def run_sft(context: RunContext, directory: Path) -> StageResult:
    """QLoRA SFT of the base model on the final revisions (assistant-only loss), without the rows the quality gates
    flagged (unless ``sl_quality.exclude_flagged`` is false); stops before training when fewer than
    ``sl_quality.min_kept_share`` of the rows are left."""
    from hf_cai.builders.quality_gates import QualityGateError
    from hf_cai.trainers import CAISFTConfig, CAISFTTrainer

    data = load_dataset(context.output("sl_data", "dataset"))
    train_split, eval_split = data["train_sft"], nonempty_split(data, "test_sft")
    gates = recorded_gates(context)
    args = training_args(
        CAISFTConfig,
        context,
        directory,
        context.recipe.sft,
        assistant_only_loss=True,
        exclude_flagged_rows=gates.exclude_flagged,
        min_kept_share=gates.min_kept_share,
    )
    try:
        trainer = CAISFTTrainer(
            model=context.base_model_path(),
            args=args,
            train_dataset=train_split,
            eval_dataset=eval_split,
            constitution=context.constitution,
        )
    except QualityGateError as error:
        raise PipelineError(
            f"stage 'sft' stopped before training: {error} The SL-CAI data and the gates' record are kept in "
            f"{context.output('sl_data', 'dataset').parent}: a rerun with other sl_quality settings checks them again "
            "without generating them again."
        ) from error
    metrics, note = kept_rows(trainer.cai_quality, len(train_split))
    result = trained_model_result(context, directory, {**metrics, **train(trainer, directory)})
    result.notes = [note]
    return result


def recorded_gates(context: RunContext):
    """The quality gates' thresholds ``sl_data`` recorded for ``train_sft`` in its ``quality.json``; the recipe's
    ``sl_quality`` for data made before the gates existed (which has no flags to apply them to)."""
    from hf_cai.builders.quality_gates import QualityGateConfig

    if context.manifest.stage("sl_data").get("outputs", {}).get("quality") is None:
        return QualityGateConfig(**context.recipe.sl_quality)
    record = json.loads(context.output("sl_data", "quality").read_text(encoding="utf-8"))["splits"]["train_sft"]
    return QualityGateConfig(**record["config"])


def kept_rows(quality, total: int) -> tuple[dict[str, Any], str]:
    """The figures and the note on the rows the trainer kept (``quality``: its ``cai_quality``)."""
    if quality is None:
        note = (f"trained on all {total} train_sft rows, unchecked: the SL-CAI data was made before the quality gates "
                "existed (run again with --from sl_data to check it)")
        return {"train_rows": total, "train_rows_total": total}, note
    if not quality.flagged:
        note = f"trained on all {total} train_sft rows: the quality gates flagged none"
    elif quality.config.exclude_flagged:
        note = (f"trained on {quality.kept} of {total} train_sft rows ({quality.kept_share:.0%}): the quality gates "
                f"left out {quality.flagged} flagged rows (see sl_data)")
    else:
        note = (f"trained on all {total} train_sft rows, {quality.flagged} of them flagged by the quality gates "
                "(sl_quality.exclude_flagged: false)")
    return {"train_rows": quality.kept, "train_rows_total": total}, note
