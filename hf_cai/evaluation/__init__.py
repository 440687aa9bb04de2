"""Evaluation with an AI judge: base vs CAI model, and how good the feedback model is at judging.

* :mod:`~hf_cai.evaluation.comparison`: :func:`evaluate_models`, the CAI model against the base model on held-out
  harmful and benign requests (never the training prompts): refusal rates by phrase and by the judge, the judge's win
  rates, the per-principle audit, the judge's own quality.
* :mod:`~hf_cai.evaluation.results`: :class:`EvaluationReport` and the ``results.json`` schema;
  :mod:`~hf_cai.evaluation.chart` draws ``chart.png``; :mod:`~hf_cai.evaluation.verdict` writes the plain sentences
  (verdict, limitations) from its numbers.
* :mod:`~hf_cai.evaluation.judge_questions`: questions put to the judge about single replies: does it refuse, which
  principles does it violate (the per-principle audit).
* :mod:`~hf_cai.evaluation.judge_quality`: the feedback model's quality as a judge, measured before it labels data
  (calibration accuracy with its interval, order consistency, probability mass on the options, label entropy).
* :mod:`~hf_cai.evaluation.multiple_choice`: the feedback model's accuracy on files in the paper's multiple-choice
  format, the metric the paper used to choose feedback models.
* :mod:`~hf_cai.evaluation.harm_sets`: harmful and benign-looking request sets (built-in, HarmBench, AdvBench, XSTest,
  Do-Not-Answer) and refusal rates on them.
* :mod:`~hf_cai.evaluation.prompt_overlap`: the check that evaluation prompts are not training prompts.
* :mod:`~hf_cai.evaluation.refusal`: refusals told apart by their wording (a phrase classifier: a lower bound).
* :mod:`~hf_cai.evaluation.stats`: proportions with Wilson 95% intervals.
"""

from hf_cai.evaluation.comparison import (
    EvalPrompts,
    EvaluationConfig,
    evaluate_models,
    pairwise_win_rate,
    select_prompts,
)
from hf_cai.evaluation.harm_sets import (
    EVAL_SET_KINDS,
    EvalPrompt,
    EvalSet,
    builtin_eval_set,
    load_eval_set,
    refusal_rates,
)
from hf_cai.evaluation.judge_quality import (
    JudgeCheckConfig,
    JudgeQualityError,
    JudgeQualityReport,
    builtin_calibration_items,
    check_judge_quality,
    measure_judge_quality,
    swap_options,
)
from hf_cai.evaluation.judge_questions import audit_summary_lines, judge_refusals, judged_rate, principle_audit
from hf_cai.evaluation.multiple_choice import (
    MultipleChoiceItem,
    OptionScorer,
    backend_option_scorer,
    load_multiple_choice,
    multiple_choice_accuracy,
)
from hf_cai.evaluation.prompt_overlap import PromptOverlapError, check_disjoint, find_overlap, normalize_prompt
from hf_cai.evaluation.refusal import is_evasive_refusal, is_refusal
from hf_cai.evaluation.results import RESULTS_FORMAT, EvaluationReport
from hf_cai.evaluation.stats import Proportion, wilson_interval
from hf_cai.evaluation.verdict import judge_summary_line, limitation_lines, verdict_lines

__all__ = [
    "JudgeCheckConfig",
    "EVAL_SET_KINDS",
    "EvalPrompt",
    "EvalPrompts",
    "EvalSet",
    "EvaluationConfig",
    "EvaluationReport",
    "JudgeQualityError",
    "JudgeQualityReport",
    "MultipleChoiceItem",
    "OptionScorer",
    "PromptOverlapError",
    "Proportion",
    "RESULTS_FORMAT",
    "audit_summary_lines",
    "backend_option_scorer",
    "builtin_calibration_items",
    "builtin_eval_set",
    "check_disjoint",
    "check_judge_quality",
    "evaluate_models",
    "find_overlap",
    "is_evasive_refusal",
    "is_refusal",
    "judge_refusals",
    "judge_summary_line",
    "judged_rate",
    "limitation_lines",
    "load_eval_set",
    "load_multiple_choice",
    "measure_judge_quality",
    "multiple_choice_accuracy",
    "normalize_prompt",
    "pairwise_win_rate",
    "principle_audit",
    "refusal_rates",
    "select_prompts",
    "swap_options",
    "verdict_lines",
    "wilson_interval",
]
