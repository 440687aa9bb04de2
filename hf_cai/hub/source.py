"""Finding what to publish: a trainer output folder, a stage folder, or a whole pipeline run directory.

Accepted layouts:

* a **trainer output folder** (what ``hf_cai.trainers`` writes): a PEFT adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``) or a full model (``config.json`` + ``model*.safetensors``), its tokenizer files and
  chat template, ``constitution.yaml`` and ``cai_training.json`` (the training record; every key optional);
* a **stage folder** holding such an output in ``final/`` (``run_dir/dpo``);
* a **run directory** of ``hf_cai.pipeline``: the policy is the output of the last training stage found among
  ``grpo/final``, ``dpo/final``, ``sft/final``; the training records of ``sft``, ``dpo``, ``reward`` and ``grpo`` describe
  the stages, ``sl_data/dataset`` and ``pref_data/dataset`` (``DatasetDict.save_to_disk``) are the training data and
  ``eval/results.json`` the evaluation.

A trainer folder inside a run directory (``run_dir/dpo/final``) is read with the rest of its run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE, TRAINING_RECORD
from hf_cai.hub.errors import PublishError

POLICY_STAGES = ("grpo", "dpo", "sft")
"""Stages whose ``final/`` folder is a policy to publish, latest first."""
TRAINED_MODEL_STAGES = ("sft", "dpo", "reward", "grpo")
"""Stages that train a model (policy or reward model), whose training records describe the run, in pipeline order."""
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


@dataclass(frozen=True)
class TrainingOutput:
    """What a publication is made of, located on disk.

    Args:
        model_dir: Folder of the adapter or full model.
        is_adapter: ``True`` for a PEFT adapter, ``False`` for a full model.
        record: The training record (``cai_training.json``) of the policy; empty when the folder has none.
        stage_records: Training records of every stage of the run, in order (just ``record`` outside a run).
        constitution_path: ``constitution.yaml`` of the policy (or of the run), if present.
        sl_dataset_path: Saved SL-CAI dataset of the run, if any.
        preference_dataset_path: Saved RL-CAI preference dataset of the run, if any.
        eval_results_path: ``results.json`` of the run's evaluation, if any.
        run_dir: The run directory, when the policy belongs to one.
    """

    model_dir: Path
    is_adapter: bool
    record: dict[str, Any]
    stage_records: tuple[dict[str, Any], ...]
    constitution_path: Path | None
    sl_dataset_path: Path | None = None
    preference_dataset_path: Path | None = None
    eval_results_path: Path | None = None
    run_dir: Path | None = None

    def tokenizer_files(self) -> list[Path]:
        """The tokenizer and chat template files saved beside the model."""
        return [self.model_dir / name for name in TOKENIZER_FILES if (self.model_dir / name).is_file()]


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` holds a PEFT adapter or a full model (its config, at least)."""
    return (path / "adapter_config.json").is_file() or (path / "config.json").is_file()


def read_json(path: Path) -> Any:
    """A JSON file, or :class:`PublishError` naming the file and the position of the syntax error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PublishError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); fix or remove the file"
        ) from error


def _record(folder: Path) -> dict[str, Any]:
    path = folder / TRAINING_RECORD
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise PublishError(f"{path}: expected a JSON object (the training record), got {type(data).__name__}")
    return data


def _run_dir_of(model_dir: Path) -> Path | None:
    """The run directory above ``run_dir/<stage>/final``, recognised by its ``manifest.json``."""
    if model_dir.name == "final" and model_dir.parent.name in POLICY_STAGES:
        candidate = model_dir.parent.parent
        if (candidate / "manifest.json").is_file():
            return candidate
    return None


def _stage_finished(run_dir: Path, stage: str) -> bool:
    """False when the run's ``manifest.json`` records ``stage`` as not done (interrupted or re-running)."""
    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return True
    record = read_json(manifest).get("stages", {}).get(stage)
    return record is None or record.get("status") == "done"


def locate_training_output(source: str | Path) -> TrainingOutput:
    """Find the model, training records, constitution, datasets and evaluation of a trainer output or run directory.

    Raises:
        PublishError: ``source`` is missing, holds no model, or the adapter / weight files are missing.
    """
    source = Path(source)
    if not source.is_dir():
        raise PublishError(
            f"{source}: no such folder. Pass a trainer output folder (with adapter_config.json or config.json) or a "
            "pipeline run directory."
        )
    run_dir: Path | None
    if is_model_dir(source):
        model_dir, run_dir = source, _run_dir_of(source)
    elif is_model_dir(source / "final"):
        model_dir, run_dir = source / "final", _run_dir_of(source / "final")
    else:
        found = next(
            (
                source / stage / "final"
                for stage in POLICY_STAGES
                if is_model_dir(source / stage / "final") and _stage_finished(source, stage)
            ),
            None,
        )
        if found is None:
            raise PublishError(
                f"{source}: found no model to publish. Expected a trainer output folder (adapter_config.json or "
                f"config.json), a stage folder with final/, or a run directory with "
                f"{', '.join(f'{s}/final' for s in POLICY_STAGES)}."
            )
        model_dir, run_dir = found, source

    is_adapter = (model_dir / "adapter_config.json").is_file()
    _check_weights(model_dir, is_adapter)
    record = _record(model_dir)
    if run_dir is not None:
        stage_records = tuple(
            {"stage": stage, **_record(run_dir / stage / "final")}
            for stage in TRAINED_MODEL_STAGES
            if (run_dir / stage / "final").is_dir()
        )
    else:
        stage_records = (record,) if record else ()
    constitution_path = next(
        (
            folder / CONSTITUTION_FILE
            for folder in (model_dir, run_dir)
            if folder and (folder / CONSTITUTION_FILE).is_file()
        ),
        None,
    )

    def optional(relative: str) -> Path | None:
        return run_dir / relative if run_dir is not None and (run_dir / relative).exists() else None

    return TrainingOutput(
        model_dir=model_dir,
        is_adapter=is_adapter,
        record=record,
        stage_records=stage_records,
        constitution_path=constitution_path,
        sl_dataset_path=optional("sl_data/dataset"),
        preference_dataset_path=optional("pref_data/dataset"),
        eval_results_path=optional("eval/results.json"),
        run_dir=run_dir,
    )


def _check_weights(model_dir: Path, is_adapter: bool) -> None:
    if is_adapter:
        if (model_dir / "adapter_model.safetensors").is_file():
            return
        if (model_dir / "adapter_model.bin").is_file():
            raise PublishError(
                f"{model_dir}: the adapter weights are in adapter_model.bin (pickle); only safetensors are published. "
                "Save the adapter again with model.save_pretrained(folder, safe_serialization=True)."
            )
        raise PublishError(
            f"{model_dir}: adapter_config.json is there but adapter_model.safetensors is missing; the training may "
            "not have finished saving. Run the training (or trainer.save_model) again."
        )
    if not list(model_dir.glob("model*.safetensors")):
        raise PublishError(
            f"{model_dir}: config.json is there but no model*.safetensors weights; only safetensors are published. "
            "Save the model with model.save_pretrained(folder, safe_serialization=True)."
        )
