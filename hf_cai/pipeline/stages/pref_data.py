"""RL-CAI data: pairs of replies from the SFT model, labelled by the feedback model against the constitution, once
the feedback model has shown on calibration questions how well it judges (the builder's judge check, with the
recipe's ``judge_check`` settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError
from hf_cai.pipeline.stages.backends import feedback_backend, policy_and_base_backends
from hf_cai.pipeline.stages.prompts import recipe_prompts


def run_pref_data(context: RunContext, directory: Path) -> StageResult:
    """RL-CAI: measure the feedback model on questions with known answers (stopping here when it falls below
    ``judge_check.min_judge_accuracy``), then label pairs of replies from the SFT model with it."""
    from hf_cai.builders import AIFeedbackBuilder, AIFeedbackConfig, JudgeCheckConfig, JudgeQualityError
    from hf_cai.builders.judge_check import JUDGE_QUALITY_FILE

    config = AIFeedbackConfig(**{"seed": context.recipe.seed, "max_prompts": context.recipe.max_prompts or None,
                                 **context.recipe.pref_data})
    check = JudgeCheckConfig(**context.recipe.judge_check)
    with policy_and_base_backends(context, "sft") as (policy, base):
        builder = AIFeedbackBuilder(policy, feedback_backend(context, base), context.constitution, config,
                                    judge_check=check)
        try:
            dataset = builder.build(recipe_prompts(context), output_dir=directory, overwrite=True)
        except JudgeQualityError as error:
            raise PipelineError(
                f"stage 'pref_data' stopped before labelling: {error} The judge's full report is in "
                f"{directory / JUDGE_QUALITY_FILE}."
            ) from error
    judge_metrics, notes = judge_figures(dataset.judge_quality, check)
    outputs = {} if dataset.judge_quality is None else {"judge_quality": context.relative(directory / JUDGE_QUALITY_FILE)}
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


def judge_figures(report, check) -> tuple[dict[str, Any], list[str]]:
    """The stage's figures and notes on the judge's report (the report in one line and its warnings); a note that
    the check was skipped when ``report`` is ``None``."""
    if report is None:
        note = ("judge check skipped (judge_check.enabled: false): how well the feedback model judges, and so the "
                "quality of the preference labels, is unknown")
        return {}, [note]
    record = report.to_dict()
    low, high = record["accuracy_ci95"]
    metrics = {
        "judge_accuracy": _rounded(record["accuracy"]),
        "judge_accuracy_ci95": [_rounded(low), _rounded(high)],
        "order_consistency": _rounded(record["order_consistency"]),
        "option_mass": _rounded(record["option_mass"]),
    }
    return metrics, [f"judge check: {report}", *report.warnings(min_option_mass=check.min_option_mass)]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
