"""hf_cai: Constitutional AI on one consumer GPU, shared on the Hugging Face Hub.

The public API is importable from the top level; submodules load on first use so that ``import hf_cai`` stays fast
(no torch or transformers import until a model is touched).
"""

from __future__ import annotations

from hf_cai._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "HFCAIError": "hf_cai.errors",
    "Constitution": "hf_cai.constitution",
    "ConstitutionError": "hf_cai.constitution",
    "Principle": "hf_cai.constitution",
    "PreferenceExample": "hf_cai.constitution",
    "parse_transcript": "hf_cai.constitution.transcript",
    "TinyModelConfig": "hf_cai.tiny",
    "build_tiny_chat_model": "hf_cai.tiny",
    "build_tiny_reward_model": "hf_cai.tiny",
    "load_causal_lm": "hf_cai.modeling",
    "load_tokenizer": "hf_cai.modeling",
    "ModelLoadError": "hf_cai.modeling",
    "GGUFError": "hf_cai.gguf",
    "EMBEDDED_MODELS": "hf_cai.gguf",
    "resolve_model": "hf_cai.gguf",
    "convert_gguf": "hf_cai.gguf",
    "GenerationBackend": "hf_cai.backends",
    "TransformersBackend": "hf_cai.backends",
    "EndpointBackend": "hf_cai.backends",
    "BackendError": "hf_cai.backends",
    "CritiqueRevisionBuilder": "hf_cai.builders",
    "CritiqueRevisionConfig": "hf_cai.builders",
    "AIFeedbackBuilder": "hf_cai.builders",
    "AIFeedbackConfig": "hf_cai.builders",
    "PreferenceScorer": "hf_cai.builders",
    "FingerprintMismatchError": "hf_cai.builders",
    "load_prompts": "hf_cai.builders",
    "builtin_prompts": "hf_cai.builders",
    "QualityGateConfig": "hf_cai.builders",
    "gate_sl_dataset": "hf_cai.builders",
    "CAISFTConfig": "hf_cai.trainers",
    "CAISFTTrainer": "hf_cai.trainers",
    "CAIDPOConfig": "hf_cai.trainers",
    "CAIDPOTrainer": "hf_cai.trainers",
    "CAIRewardConfig": "hf_cai.trainers",
    "CAIRewardTrainer": "hf_cai.trainers",
    "ConstitutionalReward": "hf_cai.trainers",
    "QLoRAProfile": "hf_cai.trainers",
    "load_model_for_training": "hf_cai.trainers",
    "peft_config_for": "hf_cai.trainers",
    "ChatTemplateError": "hf_cai.trainers",
    "publish": "hf_cai.hub",
    "publish_dataset": "hf_cai.hub",
    "publish_to_folder": "hf_cai.hub",
    "PublishResult": "hf_cai.hub",
    "PublishError": "hf_cai.hub",
    "ModelCardError": "hf_cai.hub",
    "build_model_card": "hf_cai.hub",
    "build_dataset_card": "hf_cai.hub",
    "list_cai_models": "hf_cai.hub",
    "compare_constitutions": "hf_cai.hub",
    "create_space": "hf_cai.hub.space",
    "write_space_folder": "hf_cai.hub.space",
    "EvaluationConfig": "hf_cai.evaluation",
    "EvaluationReport": "hf_cai.evaluation",
    "evaluate_models": "hf_cai.evaluation",
    "load_multiple_choice": "hf_cai.evaluation",
    "JudgeCheckConfig": "hf_cai.evaluation",
    "JudgeQualityReport": "hf_cai.evaluation",
    "measure_judge_quality": "hf_cai.evaluation",
    "EvalSet": "hf_cai.evaluation",
    "builtin_eval_set": "hf_cai.evaluation",
    "load_eval_set": "hf_cai.evaluation",
    "refusal_rates": "hf_cai.evaluation",
    "multiple_choice_accuracy": "hf_cai.evaluation",
    "RecipeConfig": "hf_cai.pipeline",
    "Pipeline": "hf_cai.pipeline",
    "load_recipe": "hf_cai.pipeline",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
