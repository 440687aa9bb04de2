"""hf_cai: Constitutional AI on one consumer GPU, shared on the Hugging Face Hub.

The top level holds what a user's script needs, stage by stage: a constitution, a model and a generation backend,
the SL-CAI and RL-CAI dataset builders, the trainers, the evaluation, publishing, the pipeline, and
:class:`HFCAIError`, the base of every error hf_cai raises. Everything else (the specific errors, the tiny test
models, GGUF conversion, cards, eval-set loaders, ...) is in its submodule, e.g. :mod:`hf_cai.tiny`.

Names load on first use so that ``import hf_cai`` stays fast (no torch or transformers import until a model is
touched); the imports under ``TYPE_CHECKING`` let editors and type checkers see them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_cai._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "HFCAIError": "hf_cai.errors",
    # the constitution
    "Constitution": "hf_cai.constitution",
    "Principle": "hf_cai.constitution",
    # models and generation
    "load_causal_lm": "hf_cai.modeling",
    "load_tokenizer": "hf_cai.modeling",
    "GenerationBackend": "hf_cai.backends",
    "TransformersBackend": "hf_cai.backends",
    "EndpointBackend": "hf_cai.backends",
    # datasets: prompts, SL-CAI critique/revision, RL-CAI AI feedback
    "load_prompts": "hf_cai.builders",
    "builtin_prompts": "hf_cai.builders",
    "CritiqueRevisionBuilder": "hf_cai.builders",
    "CritiqueRevisionConfig": "hf_cai.builders",
    "QualityGateConfig": "hf_cai.builders",
    "AIFeedbackBuilder": "hf_cai.builders",
    "AIFeedbackConfig": "hf_cai.builders",
    "JudgeCheckConfig": "hf_cai.builders",
    # training
    "CAISFTConfig": "hf_cai.trainers",
    "CAISFTTrainer": "hf_cai.trainers",
    "CAIDPOConfig": "hf_cai.trainers",
    "CAIDPOTrainer": "hf_cai.trainers",
    "CAIRewardConfig": "hf_cai.trainers",
    "CAIRewardTrainer": "hf_cai.trainers",
    "CAIGRPOConfig": "hf_cai.trainers",
    "CAIGRPOTrainer": "hf_cai.trainers",
    "ConstitutionalReward": "hf_cai.trainers",
    "load_model_for_training": "hf_cai.trainers",
    "peft_config_for": "hf_cai.trainers",
    # evaluation
    "EvaluationConfig": "hf_cai.evaluation",
    "BenchmarkConfig": "hf_cai.evaluation",
    "evaluate_models": "hf_cai.evaluation",
    # the Hub
    "publish": "hf_cai.hub",
    "publish_dataset": "hf_cai.hub",
    "publish_to_folder": "hf_cai.hub",
    "list_cai_models": "hf_cai.hub",
    "compare_constitutions": "hf_cai.hub",
    "create_space": "hf_cai.hub.space",
    "write_space_folder": "hf_cai.hub.space",
    # the whole pipeline
    "RecipeConfig": "hf_cai.pipeline",
    "Pipeline": "hf_cai.pipeline",
    "load_recipe": "hf_cai.pipeline",
}

if TYPE_CHECKING:
    from hf_cai.backends import EndpointBackend, GenerationBackend, TransformersBackend
    from hf_cai.builders import (
        AIFeedbackBuilder,
        AIFeedbackConfig,
        CritiqueRevisionBuilder,
        CritiqueRevisionConfig,
        JudgeCheckConfig,
        QualityGateConfig,
        builtin_prompts,
        load_prompts,
    )
    from hf_cai.constitution import Constitution, Principle
    from hf_cai.errors import HFCAIError
    from hf_cai.evaluation import BenchmarkConfig, EvaluationConfig, evaluate_models
    from hf_cai.hub import compare_constitutions, list_cai_models, publish, publish_dataset, publish_to_folder
    from hf_cai.hub.space import create_space, write_space_folder
    from hf_cai.modeling import load_causal_lm, load_tokenizer
    from hf_cai.pipeline import Pipeline, RecipeConfig, load_recipe
    from hf_cai.trainers import (
        CAIDPOConfig,
        CAIDPOTrainer,
        CAIGRPOConfig,
        CAIGRPOTrainer,
        CAIRewardConfig,
        CAIRewardTrainer,
        CAISFTConfig,
        CAISFTTrainer,
        ConstitutionalReward,
        load_model_for_training,
        peft_config_for,
    )

# Spelled out (not derived from _EXPORTS) so that linters and editors read it; a test keeps the two equal.
__all__ = [
    "HFCAIError", "Constitution", "Principle", "load_causal_lm", "load_tokenizer", "GenerationBackend",
    "TransformersBackend", "EndpointBackend", "load_prompts", "builtin_prompts", "CritiqueRevisionBuilder",
    "CritiqueRevisionConfig", "QualityGateConfig", "AIFeedbackBuilder", "AIFeedbackConfig", "JudgeCheckConfig",
    "CAISFTConfig", "CAISFTTrainer", "CAIDPOConfig", "CAIDPOTrainer", "CAIRewardConfig", "CAIRewardTrainer",
    "CAIGRPOConfig", "CAIGRPOTrainer", "ConstitutionalReward", "load_model_for_training", "peft_config_for",
    "EvaluationConfig", "BenchmarkConfig", "evaluate_models", "publish", "publish_dataset", "publish_to_folder",
    "list_cai_models", "compare_constitutions", "create_space", "write_space_folder", "RecipeConfig", "Pipeline",
    "load_recipe", "__version__",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
