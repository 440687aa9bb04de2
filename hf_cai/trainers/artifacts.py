"""What a CAI trainer writes next to every checkpoint and the final model: ``constitution.yaml`` and
``cai_training.json`` (keys documented in :mod:`hf_cai.trainers`)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE, TRAINING_RECORD
from hf_cai.constitution import Constitution
from hf_cai.gguf import hub_id_of, weights_source
from hf_cai.modeling import BASE_WEIGHTS_KEY

TRAINING_METADATA_FILE = TRAINING_RECORD
"""The training record's file name, under the name :mod:`hf_cai.trainers` exports."""
METADATA_SCHEMA_VERSION = 1

_LIBRARIES = ("hf-cai", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes")
_COMMON_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "optim",
    "gradient_checkpointing",
    "bf16",
    "fp16",
    "seed",
)


def write_training_artifacts(output_dir: str | Path, constitution: Constitution | None, record: dict[str, Any]) -> None:
    """Write ``constitution.yaml`` (when there is a constitution) and ``cai_training.json`` into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if constitution is not None:
        constitution.save(output_dir / CONSTITUTION_FILE)
    (output_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def name_adapter_base_by_hub_id(output_dir: str | Path) -> None:
    """Make a saved adapter's ``adapter_config.json`` name its base by Hub id when the base was loaded from a folder
    converted from a GGUF file, so that no saved adapter names a cache folder of this machine; the training record
    keeps the file the weights came from (see :func:`~hf_cai.modeling.adapter_base_model`)."""
    config_file = Path(output_dir) / "adapter_config.json"
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    hub_id = hub_id_of(base) if base else None
    if hub_id:
        config["base_model_name_or_path"] = hub_id
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def training_record(
    trainer: Any, *, stage: str, constitution: Constitution | None, hyperparameters: tuple[str, ...], **extra: Any
) -> dict[str, Any]:
    """The ``cai_training.json`` content for a trainer in its current state."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    base_name = _base_model_name(model)
    lora = _lora_settings(model)
    quantization = _quantization(model)
    args = trainer.args
    record: dict[str, Any] = {
        "schema_version": METADATA_SCHEMA_VERSION,
        "stage": stage,
        "method": ("qlora" if quantization else "lora") if lora else "full",
        "trainer": type(trainer).__name__,
        "base_model": hub_id_of(base_name) or base_name if base_name else None,
        # The weights behind base_model when they are not a Hub checkpoint's own (a converted GGUF file's).
        BASE_WEIGHTS_KEY: weights_source(base_name),
        "quantization": quantization,
        "lora": lora,
        "qlora_profile": getattr(args, "qlora_profile", None),
        "hyperparameters": {
            name: getattr(args, name) for name in _COMMON_HYPERPARAMETERS + hyperparameters if hasattr(args, name)
        },
        "effective_batch_size": args.per_device_train_batch_size
        * args.gradient_accumulation_steps
        * trainer.accelerator.num_processes,
        **extra,
        "dataset_sizes": {"train": _size(trainer.train_dataset), "eval": _size(trainer.eval_dataset)},
        "constitution": None
        if constitution is None
        else {"name": constitution.name, "version": constitution.version, "sha256": constitution.sha256},
        "global_step": trainer.state.global_step,
        "metrics": _final_train_metrics(trainer.state.log_history),
        "hardware": _hardware(trainer),
        "versions": _versions(),
    }
    return record


def _base_model_name(model: Any) -> str | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "name_or_path", None) or None


def _lora_settings(model: Any) -> dict[str, Any] | None:
    peft_config = getattr(model, "peft_config", None)
    if not peft_config:
        return None
    config = peft_config.get("default") or next(iter(peft_config.values()))
    target = config.target_modules
    return {
        "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
        "task_type": str(getattr(config.task_type, "value", config.task_type)),
        "r": getattr(config, "r", None),
        "alpha": getattr(config, "lora_alpha", None),
        "dropout": getattr(config, "lora_dropout", None),
        # PEFT expands "all-linear" into full module paths; the layer kinds (q_proj, ...) are what a reader needs.
        "target_modules": sorted({name.split(".")[-1] for name in target})
        if isinstance(target, (set, list, tuple))
        else target,
        "modules_to_save": sorted(config.modules_to_save) if getattr(config, "modules_to_save", None) else None,
    }


def _quantization(model: Any) -> str | None:
    if getattr(model, "is_loaded_in_4bit", False):
        config = getattr(model.config, "quantization_config", None)
        quant_type = (
            config.get("bnb_4bit_quant_type")
            if isinstance(config, dict)
            else getattr(config, "bnb_4bit_quant_type", None)
        )
        return quant_type or "4bit"
    if getattr(model, "is_loaded_in_8bit", False):
        return "int8"
    return None


def _size(dataset: Any) -> int | dict[str, int | None] | None:
    if dataset is None:
        return None
    if isinstance(dataset, dict):
        return {name: _size(part) for name, part in dataset.items()}
    return len(dataset) if hasattr(dataset, "__len__") else None


def _final_train_metrics(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """The end-of-training summary (``train_loss``, ``train_runtime``, ...) if training finished, else the last log."""
    summary = [entry for entry in log_history if "train_loss" in entry]
    logged = [entry for entry in log_history if "loss" in entry]
    chosen = summary[-1] if summary else (logged[-1] if logged else {})
    return {key: value for key, value in chosen.items() if isinstance(value, (int, float))}


def _hardware(trainer: Any) -> dict[str, Any]:
    import torch

    device = trainer.accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import platform

        name = platform.processor() or platform.machine() or device.type
    return {"device_type": device.type, "device_name": name, "num_processes": trainer.accelerator.num_processes}


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for library in _LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = None
    return versions
