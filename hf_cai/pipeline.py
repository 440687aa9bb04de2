"""The CAI pipeline: from prompts to a published, evaluated model in one resumable run.

Stages run in order ``sl_data → sft → pref_data → dpo`` (or ``pref_data → reward → grpo``), then
``eval → card → publish → space``. Each stage writes into ``run_dir/<stage>/`` and records its status, a fingerprint
of everything its output depends on, a hash of its outputs and its timing in ``run_dir/<stage>/stage.json`` and in
``run_dir/manifest.json``, the index of the run. On a rerun:

* a finished stage whose fingerprint is unchanged is skipped;
* an interrupted stage resumes (dataset shards, finished generation steps and training checkpoints are reused);
* a stage whose output would change runs again, and so does every stage after it, because their inputs are the
  outputs that changed. Settings that only change how a stage reports or where it keeps copies
  (:data:`OUTPUT_NEUTRAL_KEYS`) are left out of the fingerprint and never cause a re-run.

A re-run keeps what it can reuse: the dataset builders check their shards against their own fingerprint, and a stage
folder's other contents (checkpoints, ``final/``, results) are kept when they were made with the same fingerprint.
Anything deleted is named in a warning first. Both files are written atomically; a manifest that cannot be read is
rebuilt from the ``stage.json`` files, each checked against the outputs it names.

Stages call the library (builders, trainers, evaluation, hub); they do not re-implement it.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_cai.builders.sharding import FINGERPRINT_FILE, SHARDS_DIR, atomic_write_text, describe_changes
from hf_cai.constitution import Constitution
from hf_cai.gguf import embedded_model, hub_id_of, resolve_model
from hf_cai.hub.errors import TOKEN_PATTERN, is_secret_name

logger = logging.getLogger(__name__)

TRAINING_STAGES = ("sl_data", "sft", "pref_data")
RL_STAGES = {"dpo": ("dpo",), "grpo": ("reward", "grpo")}
TAIL_STAGES = ("eval", "card", "publish", "space")
ALL_STAGES = ("sl_data", "sft", "pref_data", "dpo", "reward", "grpo", "eval", "card", "publish", "space")
TINY_MODEL = "tiny"
MANIFEST_FILE = "manifest.json"
STAGE_FILE = "stage.json"
MANIFEST_FORMAT = 2
"""Format of ``manifest.json`` and ``stage.json``. Format 1 (no ``format`` key) had no per-stage records."""

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
        feedback_model: Model that gives AI feedback and judges the evaluation; defaults to ``model``. With an
            endpoint, the name of the model served at ``feedback_endpoint``.
        endpoint: Base URL of an OpenAI-compatible server (vLLM, TGI, ...) serving the base model, used instead of a
            local copy for SL-CAI generation and as the base side of the evaluation.
        endpoint_model: Model name to send to ``endpoint`` (defaults to ``model``).
        feedback_endpoint: Base URL of the server of ``feedback_model``; defaults to ``endpoint``. Without either, the
            feedback model runs locally.
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
    feedback_endpoint: str | None = None
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
        except FileNotFoundError:
            raise RecipeError(f"{source}: file not found") from None
        except yaml.YAMLError as error:
            raise RecipeError(f"{source}: YAML syntax error: {error}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: the recipe must be a mapping of keys to values")
    check_no_secrets(data, source)
    check_no_secrets(dict(overrides or {}), "override")
    valid = {f.name for f in dataclasses.fields(RecipeConfig)}
    sections = {f.name for f in dataclasses.fields(RecipeConfig) if f.type == "dict[str, Any]"}
    section_fields = _section_fields()
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in valid:
            raise RecipeError(f"override '{dotted}': unknown key{_suggest(section, valid)}")
        if key:
            if section not in sections:
                raise RecipeError(f"override '{dotted}': '{section}' is a single value, not a section of settings")
            if key not in section_fields[section]:
                raise RecipeError(
                    f"override '{dotted}': '{section}' has no setting '{key}'"
                    f"{_suggest(key, section_fields[section], f'{section}.')}"
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
    for section, fields in section_fields.items():
        for key in getattr(recipe, section):
            if key not in fields:
                raise RecipeError(f"{source}: unknown key '{section}.{key}'{_suggest(key, fields)}")
    recipe.stage_sequence()
    return recipe


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
        "publish": {"repo_id", "folder", "merge", "private", "revision", "create_pr"},
        "space": {"repo_id", "private", "hardware", "hf_cai_requirement"},
    }


# --------------------------------------------------------------------------- hashing and manifest
def hash_data(value: Any) -> str:
    """sha256 of JSON-serialisable data in canonical form."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def hash_path(path: Path, *, exclude: Sequence[str] = ("checkpoint-", "cache-")) -> str:
    """sha256 over the relative names and contents of the files under ``path``, leaving out training checkpoints
    and the ``cache-*.arrow`` files that ``datasets`` adds beside a saved dataset when a later stage reads it."""
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
    """``manifest.json`` of a run: the run's facts and, per stage, the record its ``stage.json`` also holds (status,
    fingerprint and what it was computed from, outputs, output hash, figures, timing).

    Written atomically (unique temporary file, fsync, rename). A manifest that cannot be read is rebuilt from the
    stage folders: a stage counts as done only when its recorded outputs still hash to the recorded value, and one
    whose outputs changed resumes. The unreadable file is kept beside it.

    Raises:
        PipelineError: the run directory comes from another format of hf_cai, or the manifest is unreadable and a
            stage folder holds work without a ``stage.json`` to tell what it is.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"format": MANIFEST_FORMAT, "run": {}, "stages": {}}
        if path.is_file():
            self.data = self._read()

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return self._rebuild(f"it is not valid JSON ({error})")
        stages = data.get("stages") if isinstance(data, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(r, dict) and "status" in r for r in stages.values()):
            return self._rebuild("it does not hold the stages of a run")
        found = data.get("format", 1)
        if found != MANIFEST_FORMAT:
            newer = isinstance(found, int) and found > MANIFEST_FORMAT
            raise PipelineError(
                f"{self.path.parent} was written by {'a newer' if newer else 'an older'} version of hf_cai (run "
                f"directory format {found}; this version reads format {MANIFEST_FORMAT}), so its stages cannot be "
                "checked against this version's fingerprints. "
                + (
                    "Upgrade hf_cai to continue it."
                    if newer
                    else "Set run_dir to a new folder to run the recipe again; the old folder stays as it is, and its "
                    "datasets and final models can still be published (hf-cai publish) or trained on."
                )
            )
        data.setdefault("run", {})
        return data

    def _rebuild(self, reason: str) -> dict[str, Any]:
        """A manifest made from the ``stage.json`` records of the stage folders, each checked against its outputs."""
        run_dir = self.path.parent
        stages: dict[str, Any] = {}
        for name in ALL_STAGES:
            folder = run_dir / name
            if not folder.is_dir() or not any(folder.iterdir()):
                continue
            record = read_stage_record(folder)
            if record is None:
                raise PipelineError(
                    f"{self.path} is unreadable ({reason}), and {folder} holds work without a {STAGE_FILE} to tell "
                    f"which settings made it (a run directory of an older hf_cai?). Set run_dir to a new folder, or "
                    f"delete {folder} so that the stage runs again."
                )
            if record.get("status") == "done" and not _outputs_intact(run_dir, record):
                record["status"] = "running"  # its outputs changed since: resume it with what is there
            stages[name] = record
        kept = self.path.with_name(f"{self.path.stem}.unreadable-{int(time.time())}.json")
        self.path.replace(kept)
        summary = ", ".join(f"{name} {record['status']}" for name, record in stages.items()) or "no stage yet"
        logger.warning(
            "%s was unreadable (%s); moved it to %s and rebuilt it from the stage folders: %s",
            self.path, reason, kept.name, summary,
        )
        self.data = {"format": MANIFEST_FORMAT, "run": {}, "stages": stages}
        self.save()
        return self.data


def read_stage_record(folder: Path) -> dict[str, Any] | None:
    """The record in ``folder/stage.json``, or ``None`` when there is none or it is unreadable."""
    path = folder / STAGE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT or "status" not in record:
        return None
    record.pop("format")
    return record


def _write_stage_record(folder: Path, record: Mapping[str, Any]) -> None:
    atomic_write_text(folder / STAGE_FILE, json.dumps({"format": MANIFEST_FORMAT, **record}, indent=2) + "\n")


def _outputs_intact(run_dir: Path, record: Mapping[str, Any]) -> bool:
    outputs = record.get("outputs") or {}
    return all((run_dir / v).exists() for v in outputs.values()) and record.get("output_hash") == _outputs_hash(
        run_dir, outputs
    )


def _outputs_hash(run_dir: Path, outputs: Mapping[str, str]) -> str:
    return hash_data({k: hash_path(run_dir / v) for k, v in sorted(outputs.items())})


def recorded_run(run_dir: str | Path) -> dict[str, Any]:
    """What a run directory's manifest records about the run (``base_model_id``, ``license``); empty when it has
    no readable manifest of this format."""
    try:
        data = json.loads((Path(run_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("run"), dict):
        return {}
    return data["run"]


@dataclass
class StageResult:
    """What a stage produced: the output paths (relative to the run dir) and figures for the summary."""

    outputs: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the pipeline
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
_REUSABLE = (STAGE_FILE, SHARDS_DIR, FINGERPRINT_FILE)
"""Stage-folder entries kept whatever the fingerprint: the builders check their shards against their own."""
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "file too large", "os error 28", "os error 27")
_NEARLY_FULL_BYTES = 16 << 20


class Pipeline:
    """Runs a :class:`RecipeConfig` in its run directory, skipping, resuming or re-running stages as needed."""

    def __init__(self, recipe: RecipeConfig):
        check_no_secrets(dataclasses.asdict(recipe), "recipe")
        self.recipe = recipe
        self.run_dir = Path(recipe.run_dir)
        self.manifest = Manifest(self.run_dir / MANIFEST_FILE)
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
    def fingerprint_inputs(self, stage: str) -> dict[str, Any]:
        """Everything ``stage``'s output depends on: the settings of its section (less :data:`OUTPUT_NEUTRAL_KEYS`),
        the models, endpoints and prompts it uses, the constitution, the seed, and the output hashes of the stages
        it reads."""
        recipe = self.recipe
        inputs: dict[str, Any] = {
            "stage": stage,
            "settings": {k: v for k, v in getattr(recipe, stage).items() if k not in OUTPUT_NEUTRAL_KEYS},
            # Every stage writes the constitution into its outputs (datasets, checkpoints, card, repository).
            "constitution": self.constitution.sha256,
        }
        prompts = {"prompts": recipe.prompts, "prompt_column": recipe.prompt_column, "max_prompts": recipe.max_prompts}
        if stage in ("sl_data", "sft", "pref_data", "dpo", "reward", "grpo", "eval"):
            inputs["seed"] = recipe.seed
        if stage == "sl_data":
            inputs |= {"generator": self._base_generator(), "prompts": prompts}
            inputs["helpful_prompts"] = recipe.helpful_prompts
        elif stage == "pref_data":
            inputs |= {"policy": self._local_base(), "judge": self._judge(), "prompts": prompts}
        elif stage in ("sft", "dpo", "reward", "grpo"):
            inputs |= {"base": self._base_model(), "qlora_profile": self.qlora_profile()}
            if stage == "grpo":
                inputs["prompts"] = prompts
        elif stage == "eval":
            inputs |= {
                "cai": self._local_base(),
                "base": self._base_generator(),
                "judge": self._judge(),
                # The held-out prompts are the ones training did not use.
                "held_out": {**prompts, "helpful_prompts": recipe.helpful_prompts,
                             "num_helpful_prompts": recipe.sl_data.get("num_helpful_prompts")},
            }
        elif stage in ("card", "publish", "space"):
            inputs |= {"base_model_id": self.base_model_hub_id(), "license": self.card_license(),
                       "repo_id": self.publish_repo_id(), "merge": bool(recipe.publish.get("merge", False))}
        upstream = [self._final_training_stage() if name == "final" else name for name in UPSTREAM[stage]]
        inputs["upstream"] = {name: self.manifest.stage(name).get("output_hash") for name in upstream}
        return inputs

    def fingerprint(self, stage: str) -> str:
        """Hash of :meth:`fingerprint_inputs`: equal fingerprints mean equal outputs."""
        return hash_data(self.fingerprint_inputs(stage))

    def _base_model(self) -> dict[str, Any]:
        model = {"model": self.recipe.model}
        if self.recipe.model == TINY_MODEL:
            model["tiny_pretrain_steps"] = self.recipe.tiny_pretrain_steps
        return model

    def _local_base(self) -> dict[str, Any]:
        return {**self._base_model(), "load_in_4bit": self.recipe.load_in_4bit}

    def _base_generator(self) -> dict[str, Any]:
        """The base model where generation asks for it: the endpoint's served model, else the local copy."""
        recipe = self.recipe
        if recipe.endpoint:
            return {"endpoint": recipe.endpoint, "endpoint_model": recipe.endpoint_model or recipe.model}
        return self._local_base()

    def _judge(self) -> dict[str, Any]:
        recipe = self.recipe
        if not recipe.feedback_model:
            return self._base_generator()
        endpoint = recipe.feedback_endpoint or recipe.endpoint
        if endpoint:
            return {"endpoint": endpoint, "endpoint_model": recipe.feedback_model}
        return {"model": recipe.feedback_model, "load_in_4bit": recipe.load_in_4bit}

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
        self._check_prompts(stages[start:stop])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.run_dir / "recipe.yaml", yaml.safe_dump(dataclasses.asdict(self.recipe), sort_keys=False)
        )
        self.manifest.data["run"] = self._facts()
        self.manifest.save()
        results: dict[str, StageResult] = {}
        for index, stage in enumerate(stages):
            if index < start or index >= stop:
                continue
            results[stage] = self._run_stage(stage, force=from_stage == stage)
        return results

    def _facts(self) -> dict[str, Any]:
        """What publishing the run later needs to know: the base model's Hub id (when it is one) and the license."""
        base = self.base_model_hub_id()
        return {
            "base_model_id": None if Path(base).expanduser().exists() else base,
            "license": self.card_license(),
            "constitution": self.constitution.name,
        }

    def _check_prompts(self, stages: Sequence[str]) -> None:
        """Read the prompt sources the stages will read, so a bad file stops the run before any work."""
        from hf_cai.builders import load_prompts

        recipe = self.recipe
        sources = []
        if {"sl_data", "pref_data", "grpo", "eval"} & set(stages):
            sources.append(("prompts", recipe.prompts, recipe.prompt_column))
        helpful = recipe.sl_data.get("helpful_prompts", recipe.helpful_prompts)
        if helpful is not None and "sl_data" in stages:
            sources.append(("helpful_prompts", helpful, "prompt"))
        for key, source, column in sources:
            try:
                load_prompts(source, column=column)
            except (ValueError, FileNotFoundError, TypeError) as error:
                raise RecipeError(f"{key}: {error}") from None

    def _run_stage(self, stage: str, *, force: bool) -> StageResult:
        record = self.manifest.stage(stage)
        inputs = self.fingerprint_inputs(stage)
        fingerprint = hash_data(inputs)
        if record.get("status") == "done" and record.get("fingerprint") == fingerprint and not force:
            logger.info("stage %s: up to date, skipped", stage)
            return StageResult(outputs=record.get("outputs", {}), metrics=record.get("metrics", {}))
        directory = self.stage_dir(stage)
        if record.get("fingerprint") not in (None, fingerprint):
            changes = describe_changes(record["inputs"], inputs) if "inputs" in record else "its fingerprint changed"
            logger.info("stage %s: %s; running it again", stage, changes)
        elif force and record.get("status") == "done":
            logger.info("stage %s: --from %s: running it again, reusing the work made with the same settings and "
                        "inputs (delete %s to start it from nothing)", stage, stage, directory)
        self._clear_stale_work(stage, directory, fingerprint)
        resumed = record.get("status") == "running" and record.get("fingerprint") == fingerprint
        logger.info("stage %s: %s", stage, "resuming" if resumed else "running")
        record.clear()
        record.update({"status": "running", "fingerprint": fingerprint, "inputs": inputs, "started": time.time(),
                       "resumed": resumed})
        directory.mkdir(parents=True, exist_ok=True)
        _write_stage_record(directory, record)
        self.manifest.save()
        started = time.perf_counter()
        from hf_cai.stages import STAGE_FUNCTIONS

        try:
            result = STAGE_FUNCTIONS[stage](self, directory)
        except Exception as error:
            reason = _out_of_space(error, directory)
            if reason is None:
                raise
            raise PipelineError(
                f"stage '{stage}': no space left while writing in {directory} ({reason}). Finished stages, dataset "
                "shards and complete checkpoints are kept; free some space on that disk and run the same command "
                "again to resume (an incomplete checkpoint is discarded then)."
            ) from error
        record.update(
            {
                "status": "done",
                "seconds": round(time.perf_counter() - started, 2),
                "outputs": result.outputs,
                "metrics": result.metrics,
                "output_hash": _outputs_hash(self.run_dir, result.outputs),
            }
        )
        _write_stage_record(directory, record)
        self.manifest.save()
        return result

    def _clear_stale_work(self, stage: str, directory: Path, fingerprint: str) -> None:
        """Delete what the stage folder holds from other settings or inputs (checkpoints, ``final/``, results),
        naming it first; keep everything when it was made with ``fingerprint``, and keep dataset shards, which their
        builder checks itself."""
        if not directory.is_dir():
            return
        previous = read_stage_record(directory)
        if previous is not None and previous.get("fingerprint") == fingerprint:
            return
        stale = sorted(p for p in directory.iterdir() if p.name not in _REUSABLE)
        if not stale:
            return
        logger.warning(
            "stage %s: deleting %s in %s: %s",
            stage,
            ", ".join(p.name for p in stale),
            directory,
            "made with other settings or inputs" if previous else f"no {STAGE_FILE} tells which settings made them",
        )
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _out_of_space(error: BaseException, directory: Path) -> str | None:
    """Why ``error`` means the disk ran out of room, or ``None``. Libraries often re-raise write failures without the
    errno (``torch.save`` raises a bare ``RuntimeError``), so the messages and the free space are checked too."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE_ERRNOS:
            return seen.strerror or errno.errorcode.get(seen.errno, str(seen.errno))
        text = str(seen).lower()
        for marker in _NO_SPACE_TEXTS:
            if marker in text:
                return marker
        seen = seen.__cause__ or seen.__context__
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    return f"{free} bytes free" if free < _NEARLY_FULL_BYTES else None


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
