"""The CAI pipeline: from prompts to a published, evaluated model in one resumable run.

Stages run in order ``sl_data → sft → pref_data → dpo`` (or ``pref_data → reward → grpo``), then
``eval → card → publish → space``. Each stage writes into ``run_dir/<stage>/`` and records its status, a fingerprint
of its configuration and inputs, a hash of its outputs and its timing in ``run_dir/manifest.json``. On a rerun:

* a finished stage whose fingerprint is unchanged is skipped;
* an interrupted stage resumes (dataset shards and training checkpoints already written are reused);
* a stage whose configuration or inputs changed runs again, and so does every stage after it, because their inputs
  are the outputs that changed.

Stages call the library (builders, trainers, evaluation, hub); they do not re-implement it.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_cai.constitution import Constitution
from hf_cai.gguf import hub_id_of, resolve_model

logger = logging.getLogger(__name__)

TRAINING_STAGES = ("sl_data", "sft", "pref_data")
RL_STAGES = {"dpo": ("dpo",), "grpo": ("reward", "grpo")}
TAIL_STAGES = ("eval", "card", "publish", "space")
ALL_STAGES = ("sl_data", "sft", "pref_data", "dpo", "reward", "grpo", "eval", "card", "publish", "space")
TINY_MODEL = "tiny"


class RecipeError(ValueError):
    """A recipe is malformed or asks for something that cannot work; the message names the key and the fix."""


class PipelineError(RuntimeError):
    """A stage could not run (missing input, full disk, ...); finished work is kept in the run directory."""


@dataclass
class RecipeConfig:
    """A CAI run, as written in a YAML recipe (``hf-cai run --config recipe.yaml``).

    Per-stage sections (``sl_data``, ``sft``, ``pref_data``, ``dpo``, ``reward``, ``grpo``, ``eval``, ``publish``,
    ``space``) hold the fields of that stage's config class (``CritiqueRevisionConfig``, ``CAISFTConfig``,
    ``AIFeedbackConfig``, ``CAIDPOConfig``, ``CAIRewardConfig``, TRL's ``GRPOConfig``, ``EvaluationConfig``, and the
    keyword arguments of ``hf_cai.hub.publish`` / ``create_space``).

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
        feedback_model: Model that gives AI feedback and judges the evaluation; defaults to ``model``.
        endpoint: Base URL of an OpenAI-compatible server (vLLM, TGI, ...) for generation instead of local models.
        endpoint_model: Model name to send to ``endpoint``.
        endpoint_api_key_env: Name of the environment variable holding the endpoint's API key (for Inference
            Endpoints and other servers that need one); the key itself never goes into a recipe.
        rl_method: ``"dpo"`` (soft-label DPO on AI-labelled pairs) or ``"grpo"`` (reward model + GRPO).
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
    endpoint_api_key_env: str | None = None
    rl_method: str = "dpo"
    load_in_4bit: bool = True
    qlora_profile: str | None = None
    generation_batch_size: int = 16
    seed: int = 0
    run_dir: str = "runs/cai"
    stages: list[str] | None = None
    sl_data: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    pref_data: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)
    reward: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)

    def stage_sequence(self) -> list[str]:
        """The stages this recipe runs, validated for order and dependencies."""
        if self.rl_method not in RL_STAGES:
            raise RecipeError(f"rl_method: unknown value '{self.rl_method}'; choose 'dpo' or 'grpo'")
        default = [*TRAINING_STAGES, *RL_STAGES[self.rl_method], "eval", "card"]
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


def _suggest(key: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def load_recipe(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RecipeConfig:
    """Read a YAML recipe and apply ``overrides`` (``{"max_prompts": 8, "sft.learning_rate": 1e-4}``).

    Unknown keys raise :class:`RecipeError` naming the key and the closest valid one.
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "<recipe>"
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise RecipeError(f"{source}: file not found") from None
        except yaml.YAMLError as error:
            raise RecipeError(f"{source}: YAML syntax error: {error}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: the recipe must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if key:
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise RecipeError(f"{source}: '{section}' must be a mapping to set '{dotted}'")
            data[section][key] = value
        else:
            data[section] = value
    valid = {f.name for f in dataclasses.fields(RecipeConfig)}
    for key in data:
        if key not in valid:
            raise RecipeError(f"{source}: unknown key '{key}'{_suggest(key, valid)}")
    sections = {f.name for f in dataclasses.fields(RecipeConfig) if f.type == "dict[str, Any]"}
    for key in sections & set(data):
        if data[key] is None:
            data[key] = {}
        if not isinstance(data[key], dict):
            raise RecipeError(f"{source}: '{key}' must be a mapping of {key} settings")
    recipe = RecipeConfig(**data)
    for section, fields in _section_fields().items():
        for key in getattr(recipe, section):
            if key not in fields:
                raise RecipeError(f"{source}: unknown key '{section}.{key}'{_suggest(key, fields)}")
    recipe.stage_sequence()
    return recipe


def _dataclass_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _section_fields() -> dict[str, set[str]]:
    """Valid keys of each recipe section, from the config classes of the library."""
    from trl import GRPOConfig

    from hf_cai.builders import AIFeedbackConfig, CritiqueRevisionConfig
    from hf_cai.evaluation import EvaluationConfig
    from hf_cai.trainers import CAIDPOConfig, CAIRewardConfig, CAISFTConfig

    return {
        "sl_data": _dataclass_fields(CritiqueRevisionConfig),
        "sft": _dataclass_fields(CAISFTConfig),
        "pref_data": _dataclass_fields(AIFeedbackConfig),
        "dpo": _dataclass_fields(CAIDPOConfig),
        "reward": _dataclass_fields(CAIRewardConfig),
        "grpo": _dataclass_fields(GRPOConfig),
        "eval": _dataclass_fields(EvaluationConfig),
        "card": {"license"},
        "publish": {"repo_id", "folder", "merge", "private", "revision", "create_pr", "token"},
        "space": {"repo_id", "private", "hardware"},
    }


# --------------------------------------------------------------------------- hashing and manifest
def hash_data(value: Any) -> str:
    """sha256 of JSON-serialisable data in canonical form."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def hash_path(path: Path, *, exclude: Sequence[str] = ("checkpoint-",)) -> str:
    """sha256 over the relative names and contents of the files under ``path`` (checkpoints excluded)."""
    digest = hashlib.sha256()
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.relative_to(path).as_posix() if path.is_dir() else file.name
        if any(part.startswith(tuple(exclude)) for part in Path(relative).parts):
            continue
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Manifest:
    """``manifest.json`` of a run: per stage, status, fingerprint, output hash, outputs and timings."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"stages": {}}
        if path.is_file():
            self.data = json.loads(path.read_text(encoding="utf-8"))

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


@dataclass
class StageResult:
    """What a stage produced: the output paths (relative to the run dir) and figures for the summary."""

    outputs: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the pipeline
class Pipeline:
    """Runs a :class:`RecipeConfig` in its run directory, skipping, resuming or re-running stages as needed."""

    def __init__(self, recipe: RecipeConfig):
        self.recipe = recipe
        self.run_dir = Path(recipe.run_dir)
        self.manifest = Manifest(self.run_dir / "manifest.json")
        self._constitution: Constitution | None = None

    # ---- shared inputs
    @property
    def constitution(self) -> Constitution:
        if self._constitution is None:
            self._constitution = Constitution.resolve(self.recipe.constitution)
        return self._constitution

    def base_model_path(self) -> str:
        """The model to align; the tiny model is built once into ``run_dir/base_model``."""
        if self.recipe.model != TINY_MODEL:
            return resolve_model(self.recipe.model)
        # Absolute, so adapters trained in this run find their base from any working directory.
        path = (self.run_dir / "base_model").resolve()
        if not (path / "config.json").is_file():
            from hf_cai.tiny import TinyModelConfig, build_tiny_chat_model

            build_tiny_chat_model(path, TinyModelConfig(pretrain_steps=self.recipe.tiny_pretrain_steps))
        return str(path)

    def base_model_hub_id(self) -> str:
        if self.recipe.model_hub_id:
            return self.recipe.model_hub_id
        if self.recipe.model == TINY_MODEL:
            return "hf-cai/tiny-chat"
        return hub_id_of(self.recipe.model) or self.recipe.model

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def output(self, stage: str, key: str) -> Path:
        """An output of a finished earlier stage; :class:`PipelineError` when that stage has not produced it."""
        record = self.manifest.stage(stage)
        relative = record.get("outputs", {}).get(key)
        if record.get("status") != "done" or relative is None or not (self.run_dir / relative).exists():
            raise PipelineError(
                f"missing input: stage '{stage}' has not produced '{key}' in {self.run_dir}; "
                f"run it first (hf-cai run ... --from {stage})"
            )
        return self.run_dir / relative

    # ---- fingerprints
    def fingerprint(self, stage: str) -> str:
        """Hash of everything a stage's result depends on: its settings and the outputs of the stages it reads."""
        recipe = self.recipe
        model = {"model": recipe.model, "tiny_pretrain_steps": recipe.tiny_pretrain_steps, "load_in_4bit": recipe.load_in_4bit, "endpoint": recipe.endpoint}
        upstream = {
            "sl_data": [],
            "sft": ["sl_data"],
            "pref_data": ["sft"],
            "dpo": ["sft", "pref_data"],
            "reward": ["pref_data"],
            "grpo": ["sft", "reward"],
            "eval": [self._final_training_stage()],
            "card": [self._final_training_stage(), "sl_data", "pref_data", "eval"],
            "publish": ["card", self._final_training_stage()],
            "space": ["publish"],
        }[stage]
        # Every stage writes the constitution into its outputs (datasets, checkpoints, card, repository).
        settings: dict[str, Any] = {"section": getattr(recipe, stage), "constitution": self.constitution.sha256}
        if stage in ("sl_data", "pref_data", "eval"):
            settings |= {
                "model": model,
                "feedback_model": recipe.feedback_model,
                "seed": recipe.seed,
            }
        if stage in ("sl_data", "pref_data"):
            settings |= {"prompts": [recipe.prompts, recipe.helpful_prompts, recipe.prompt_column, recipe.max_prompts]}
        if stage in ("sft", "dpo", "reward", "grpo"):
            settings |= {"model": model, "qlora_profile": recipe.qlora_profile, "seed": recipe.seed}
        if stage == "card":
            settings |= {
                "model_hub_id": self.base_model_hub_id(),
                "repo_id": recipe.publish.get("repo_id"),
                "merge": recipe.publish.get("merge"),
            }
        inputs = {name: self.manifest.stage(name).get("output_hash") for name in upstream}
        return hash_data({"stage": stage, "settings": settings, "inputs": inputs})

    def _final_training_stage(self) -> str:
        return "dpo" if self.recipe.rl_method == "dpo" else "grpo"

    # ---- running
    def run(self, *, from_stage: str | None = None, until: str | None = None) -> dict[str, StageResult]:
        """Run the recipe's stages (optionally only ``from_stage`` … ``until``) and return their results."""
        stages = self.recipe.stage_sequence()
        for bound, label in ((from_stage, "--from"), (until, "--until")):
            if bound is not None and bound not in stages:
                raise RecipeError(f"{label}: '{bound}' is not one of this recipe's stages: {', '.join(stages)}")
        start = stages.index(from_stage) if from_stage else 0
        stop = stages.index(until) + 1 if until else len(stages)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "recipe.yaml").write_text(
            yaml.safe_dump(_redacted(dataclasses.asdict(self.recipe)), sort_keys=False), encoding="utf-8"
        )
        results: dict[str, StageResult] = {}
        for index, stage in enumerate(stages):
            if index < start or index >= stop:
                continue
            results[stage] = self._run_stage(stage, force=from_stage == stage)
        return results

    def _run_stage(self, stage: str, *, force: bool) -> StageResult:
        record = self.manifest.stage(stage)
        fingerprint = self.fingerprint(stage)
        if record.get("status") == "done" and record.get("fingerprint") == fingerprint and not force:
            logger.info("stage %s: up to date, skipped", stage)
            return StageResult(outputs=record.get("outputs", {}), metrics=record.get("metrics", {}))
        directory = self.stage_dir(stage)
        if record.get("fingerprint") not in (None, fingerprint) or (force and record.get("status") == "done"):
            logger.info("stage %s: settings or inputs changed, starting it again", stage)
            if directory.exists():
                shutil.rmtree(directory)
        resumed = record.get("status") == "running" and directory.exists()
        logger.info("stage %s: %s", stage, "resuming" if resumed else "running")
        record.clear()
        record.update({"status": "running", "fingerprint": fingerprint, "started": time.time(), "resumed": resumed})
        self.manifest.save()
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        from hf_cai.stages import STAGE_FUNCTIONS

        try:
            result = STAGE_FUNCTIONS[stage](self, directory)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise PipelineError(
                    f"stage '{stage}': the disk is full while writing {directory}. Finished shards and checkpoints "
                    "are kept; free some space and run the same command again to resume."
                ) from error
            raise
        record.update(
            {
                "status": "done",
                "seconds": round(time.perf_counter() - started, 2),
                "outputs": result.outputs,
                "metrics": result.metrics,
                "output_hash": hash_data({k: hash_path(self.run_dir / v) for k, v in sorted(result.outputs.items())}),
            }
        )
        self.manifest.save()
        return result


_SECRET_KEY = re.compile(r"(token|api_key|password|secret)$", re.IGNORECASE)


def _redacted(data: Any) -> Any:
    """Recipe data without secrets: keys such as ``token``, ``hub_token`` or ``api_key`` are dropped anywhere."""
    if isinstance(data, dict):
        return {k: _redacted(v) for k, v in data.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(data, list):
        return [_redacted(v) for v in data]
    return data


def format_summary(pipeline: Pipeline, results: Mapping[str, StageResult]) -> str:
    """The table printed at the end of a run: per stage, status, time, key figures and where its outputs are."""
    lines = [f"CAI run in {pipeline.run_dir}  (constitution {pipeline.constitution.name}, "
             f"sha256 {pipeline.constitution.sha256[:12]}…)", ""]
    lines.append(f"{'stage':<10} {'status':<8} {'seconds':>8}  figures")
    lines.append(f"{'-' * 10} {'-' * 8} {'-' * 8}  {'-' * 50}")
    for stage in pipeline.recipe.stage_sequence():
        record = pipeline.manifest.stage(stage)
        metrics = record.get("metrics", {})
        figures = ", ".join(f"{k}={_format_value(v)}" for k, v in metrics.items())
        seconds = record.get("seconds")
        lines.append(
            f"{stage:<10} {record.get('status', 'pending'):<8} {seconds if seconds is not None else '':>8}  {figures}"
        )
    lines.append("")
    for stage in pipeline.recipe.stage_sequence():
        for key, relative in pipeline.manifest.stage(stage).get("outputs", {}).items():
            lines.append(f"{stage + '.' + key:<24} {pipeline.run_dir / relative}")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
