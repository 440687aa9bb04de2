"""RL-CAI data: pairs of replies from the SFT model, labelled by the feedback model against the constitution, once
the feedback model has shown on calibration questions how well it judges (the recipe's ``judge_check``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError
from hf_cai.pipeline.stages.backends import feedback_backend, tuned_and_base_backends
from hf_cai.pipeline.stages.prompts import training_prompts

logger = logging.getLogger(__name__)

JUDGE_QUALITY_FILE = "judge_quality.json"
"""The judge check's report in the stage folder: ``JudgeQualityReport.to_dict()``, its warnings computed with the
recipe's ``judge_check.min_option_mass``."""


def run_pref_data(context: RunContext, directory: Path) -> StageResult:
    """RL-CAI: measure the feedback model on questions with known answers (stopping here when it falls below
    ``judge_check.min_judge_accuracy``), then label pairs of replies from the SFT model with it."""
    from hf_cai.builders import AIFeedbackBuilder, AIFeedbackConfig

    policy, base = tuned_and_base_backends(context, context.output("sft", "model"))
    judge = feedback_backend(context, base)
    config = AIFeedbackConfig(**{"seed": context.recipe.seed, **context.recipe.pref_data})
    outputs, judge_metrics, notes = check_judge(context, directory, judge)
    builder = AIFeedbackBuilder(policy, judge, context.constitution, config)
    dataset = builder.build(training_prompts(context), output_dir=directory, overwrite=True)
    splits = dataset.values() if hasattr(dataset, "values") else [dataset]
    probabilities = [p for split in splits for p in split["chosen_prob"]]
    return StageResult(
        outputs={"dataset": context.relative(directory / "dataset"), **outputs},
        metrics={
            "pairs": len(probabilities),
            "mean_chosen_prob": sum(probabilities) / len(probabilities) if probabilities else float("nan"),
            **judge_metrics,
        },
        notes=notes,
    )


def check_judge(context: RunContext, directory: Path, judge) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """Measure ``judge`` (the backend that will label) as the recipe's ``judge_check`` asks, write
    :data:`JUDGE_QUALITY_FILE`, and return the stage's outputs, figures and notes from it.

    Raises:
        PipelineError: ``judge_check.min_judge_accuracy`` is set and the judge's accuracy is below it; nothing has
            been labelled yet, and the report is written.
    """
    from hf_cai.builders.sharding import atomic_write_text
    from hf_cai.evaluation.judge_quality import JudgeCheckConfig, JudgeQualityError

    check = JudgeCheckConfig(**context.recipe.judge_check)
    if not check.enabled:
        note = ("judge check skipped (judge_check.enabled: false): how well the feedback model judges, and so the "
                "quality of the preference labels, is unknown")
        logger.warning("%s", note)
        return {}, {}, [note]
    report = check.measure(judge, seed=context.recipe.seed)
    record = report.to_dict()
    record["warnings"] = report.warnings(min_option_mass=check.min_option_mass)
    path = directory / JUDGE_QUALITY_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    try:
        warnings = check.check(report)  # each warning is logged
    except JudgeQualityError as error:
        raise PipelineError(
            f"stage 'pref_data' stopped before labelling: {error} The judge's full report is in {path}."
        ) from error
    low, high = record["accuracy_ci95"]
    metrics = {
        "judge_accuracy": _rounded(record["accuracy"]),
        "judge_accuracy_ci95": [_rounded(low), _rounded(high)],
        "order_consistency": _rounded(record["order_consistency"]),
        "option_mass": _rounded(record["option_mass"]),
    }
    return {"judge_quality": context.relative(path)}, metrics, [f"judge check: {report}", *warnings]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
