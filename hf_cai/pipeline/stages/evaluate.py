"""The evaluation stage: the CAI model against the base model on prompts held out from training."""

from __future__ import annotations

import logging
from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.backends import feedback_backend, tuned_and_base_backends
from hf_cai.pipeline.stages.prompts import held_out_prompts

logger = logging.getLogger(__name__)


def run_eval(context: RunContext, directory: Path) -> StageResult:
    """Base vs CAI win rates judged by the feedback model, evasive refusals, multiple-choice judge accuracy."""
    from hf_cai.evaluation import EvaluationConfig, evaluate_models

    recipe = context.recipe
    held_out = {
        "harmful_prompts": held_out_prompts(context, recipe.prompts, recipe.max_prompts),
        "helpful_prompts": held_out_prompts(context, recipe.helpful_prompts, recipe.sl_data.get("num_helpful_prompts")),
    }
    if not held_out["harmful_prompts"] and "harmful_prompts" not in recipe.eval:
        logger.warning("no red-team prompt is held out from training (max_prompts covers them all): the evaluation "
                       "uses prompts the model was trained on; set max_prompts or eval.harmful_prompts")
    if recipe.helpful_prompts and not held_out["helpful_prompts"] and "helpful_prompts" not in recipe.eval:
        logger.warning("no helpful prompt is held out from training (set sl_data.num_helpful_prompts below the size "
                       "of the helpful set, or eval.helpful_prompts): helpfulness is judged on training prompts")
    settings = {"seed": recipe.seed, **{k: v for k, v in held_out.items() if v}, **recipe.eval}
    config = EvaluationConfig(**settings)
    cai, base = tuned_and_base_backends(context, context.final_model())
    report = evaluate_models(base, cai, feedback_backend(context, base), context.constitution, config)
    report.save(directory)
    metrics = {
        "harmless_win": report.harmlessness_win_rate.value,
        "helpful_win": report.helpfulness_win_rate.value,
        "evasive_base": report.evasive_rate_base.value,
        "evasive_cai": report.evasive_rate_cai.value,
    }
    metrics.update({f"judge_acc[{name}]": p.value for name, p in report.feedback_accuracy.items()})
    return StageResult(
        outputs={"results": context.relative(directory / "results.json"), "chart": context.relative(directory / "chart.png")},
        metrics=metrics,
    )
