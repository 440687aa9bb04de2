"""Evaluation with an AI judge: base vs CAI model, and how good the feedback model is at judging.

* :mod:`~hf_cai.evaluation.comparison`: :func:`evaluate_models`, the CAI model against the base model on held-out
  harmful and benign requests (never the training prompts): refusal rates by phrase and by the judge, the judge's win
  rates, the per-principle audit, the judge's own quality.
* :mod:`~hf_cai.evaluation.results`: :class:`EvaluationReport` and the ``results.json`` schema;
  :mod:`~hf_cai.evaluation.chart` draws ``chart.png``; :mod:`~hf_cai.evaluation.verdict` writes the plain sentences
  (verdict, limitations) from its numbers.
* :mod:`~hf_cai.evaluation.judge_questions`: questions put to the judge about single replies: does it refuse, which
  principles does it violate (the per-principle audit).
* :mod:`~hf_cai.evaluation.harm_sets`: harmful and benign-looking request sets (built-in, HarmBench, AdvBench, XSTest,
  Do-Not-Answer) and refusal rates on them.
* :mod:`~hf_cai.evaluation.benchmarks`: standard benchmarks (lm-evaluation-harness tasks) for the base and the CAI
  model, in one paired table with standard errors (the optional ``eval`` extra).
* :mod:`~hf_cai.evaluation.prompt_overlap`: the check that evaluation prompts are not training prompts.
* :mod:`~hf_cai.evaluation.refusal`: refusals told apart by their wording (a phrase classifier: an estimate, its precision and recall measured on labelled replies).
* :mod:`~hf_cai.evaluation.progress`: the evaluation's one progress bar, naming the pass that runs.

The judge's own quality (:mod:`hf_cai.builders.judge_quality`: calibration accuracy with its interval, order
consistency, probability mass on the options, label entropy), the paper's multiple-choice files
(:mod:`hf_cai.builders.multiple_choice`) and proportions with Wilson 95% intervals (:mod:`hf_cai.stats`) are exported
here too; they live above this room because the preference builder measures its judge before labelling.

Names load on first use, so that importing one submodule (e.g. ``card_section`` from the model card) does not pull
the builders and backends in through :mod:`~hf_cai.evaluation.comparison`.
"""

from __future__ import annotations

from hf_cai._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BenchmarkConfig": "hf_cai.evaluation.benchmarks",
    "JudgeCheckConfig": "hf_cai.builders.judge_check",
    "EVAL_SET_KINDS": "hf_cai.evaluation.harm_sets",
    "EvalPrompt": "hf_cai.evaluation.harm_sets",
    "EvalPrompts": "hf_cai.evaluation.prompt_selection",
    "EvalSet": "hf_cai.evaluation.harm_sets",
    "EvaluationConfig": "hf_cai.evaluation.comparison",
    "EvaluationReport": "hf_cai.evaluation.results",
    "JudgeQualityError": "hf_cai.builders.judge_quality",
    "JudgeQualityReport": "hf_cai.builders.judge_quality",
    "MultipleChoiceItem": "hf_cai.builders.multiple_choice",
    "MultipleChoiceScores": "hf_cai.builders.multiple_choice",
    "OptionScorer": "hf_cai.builders.multiple_choice",
    "PromptOverlapError": "hf_cai.evaluation.prompt_overlap",
    "Proportion": "hf_cai.stats",
    "RESULTS_FORMAT": "hf_cai.evaluation.results",
    "audit_summary_lines": "hf_cai.evaluation.judge_questions",
    "backend_option_scorer": "hf_cai.builders.multiple_choice",
    "benchmark_lines": "hf_cai.evaluation.benchmarks",
    "builtin_calibration_items": "hf_cai.builders.judge_quality",
    "builtin_eval_set": "hf_cai.evaluation.harm_sets",
    "check_disjoint": "hf_cai.evaluation.prompt_overlap",
    "check_judge_quality": "hf_cai.builders.judge_quality",
    "evaluate_models": "hf_cai.evaluation.comparison",
    "find_overlap": "hf_cai.evaluation.prompt_overlap",
    "is_evasive_refusal": "hf_cai.evaluation.refusal",
    "is_refusal": "hf_cai.evaluation.refusal",
    "judge_refusals": "hf_cai.evaluation.judge_questions",
    "judge_summary_line": "hf_cai.evaluation.verdict",
    "judged_rate": "hf_cai.evaluation.judge_questions",
    "limitation_lines": "hf_cai.evaluation.verdict",
    "load_eval_set": "hf_cai.evaluation.harm_sets",
    "load_multiple_choice": "hf_cai.builders.multiple_choice",
    "measure_judge_quality": "hf_cai.builders.judge_quality",
    "multiple_choice_accuracy": "hf_cai.builders.multiple_choice",
    "multiple_choice_scores": "hf_cai.builders.multiple_choice",
    "normalize_prompt": "hf_cai.evaluation.prompt_overlap",
    "pairwise_win_rate": "hf_cai.evaluation.comparison",
    "principle_audit": "hf_cai.evaluation.judge_questions",
    "refusal_rates": "hf_cai.evaluation.harm_sets",
    "run_benchmarks": "hf_cai.evaluation.benchmarks",
    "select_prompts": "hf_cai.evaluation.prompt_selection",
    "swap_options": "hf_cai.builders.multiple_choice",
    "verdict_lines": "hf_cai.evaluation.verdict",
    "wilson_interval": "hf_cai.stats",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
