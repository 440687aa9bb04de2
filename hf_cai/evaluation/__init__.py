"""Evaluation with an AI judge: base vs CAI model, and how good the feedback model is at judging.

* :mod:`~hf_cai.evaluation.comparison`: pairwise win rates of the CAI model over the base model on held-out prompts,
  judged against the constitution in both option orders, and :func:`evaluate_models`, which writes ``results.json``.
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

from hf_cai.evaluation.comparison import EvaluationConfig, EvaluationReport, evaluate_models, pairwise_win_rate
from hf_cai.evaluation.harm_sets import (
    EVAL_SET_KINDS,
    EvalPrompt,
    EvalSet,
    builtin_eval_set,
    load_eval_set,
    refusal_rates,
)
from hf_cai.evaluation.judge_quality import (
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
from hf_cai.evaluation.stats import Proportion, wilson_interval

__all__ = [
    "EVAL_SET_KINDS",
    "EvalPrompt",
    "EvalSet",
    "EvaluationConfig",
    "EvaluationReport",
    "JudgeQualityError",
    "JudgeQualityReport",
    "MultipleChoiceItem",
    "OptionScorer",
    "PromptOverlapError",
    "Proportion",
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
    "judged_rate",
    "load_eval_set",
    "load_multiple_choice",
    "measure_judge_quality",
    "multiple_choice_accuracy",
    "normalize_prompt",
    "pairwise_win_rate",
    "principle_audit",
    "refusal_rates",
    "swap_options",
    "wilson_interval",
]
