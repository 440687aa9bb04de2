"""Dataset builders: SL-CAI critique→revision data (with its quality gates) and RL-CAI AI-feedback preference data
(with its judge check), resumable in shards."""

from hf_cai.builders.ai_feedback import AIFeedbackBuilder, AIFeedbackConfig, PreferenceScorer
from hf_cai.builders.critique_revision import CritiqueRevisionBuilder, CritiqueRevisionConfig, clean_response
from hf_cai.builders.judge_check import JudgeCheckConfig
from hf_cai.builders.judge_quality import (
    JudgeQualityError,
    JudgeQualityReport,
    check_judge_quality,
    measure_judge_quality,
)
from hf_cai.builders.prompts import builtin_prompts, list_builtin_prompts, load_prompts, prompt_text
from hf_cai.builders.quality_gates import (
    QUALITY_FLAGS,
    QualityGateConfig,
    QualityGateError,
    QualityGateResult,
    SLQualityReport,
    filter_for_training,
    flag_reply,
    flag_sl_row,
    gate_sl_dataset,
    gate_sl_splits,
)
from hf_cai.builders.sharding import FingerprintMismatchError

__all__ = [
    "QUALITY_FLAGS",
    "AIFeedbackBuilder",
    "AIFeedbackConfig",
    "CritiqueRevisionBuilder",
    "CritiqueRevisionConfig",
    "FingerprintMismatchError",
    "JudgeCheckConfig",
    "JudgeQualityError",
    "JudgeQualityReport",
    "PreferenceScorer",
    "QualityGateConfig",
    "QualityGateError",
    "QualityGateResult",
    "SLQualityReport",
    "builtin_prompts",
    "check_judge_quality",
    "clean_response",
    "filter_for_training",
    "flag_reply",
    "flag_sl_row",
    "gate_sl_dataset",
    "gate_sl_splits",
    "list_builtin_prompts",
    "load_prompts",
    "measure_judge_quality",
    "prompt_text",
]
