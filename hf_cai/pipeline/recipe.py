"""A CAI run as written in a YAML recipe: its settings, the stages it runs, and the checks that read it.

:func:`load_recipe` reads a recipe and its command-line overrides into a :class:`RecipeConfig`, refusing unknown keys
(with the closest valid one) and secrets (which belong in the environment, not in a file copied into the run
directory).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_cai.hub.errors import is_secret_name
from hf_cai.pipeline.errors import RecipeError
from hf_cai.redaction import TOKEN_PATTERN

SHARED_TRAINING_STAGES = ("sl_data", "sft", "pref_data")
"""The stages every recipe trains with, before the stages of its ``rl_method``."""
RL_STAGES = {"dpo": ("dpo",), "grpo": ("reward", "grpo")}
ALL_STAGES = ("sl_data", "sft", "pref_data", "dpo", "reward", "grpo", "eval", "card", "publish", "space")
"""Every stage, in the order stages run."""
TINY_MODEL = "tiny"
LOCAL_POLICY = "local"
"""The ``policy_endpoint`` value that keeps the policy's generation local although ``endpoint`` is set."""
ADAPTER_STAGES = ("sft", "dpo", "grpo")
"""The training stages whose LoRA adapter a later stage generates with (``policy_adapter_names`` keys)."""

OUTPUT_NEUTRAL_KEYS = frozenset(
    {
        # How progress is reported, and where.
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "logging_nan_inf_filter",
        "log_level",
        "log_level_replica",
        "log_on_each_node",
        "log_completions",
        "log_completions_hub_repo",
        "log_unique_prompts",
        "report_to",
        "run_name",
        "project",
        "trackio_space_id",
        "trackio_bucket_id",
        "trackio_static_space_id",
        "disable_tqdm",
        # Where and how often checkpoints are kept: a resumed run restores the exact training state, so the model a
        # run ends with does not depend on them.
        "output_dir",
        "save_steps",
        "save_strategy",
        "save_total_limit",
        "save_on_each_node",
        # Copies pushed to the Hub while training.
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        # Data-loading workers: the order of the examples comes from the seeded sampler in the main process.
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "dataloader_multiprocessing_context",
    }
)
"""Stage-section settings that do not change a stage's output, left out of its fingerprint. At the top level of a
recipe, ``stages``, ``generation_batch_size`` (each row is sampled from its own seed, whatever the batch),
``endpoint_api_key_env`` and ``run_dir`` are output-neutral too (of ``run_dir`` only the folder's name counts: it
names the model in a card published to a folder without ``publish.repo_id``); every other key is part of the
fingerprint of the stages it affects."""



@dataclass
class RecipeConfig:
    """A CAI run, as written in a YAML recipe (``hf-cai run --config recipe.yaml``).

    Per-stage sections (``sl_data``, ``sft``, ``pref_data``, ``dpo``, ``reward``, ``grpo``, ``eval``, ``publish``,
    ``space``) hold the fields of that stage's config class (``CritiqueRevisionConfig``, ``CAISFTConfig``,
    ``AIFeedbackConfig``, ``CAIDPOConfig``, ``CAIRewardConfig``, ``CAIGRPOConfig``, ``EvaluationConfig``, and the
    keyword arguments of ``hf_cai.hub.publish`` / ``create_space``). Two sections hold checks of the data rather than
    a stage's settings: ``sl_quality`` (``QualityGateConfig``: the quality gates the ``sl_data`` stage runs on the
    SL-CAI rows, and which of them ``sft`` trains on) and ``judge_check`` (``JudgeCheckConfig``: how ``pref_data``
    measures the feedback model before it labels).

    Args:
        model: Hub id or local folder of the instruct model to align, an embedded model alias
            (``smollm2-135m-instruct``, no download) or a local ``.gguf`` file; ``"tiny"`` builds the offline tiny
            model.
        tiny_pretrain_steps: Warm-up steps of the tiny model on the built-in demonstrations (``model: tiny`` only).
        model_hub_id: Hub id the model came from, recorded in the card when ``model`` is a local folder.
        constitution: Built-in name or path of the constitution file.
        prompts: Red-team prompts: ``builtin:red_team``, a JSONL/CSV file, or a Hub dataset id.
        helpful_prompts: Benign prompts mixed in (answered, not revised); ``None`` for none.
        prompt_column: Column of the prompt text in file or Hub sources.
        max_prompts: Use at most this many prompts (``None``: all).
        feedback_model: Model that gives AI feedback and judges the evaluation; defaults to ``model``. With an
            endpoint, the name of the model served at ``feedback_endpoint``.
        endpoint: Base URL of an OpenAI-compatible server (vLLM, TGI, ...) serving the base model, used instead of a
            local copy for SL-CAI generation and as the base side of the evaluation.
        endpoint_model: Model name to send to ``endpoint`` (defaults to ``model``).
        feedback_endpoint: Base URL of the server of ``feedback_model``; defaults to ``endpoint``. Without either, the
            feedback model runs locally.
        policy_endpoint: Base URL of the server that generates the policy's replies (the RL-CAI pairs from the SFT
            adapter, the evaluated CAI model from the final one); defaults to ``endpoint``; ``"local"`` generates
            them locally. The server must serve the base model (``endpoint_model``) with LoRA enabled: after each
            training stage its adapter is registered through vLLM's or SGLang's runtime LoRA loading route (vLLM:
            ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), so the server must read the run
            directory at the same path, unless ``policy_adapter_names`` names it.
        policy_adapter_names: Names under which ``policy_endpoint`` already serves the run's adapters, by training
            stage (``{sft: cai-sft, dpo: cai-dpo}``: vLLM's ``--lora-modules cai-sft=RUN_DIR/sft/final``); those
            are not registered.
        endpoint_api_key_env: Name of the environment variable holding the endpoint's API key (for Inference
            Endpoints and other servers that need one); the key itself never goes into a recipe.
        rl_method: ``"dpo"`` (soft-label DPO on AI-labelled pairs) or ``"grpo"`` (a reward model trained from the
            base model on those pairs, then GRPO of the SFT adapter against it).
        load_in_4bit: Quantise the base model to NF4 for training and generation (QLoRA).
        qlora_profile: Memory profile of the trainers (``"8gb"``, ``"12gb"``, ``"16gb"``, ``"24gb"``, ``"cpu"``).
        generation_batch_size: Prompts per generation batch of the local backend.
        seed: Seed of every sampled step.
        run_dir: Folder of the run (stage outputs and ``manifest.json``).
        stages: Stages to run, in order; defaults to the full sequence for ``rl_method``, with ``publish``/``space``
            only when their sections name a target.
    """

    model: str = TINY_MODEL
    tiny_pretrain_steps: int = 150
    model_hub_id: str | None = None
    constitution: str = "harmless"
    prompts: str = "builtin:red_team"
    helpful_prompts: str | None = "builtin:helpful"
    prompt_column: str = "prompt"
    max_prompts: int | None = None
    feedback_model: str | None = None
    endpoint: str | None = None
    endpoint_model: str | None = None
    feedback_endpoint: str | None = None
    policy_endpoint: str | None = None
    policy_adapter_names: dict[str, str] = field(default_factory=dict)
    endpoint_api_key_env: str | None = None
    rl_method: str = "dpo"
    load_in_4bit: bool = True
    qlora_profile: str | None = None
    generation_batch_size: int = 16
    seed: int = 0
    run_dir: str = "runs/cai"
    stages: list[str] | None = None
    sl_data: dict[str, Any] = field(default_factory=dict)
    sl_quality: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    pref_data: dict[str, Any] = field(default_factory=dict)
    judge_check: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)

    def policy_url(self) -> str | None:
        """The server of the policy's replies (``policy_endpoint``, else ``endpoint``); ``None`` when they are
        generated locally."""
        url = self.policy_endpoint or self.endpoint
        return None if url == LOCAL_POLICY else url

    def stage_sequence(self) -> list[str]:
        """The stages this recipe runs, validated for order and dependencies."""
        if self.rl_method not in RL_STAGES:
            raise RecipeError(f"rl_method: unknown value '{self.rl_method}'; choose 'dpo' or 'grpo'")
        default = [*SHARED_TRAINING_STAGES, *RL_STAGES[self.rl_method], "eval", "card"]
        if self.publish:
            default.append("publish")
        if self.space:
            default.append("space")
        stages = list(self.stages) if self.stages is not None else default
        for stage in stages:
            if stage not in ALL_STAGES:
                raise RecipeError(f"stages: unknown stage '{stage}'{_suggest(stage, ALL_STAGES)}")
        order = [ALL_STAGES.index(s) for s in stages]
        if order != sorted(order) or len(set(stages)) != len(stages):
            raise RecipeError(
                f"stages: {stages} cannot run in this order; stages run as {' → '.join(s for s in ALL_STAGES if s in stages)}"
            )
        other = "grpo" if self.rl_method == "dpo" else "dpo"
        for stage in RL_STAGES[other]:
            if stage in stages:
                raise RecipeError(f"stages: '{stage}' belongs to rl_method '{other}', but rl_method is '{self.rl_method}'")
        if "space" in stages and not self.publish.get("repo_id"):
            raise RecipeError("stages: 'space' loads the published model from the Hub: set publish.repo_id")
        return stages


def _suggest(key: str, valid: Iterable[str], prefix: str = "") -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{prefix}{match[0]}'?" if match else ""


def load_recipe(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RecipeConfig:
    """Read a YAML recipe and apply ``overrides`` (``{"max_prompts": 8, "sft.learning_rate": 1e-4}``).

    Unknown keys raise :class:`RecipeError` naming the key, whether it came from the file or an override, and the
    closest valid one. Tokens and other secrets are refused: they belong in the environment, not in a file that is
    copied into the run directory.
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "<recipe>"
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError as error:
            raise RecipeError(f"{source}: file not found") from error
        except yaml.YAMLError as error:
            raise RecipeError(f"{source}: YAML syntax error: {error}") from error
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: the recipe must be a mapping of keys to values")
    check_no_secrets(data, source)
    check_no_secrets(dict(overrides or {}), "override")
    valid = _dataclass_fields(RecipeConfig)
    sections = {f.name for f in dataclasses.fields(RecipeConfig) if f.type == "dict[str, Any]"}
    section_settings = section_fields()
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in valid:
            raise RecipeError(f"override '{dotted}': unknown key{_suggest(section, valid)}")
        if key:
            if section not in sections:
                raise RecipeError(f"override '{dotted}': '{section}' is a single value, not a section of settings")
            if key not in section_settings[section]:
                raise RecipeError(
                    f"override '{dotted}': '{section}' has no setting '{key}'"
                    f"{_suggest(key, section_settings[section], f'{section}.')}"
                )
            data.setdefault(section, {})
            if data[section] is None:
                data[section] = {}
            if not isinstance(data[section], dict):
                raise RecipeError(f"{source}: '{section}' must be a mapping to set '{dotted}'")
            data[section][key] = value
        else:
            data[section] = value
    for key in data:
        if key not in valid:
            raise RecipeError(f"{source}: unknown key '{key}'{_suggest(key, valid)}")
    for key in sections & set(data):
        if data[key] is None:
            data[key] = {}
        if not isinstance(data[key], dict):
            raise RecipeError(f"{source}: '{key}' must be a mapping of {key} settings")
    recipe = RecipeConfig(**data)
    for section, fields in section_settings.items():
        for key in getattr(recipe, section):
            if key not in fields:
                raise RecipeError(f"{source}: unknown key '{section}.{key}'{_suggest(key, fields)}")
    check_section_settings(recipe, source)
    check_policy_settings(recipe, source)
    recipe.stage_sequence()
    return recipe


def check_policy_settings(recipe: RecipeConfig, source: str = "<recipe>") -> None:
    """Refuse a ``policy_adapter_names`` that is not a mapping of training stages to names, and names given without
    a server to serve them."""
    names = recipe.policy_adapter_names
    if not isinstance(names, dict):
        raise RecipeError(f"{source}: policy_adapter_names must be a mapping of training stage to served name")
    for stage, name in names.items():
        if stage not in ADAPTER_STAGES:
            raise RecipeError(f"{source}: policy_adapter_names.{stage}: not a training stage with an adapter; use "
                              f"one of {', '.join(ADAPTER_STAGES)}")
        if not isinstance(name, str) or not name:
            raise RecipeError(f"{source}: policy_adapter_names.{stage}: give the name the server serves it under")
    if names and recipe.policy_url() is None:
        raise RecipeError(f"{source}: policy_adapter_names is set but no server generates the policy's replies; set "
                          "policy_endpoint (or endpoint)")


def check_section_settings(recipe: RecipeConfig, source: str = "<recipe>") -> None:
    """Refuse ``sl_quality``, ``judge_check``, ``eval.benchmarks`` and ``eval.classifier`` values their config classes refuse (a share
    above 1, a calibration file or task folder that is not there), and the trainer's and the builders' copies of
    settings another section holds (``sft.min_kept_share``, ``sl_data.max_prompts`` ...), before any stage runs."""
    from hf_cai.builders.judge_check import JudgeCheckConfig
    from hf_cai.builders.quality_gates import QualityGateConfig
    from hf_cai.evaluation.benchmarks import BenchmarkConfig
    from hf_cai.evaluation.classifiers import ClassifierConfig

    try:
        BenchmarkConfig.from_settings(recipe.eval.get("benchmarks"))
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{source}: eval.{error}") from error
    try:
        ClassifierConfig.from_settings(recipe.eval.get("classifier"))
    except (TypeError, ValueError) as error:  # its messages start with "eval.classifier:"
        raise RecipeError(f"{source}: {error}") from error

    configs = {}
    for section, config_class in (("sl_quality", QualityGateConfig), ("judge_check", JudgeCheckConfig)):
        try:
            configs[section] = config_class(**getattr(recipe, section))
        except (TypeError, ValueError) as error:
            raise RecipeError(f"{source}: {section}: {error}") from error
    for key, instead in (("exclude_flagged_rows", "exclude_flagged"), ("min_kept_share", "min_kept_share")):
        if key in recipe.sft:
            raise RecipeError(
                f"{source}: sft.{key}: the sft stage takes it from the quality gates' settings; set "
                f"sl_quality.{instead} instead"
            )
    for section in ("sl_data", "pref_data"):
        if "max_prompts" in getattr(recipe, section):
            raise RecipeError(
                f"{source}: {section}.max_prompts: every stage uses the same prompts; set the top-level max_prompts "
                "instead"
            )
    judge_check = configs["judge_check"]
    if judge_check.enabled:
        for file in judge_check.calibration_files:
            if not Path(file).is_file():
                raise RecipeError(f"{source}: judge_check.calibration_files: {file}: no such file")


_SECRET_VALUE = re.compile(rf"{TOKEN_PATTERN.pattern}|://[^/@\s:]+:[^/@\s]+@")


def check_no_secrets(data: Any, source: str) -> None:
    """Refuse tokens, API keys and passwords anywhere in recipe data: a key named like ``token``, ``hub_token`` or
    ``api_key`` with a value, a value shaped like a Hugging Face token, or a URL carrying a password. The message
    names where, never the secret."""
    where = _find_secret(data, "")
    if where is not None:
        raise RecipeError(
            f"{source}: {where} holds a secret. Tokens never go into a recipe, which is copied into the run directory "
            "and shared with the results: remove it, then set HF_TOKEN in the environment or run `hf auth login` "
            "(for an endpoint key, name its environment variable with endpoint_api_key_env)."
        )


def _find_secret(data: Any, path: str) -> str | None:
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = f"{path}.{key}" if path else str(key)
            name = str(key).rsplit(".", 1)[-1]
            if value not in (None, "") and is_secret_name(name):
                return f"'{here}'"
            found = _find_secret(value, here)
            if found is not None:
                return found
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            found = _find_secret(value, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(data, str) and _SECRET_VALUE.search(data):
        return f"the value of '{path}'" if path else "a value"
    return None


def _dataclass_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def section_classes() -> dict[str, type | dict[str, str]]:
    """Each recipe section's config class, or for the sections without one, ``{key: meaning}``."""
    from hf_cai.builders import AIFeedbackConfig, CritiqueRevisionConfig
    from hf_cai.builders.judge_check import JudgeCheckConfig
    from hf_cai.builders.quality_gates import QualityGateConfig
    from hf_cai.evaluation import EvaluationConfig
    from hf_cai.trainers import CAIDPOConfig, CAIGRPOConfig, CAIRewardConfig, CAISFTConfig

    return {
        "sl_data": CritiqueRevisionConfig,
        "sl_quality": QualityGateConfig,
        "sft": CAISFTConfig,
        "pref_data": AIFeedbackConfig,
        "judge_check": JudgeCheckConfig,
        "dpo": CAIDPOConfig,
        "reward": CAIRewardConfig,
        "grpo": CAIGRPOConfig,
        "eval": EvaluationConfig,
        "card": {"license": "License of the model card (default: the base model's, when known)."},
        "publish": {
            "repo_id": "Hub repository to publish the model to (`owner/name`).",
            "folder": "Write the repository into this local folder instead of pushing it (offline).",
            "merge": "Publish the adapter merged into the base model as a 16-bit checkpoint instead of the adapter.",
            "private": "Create the repository private.",
            "revision": "Branch to push to.",
            "create_pr": "Open a pull request instead of pushing to the branch.",
        },
        "space": {
            "repo_id": "Hub id of the Space that chats with the base and the CAI model side by side.",
            "private": "Create the Space private.",
            "hardware": "Space hardware to request (e.g. `t4-small`).",
            "hf_cai_requirement": "How the Space installs hf_cai (default: the wheel of this version, uploaded with it).",
        },
    }


def section_fields() -> dict[str, set[str]]:
    """Valid keys of each recipe section, from the config classes of the library."""
    return {
        section: set(spec) if isinstance(spec, dict) else _dataclass_fields(spec)
        for section, spec in section_classes().items()
    }
