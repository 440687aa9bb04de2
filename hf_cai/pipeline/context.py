"""What the stages of a run share, and what each one hands back.

A stage receives the :class:`RunContext` of its run (the :class:`~hf_cai.pipeline.runner.Pipeline` is one) and returns
a :class:`StageResult`. The context answers the questions every stage asks: which recipe, which constitution, which
base model, where the outputs of the stages before it are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.gguf import embedded_model, hub_id_of, resolve_model
from hf_cai.pipeline.errors import PipelineError
from hf_cai.pipeline.manifest import MANIFEST_FILE, Manifest
from hf_cai.pipeline.recipe import TINY_MODEL, RecipeConfig
from hf_cai.redaction import register_secret


@dataclass
class StageResult:
    """What a stage produced: the output paths (relative to the run dir), figures for the summary table, and notes:
    sentences that say what the figures mean for this run (a judge near chance, rows the quality gates left out),
    printed under the table and kept in the manifest."""

    outputs: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class RunContext:
    """A recipe's run directory, its manifest, and the models and settings the recipe names, resolved once."""

    def __init__(self, recipe: RecipeConfig):
        self.recipe = recipe
        self.run_dir = Path(recipe.run_dir)
        self.manifest = Manifest(self.run_dir / MANIFEST_FILE)
        self._constitution: Constitution | None = None
        # From the start, not when an endpoint is first asked: a run whose endpoint stages are done still publishes.
        register_secret(self.endpoint_api_key())

    def endpoint_api_key(self) -> str | None:
        """The endpoints' API key: the value of the environment variable ``endpoint_api_key_env`` names, registered
        as a secret (:mod:`hf_cai.redaction`), so that no message or publication of the run holds it."""
        variable = self.recipe.endpoint_api_key_env
        return os.environ.get(variable) if variable else None

    @property
    def constitution(self) -> Constitution:
        """The recipe's constitution, read once."""
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
        """The Hub id the base model came from, as model cards name it (the recipe's model where it has none)."""
        if self.recipe.model_hub_id:
            return self.recipe.model_hub_id
        if self.recipe.model == TINY_MODEL:
            return "hf-cai/tiny-chat"
        return hub_id_of(self.recipe.model) or self.recipe.model

    def card_license(self) -> str | None:
        """The license of the published model: ``card.license``, else the embedded model's own license, or Apache-2.0
        for the tiny model built here."""
        if self.recipe.card.get("license"):
            return self.recipe.card["license"]
        if self.recipe.model == TINY_MODEL:
            return "apache-2.0"
        embedded = embedded_model(self.recipe.model)
        return embedded.license if embedded else None

    def qlora_profile(self) -> str:
        """The recipe's QLoRA profile, or one chosen from the hardware: ``cpu`` without CUDA, else by GPU memory."""
        if self.recipe.qlora_profile:
            return self.recipe.qlora_profile
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        gigabytes = torch.cuda.get_device_properties(0).total_memory / 2**30
        for name, size in (("8gb", 9), ("12gb", 13), ("16gb", 17)):
            if gigabytes < size:
                return name
        return "24gb"

    def publish_repo_id(self) -> str:
        """``publish.repo_id``, or a local name for a run published to a folder."""
        return self.recipe.publish.get("repo_id") or f"local/{self.run_dir.name}-cai"

    def stage_dir(self, stage: str) -> Path:
        """The folder ``stage`` writes into."""
        return self.run_dir / stage

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, as a stage names its outputs."""
        return path.relative_to(self.run_dir).as_posix()

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

    def final_training_stage(self) -> str:
        """The last training stage of the recipe's ``rl_method``: its model is the one the run ends with."""
        return "dpo" if self.recipe.rl_method == "dpo" else "grpo"

    def final_model(self) -> Path:
        """The model the run ends with, as its last training stage saved it."""
        return self.output(self.final_training_stage(), "model")
