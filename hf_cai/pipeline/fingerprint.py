"""What each stage's output depends on, so that a rerun can tell a stage that is up to date from one to run again.

Equal fingerprints mean equal outputs. Settings that only change how a stage reports or where it keeps copies
(:data:`~hf_cai.pipeline.recipe.OUTPUT_NEUTRAL_KEYS`) are left out.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext
from hf_cai.pipeline.recipe import OUTPUT_NEUTRAL_KEYS, TINY_MODEL, RecipeConfig

UPSTREAM = {
    "sl_data": (),
    "sft": ("sl_data",),
    "pref_data": ("sft",),
    "dpo": ("sft", "pref_data"),
    "reward": ("pref_data",),
    "grpo": ("sft", "reward"),
    "eval": ("final",),
    "card": ("final", "sl_data", "pref_data", "eval"),
    "publish": ("card", "final"),
    "space": ("publish",),
}
"""The stages whose outputs each stage reads (``final``: the last training stage of the recipe's ``rl_method``)."""


def fingerprint_inputs(context: RunContext, stage: str) -> dict[str, Any]:
    """Everything ``stage``'s output depends on: the settings of its section (less ``OUTPUT_NEUTRAL_KEYS``), the
    models, endpoints and prompts it uses, the constitution, the seed, and the output hashes of the stages it
    reads."""
    recipe = context.recipe
    inputs: dict[str, Any] = {
        "stage": stage,
        "settings": {k: v for k, v in getattr(recipe, stage).items() if k not in OUTPUT_NEUTRAL_KEYS},
        # Every stage writes the constitution into its outputs (datasets, checkpoints, card, repository).
        "constitution": context.constitution.sha256,
    }
    prompts = {"prompts": recipe.prompts, "prompt_column": recipe.prompt_column, "max_prompts": recipe.max_prompts}
    if stage in ("sl_data", "sft", "pref_data", "dpo", "reward", "grpo", "eval"):
        inputs["seed"] = recipe.seed
    if stage == "sl_data":
        from hf_cai.builders.critique_revision import FORMAT_VERSION

        # A build of another format would be reused as if current; the builder's own fingerprint holds it too.
        inputs |= {"generator": _base_generator(recipe), "prompts": prompts, "format_version": FORMAT_VERSION}
        inputs["helpful_prompts"] = recipe.helpful_prompts
        inputs |= _checks("sl_quality", recipe.sl_quality)
    elif stage == "pref_data":
        from hf_cai.builders.ai_feedback import FORMAT_VERSION

        inputs |= {"policy": _policy(recipe, "sft"), "judge": _judge(recipe), "prompts": prompts,
                   "format_version": FORMAT_VERSION}
        inputs |= _checks("judge_check", recipe.judge_check)
    elif stage in ("sft", "dpo", "reward", "grpo"):
        inputs |= {"base": _base_model(recipe), "qlora_profile": context.qlora_profile()}
        if stage == "grpo":
            inputs["prompts"] = prompts
    elif stage == "eval":
        inputs |= {
            "cai": _policy(recipe, context.final_training_stage()),
            "base": _base_generator(recipe),
            "judge": _judge(recipe),
            # The evaluation checks that its prompts are not among the ones training used.
            "training_prompts": {**prompts, "helpful_prompts": recipe.helpful_prompts,
                                 "num_helpful_prompts": recipe.sl_data.get("num_helpful_prompts")},
            "eval_set_files": {file: _file_sha256(file) for file in recipe.eval.get("eval_sets", ())
                               if file != "builtin"},
        }
        if recipe.policy_url() and (recipe.eval.get("benchmarks") or {}).get("tasks"):
            inputs["benchmark_models"] = _local_base(recipe)  # the benchmarks load local copies
        task_folders = (recipe.eval.get("benchmarks") or {}).get("include_path")
        if task_folders:  # local lm-eval tasks: their YAML, data and code (not the bytecode Python caches beside it)
            folders = [task_folders] if isinstance(task_folders, str) else task_folders
            inputs["benchmark_task_files"] = {
                str(file): _file_sha256(str(file)) for folder in folders for file in sorted(Path(folder).rglob("*"))
                if file.is_file() and "__pycache__" not in file.parts
            }
    elif stage in ("card", "publish", "space"):
        inputs |= {"base_model_id": context.base_model_hub_id(), "license": context.card_license(),
                   "repo_id": context.publish_repo_id(), "merge": bool(recipe.publish.get("merge", False))}
    upstream = [context.final_training_stage() if name == "final" else name for name in UPSTREAM[stage]]
    inputs["upstream"] = {name: context.manifest.stage(name).get("output_hash") for name in upstream}
    return inputs


def _checks(section: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{section: settings}`` holding only the settings that differ from their defaults (a calibration file with its
    content's hash), or ``{}``: a recipe without the section, or with its defaults written out, keeps the fingerprint
    it had before the section existed, so runs made then are not redone."""
    from hf_cai.builders.judge_check import JudgeCheckConfig
    from hf_cai.builders.quality_gates import QualityGateConfig

    config_class = QualityGateConfig if section == "sl_quality" else JudgeCheckConfig
    defaults = dataclasses.asdict(config_class())
    given = dataclasses.asdict(config_class(**settings))
    changed = {key: value for key, value in given.items() if value != defaults[key]}
    if changed.get("calibration_files"):
        changed["calibration_files"] = [{"path": file, "sha256": _file_sha256(file)} for file in given["calibration_files"]]
    return {section: changed} if changed else {}


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _base_model(recipe: RecipeConfig) -> dict[str, Any]:
    model = {"model": recipe.model}
    if recipe.model == TINY_MODEL:
        model["tiny_pretrain_steps"] = recipe.tiny_pretrain_steps
    return model


def _local_base(recipe: RecipeConfig) -> dict[str, Any]:
    return {**_base_model(recipe), "load_in_4bit": recipe.load_in_4bit}


def _base_generator(recipe: RecipeConfig) -> dict[str, Any]:
    """The base model where generation asks for it: the endpoint's served model, else the local copy."""
    if recipe.endpoint:
        return {"endpoint": recipe.endpoint, "endpoint_model": recipe.endpoint_model or recipe.model}
    return _local_base(recipe)


def _policy(recipe: RecipeConfig, adapter_stage: str) -> dict[str, Any]:
    """The policy where generation asks for it: the policy endpoint's base model with the adapter (registered there
    under a name made from its content, or the name the recipe gives), else the local copy. Either way the adapter's
    content enters the fingerprint as the output hash of the stage that trained it (``upstream``)."""
    url = recipe.policy_url()
    if url is None:
        return _local_base(recipe)
    policy = {"endpoint": url, "endpoint_model": recipe.endpoint_model or recipe.model}
    if adapter_stage in recipe.policy_adapter_names:
        policy["adapter_name"] = recipe.policy_adapter_names[adapter_stage]
    return policy


def _judge(recipe: RecipeConfig) -> dict[str, Any]:
    if not recipe.feedback_model:
        return _base_generator(recipe)
    endpoint = recipe.feedback_endpoint or recipe.endpoint
    if endpoint:
        return {"endpoint": endpoint, "endpoint_model": recipe.feedback_model}
    return {"model": recipe.feedback_model, "load_in_4bit": recipe.load_in_4bit}
