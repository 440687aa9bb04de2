"""The evaluation stage: the CAI model against the base model on evaluation prompts the run did not train on.

The prompts come from the recipe's ``eval.eval_sets`` (the built-in set by default) or ``eval.harmful_prompts`` /
``eval.helpful_prompts``; they are checked against the prompts the run trained on (its red-team prompts, and the
helpful prompts mixed into SL-CAI), and an overlap stops the stage unless ``eval.allow_train_overlap: true``. The
judge's calibration report comes from the ``pref_data`` stage (``judge_quality.json``) when it wrote one, so the
same judge is not measured twice.

With ``eval.benchmarks`` (lm-evaluation-harness tasks), both models then run them too, after the judged comparison
has released its models: the base model and the run's adapter on it, loaded as the run loaded them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.backends import feedback_backend, policy_and_base_backends
from hf_cai.pipeline.stages.prompts import training_prompts

logger = logging.getLogger(__name__)


def run_eval(context: RunContext, directory: Path) -> StageResult:
    """Refusal rates (phrase classifier and judge; the safety classifier's first when ``eval.classifier`` is set, with
    its harmful-reply rates) on harmful and benign requests, the judge's win rates and
    principle audit, the judge's quality, the benchmarks when asked for; ``results.json`` and ``chart.png``, and notes
    on what they support."""
    from hf_cai.evaluation import EvaluationConfig, evaluate_models, select_prompts
    from hf_cai.evaluation.benchmarks import benchmark_lines, run_benchmarks, task_manager

    recipe = context.recipe
    config = EvaluationConfig(**{"seed": recipe.seed, **recipe.eval})
    # Checked before any model is loaded: an overlap stops the stage at once.
    prompts = select_prompts(config, trained_prompts(context))
    if config.benchmarks.enabled:
        task_manager(config.benchmarks)  # lm-eval is installed and knows the tasks
    final = context.final_model()
    with policy_and_base_backends(context, context.final_training_stage()) as (cai, base):
        report = evaluate_models(
            base,
            cai,
            feedback_backend(context, base),
            context.constitution,
            config,
            prompts=prompts,
            judge_quality=pref_data_judge_quality(context),
            models=model_ids(context, final),
            evaluated_artifact=evaluated_artifact(context, final),
        )
    del cai, base  # the benchmarks load their own copies
    if config.benchmarks.enabled:
        report.benchmarks = run_benchmarks(context.base_model_path(), str(final), config.benchmarks,
                                           load_in_4bit=recipe.load_in_4bit, seed=config.seed)
    report.save(directory)
    results = report.to_dict()
    refusal = results["refusal"]
    metrics: dict[str, Any] = {
        f"refused_{group}_{model}": refusal[group][model]["rate"]
        for group in ("harmful", "benign")
        for model in ("base", "cai")
        if refusal[group].get(model) and refusal[group]["n"]
    }
    metrics.update({"n_harmful": refusal["harmful"]["n"], "n_benign": refusal["benign"]["n"]})
    harmful_replies = refusal["harmful"].get("harmful_response") or {}  # by eval.classifier, when set
    metrics.update({f"harmful_replies_{model}": row["rate"] for model, row in harmful_replies.items()})
    metrics["harmless_win"] = report.harmlessness_win_rate.value
    metrics["helpful_win"] = report.helpfulness_win_rate.value
    quality = results.get("judge_quality") or {}
    if quality.get("accuracy") is not None:
        metrics["judge_acc"] = quality["accuracy"]
    metrics.update({f"judge_acc[{name}]": p.value for name, p in report.feedback_accuracy.items()})
    return StageResult(
        outputs={"results": context.relative(directory / "results.json"), "chart": context.relative(directory / "chart.png")},
        metrics=metrics,
        notes=[*results["notes"], *benchmark_lines(report.benchmarks)],
    )


def trained_prompts(context: RunContext) -> list[Any]:
    """Every prompt the run trained on: its red-team prompts (SL-CAI, preference pairs, GRPO) and the helpful prompts
    mixed into the SL-CAI data."""
    from hf_cai.builders import load_prompts

    recipe = context.recipe
    prompts = list(training_prompts(context))
    helpful = recipe.sl_data.get("helpful_prompts", recipe.helpful_prompts)
    if helpful is not None:
        prompts += load_prompts(helpful)[: recipe.sl_data.get("num_helpful_prompts")]
    return prompts


def pref_data_judge_quality(context: RunContext) -> dict[str, Any] | None:
    """The judge's calibration report the ``pref_data`` stage wrote (its ``judge_quality`` output, or
    ``judge_quality.json`` in its folder), marked with where it came from; ``None`` when it wrote none."""
    from hf_cai.builders.judge_check import JUDGE_QUALITY_FILE

    record = context.manifest.stage("pref_data")
    if record.get("status") != "done":
        return None
    relative = record.get("outputs", {}).get("judge_quality")
    path = context.run_dir / relative if relative else context.stage_dir("pref_data") / JUDGE_QUALITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("%s could not be read (%s): measuring the judge again", path, error)
        return None
    return {**data, "source": "pref_data stage"} if isinstance(data, dict) else None


def model_ids(context: RunContext, final: Path) -> dict[str, Any]:
    """Readable ids of the compared models and the judge, for ``results.json``, and ``base_weights``: the GGUF file
    the local base model's weights came from (:func:`~hf_cai.gguf.weights_source`), ``None`` for a model loaded as
    it is."""
    from hf_cai.gguf import hub_id_of, weights_source

    recipe = context.recipe
    base = context.base_model_hub_id()
    judge = (hub_id_of(recipe.feedback_model) or recipe.feedback_model) if recipe.feedback_model else base
    cai = recipe.publish.get("repo_id") or str(final)
    return {"base": base, "cai": cai, "judge": judge, "judge_is_base": not recipe.feedback_model,
            "base_weights": weights_source(context.base_model_path())}


def evaluated_artifact(context: RunContext, final: Path) -> str:
    """What generated the CAI model's replies: the LoRA adapter on the (possibly 4-bit) base, naming the GGUF file
    when the base weights are a de-quantised one's, or a full checkpoint."""
    from hf_cai.gguf import weights_source

    recipe = context.recipe
    base = context.base_model_hub_id()
    source = weights_source(context.base_model_path())
    if source is not None:
        base = (f"the weights of {source['file']} ({source['quantization']} GGUF file of {base}, sha256 "
                f"{source['sha256']}) de-quantised to {source['dequantized_to']}")
    if (final / "adapter_config.json").is_file():
        artifact = f"LoRA adapter applied to {base}"
        if recipe.load_in_4bit:
            artifact += " (base weights loaded in 4-bit NF4)"
    else:
        artifact = f"full checkpoint in {final}"
    if recipe.endpoint:
        artifact += "; the base model's replies came from the recipe's endpoint"
    if recipe.policy_url():
        artifact += "; the CAI model's replies came from the policy endpoint, serving the adapter next to its base"
    return artifact
