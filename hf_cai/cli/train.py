"""``hf-cai train sft | dpo | reward --config cfg.yaml``: one training stage from a YAML file.

The YAML holds the fields of :class:`TrainingInputs` (model, dataset, splits) and of the stage's config class
(``CAISFTConfig``, ``CAIDPOConfig``, ``CAIRewardConfig``: every TRL field plus ``constitution``, ``qlora_profile``,
``soft_labels``). Unknown keys are an error. Example::

    model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
    dataset: runs/demo/sl-cai          # a builder output folder, a saved dataset, a data file or a Hub id
    constitution: harmless
    qlora_profile: 8gb
    output_dir: runs/demo/sft
    num_train_epochs: 1
    learning_rate: 2.0e-4

For SFT, ``assistant_only_loss`` defaults to true here (train on the revisions, not on the red-team prompts).
``model_name_or_path`` may be a saved adapter, such as the SFT stage's output folder: DPO and reward training then
continue it (DPO against a frozen copy of it as the reference; see :mod:`hf_cai.trainers.dpo` and
:mod:`hf_cai.trainers.reward`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_cai.cli import CommandError, check_keys
from hf_cai.errors import InputError

logger = logging.getLogger(__name__)

_DEFAULT_TRAIN_SPLITS = {
    "sft": ("train_sft", "train"),
    "dpo": ("train_prefs", "train"),
    "reward": ("train_prefs", "train"),
}


@dataclass
class TrainingInputs:
    """What to train on, besides the trainer config.

    Args:
        model_name_or_path: Hub id or local folder of the model to train (a sequence classifier is made from it for
            ``reward``), or of a saved PEFT adapter (e.g. the SFT output) to train further.
        dataset: A builder output folder (holding ``dataset/``), a folder written by ``save_to_disk``, a
            ``.json``/``.jsonl``/``.parquet``/``.csv`` file, or a Hub dataset id / data folder for ``load_dataset``.
        dataset_config: Configuration name of a Hub dataset.
        train_split: Split to train on. Default: ``train_sft`` (SFT) or ``train_prefs`` (DPO, reward) when the dataset
            has it, else ``train``.
        eval_split: Split to evaluate on; none by default.
    """

    model_name_or_path: str = field(
        metadata={"help": "Hub id or local folder of the model to train, or of a saved adapter to train further."}
    )
    dataset: str = field(metadata={"help": "Builder output folder, saved dataset, data file or Hub dataset id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    train_split: str | None = field(default=None, metadata={"help": "Split to train on."})
    eval_split: str | None = field(default=None, metadata={"help": "Split to evaluate on."})


def _config_class(stage: str):
    from hf_cai.trainers import CAIDPOConfig, CAIRewardConfig, CAISFTConfig

    return {"sft": CAISFTConfig, "dpo": CAIDPOConfig, "reward": CAIRewardConfig}[stage]


def _trainer_class(stage: str):
    from hf_cai.trainers import CAIDPOTrainer, CAIRewardTrainer, CAISFTTrainer

    return {"sft": CAISFTTrainer, "dpo": CAIDPOTrainer, "reward": CAIRewardTrainer}[stage]


def read_training_config(stage: str, path: str | Path, overrides: dict[str, Any] | None = None):
    """Parse a training YAML into ``(TrainingInputs, stage config)``.

    Unknown keys raise ``ValueError`` naming the closest valid key, before any setting is checked.
    """
    from transformers import HfArgumentParser

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    data |= {key: value for key, value in (overrides or {}).items() if value is not None}
    config_class = _config_class(stage)
    known = {f.name for cls in (TrainingInputs, config_class) for f in dataclasses.fields(cls) if f.init}
    check_keys(data, known, str(path), error=InputError)
    missing = [key for key in ("model_name_or_path", "dataset") if key not in data]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}")
    if stage == "sft":
        data.setdefault("assistant_only_loss", True)
    try:
        inputs, config = HfArgumentParser((TrainingInputs, config_class)).parse_dict(data)
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None
    return inputs, config


def load_split(source: str, split: str | None, *, stage: str, config_name: str | None = None):
    """One split of a dataset given as in :class:`TrainingInputs`; ``split=None`` picks the stage's default.

    Read by :func:`hf_cai.dataset_reader.read_dataset`, the reader of prompts and evaluation sets too."""
    from hf_cai.dataset_reader import read_dataset

    return read_dataset(source, split=[split] if split else _DEFAULT_TRAIN_SPLITS[stage], config_name=config_name)


def _load_tokenizer(model_name_or_path: str, *, trust_remote_code: bool):
    """The model's tokenizer; for an adapter saved without one, its base model's."""
    from hf_cai.modeling import ModelLoadError, adapter_base_model, is_peft_adapter, load_tokenizer

    try:
        return load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    except ModelLoadError:
        if not is_peft_adapter(model_name_or_path):
            raise
        return load_tokenizer(adapter_base_model(model_name_or_path), trust_remote_code=trust_remote_code)


def _train(args: argparse.Namespace) -> int:
    from hf_cai.modeling import ModelLoadError

    overrides = {"output_dir": args.output_dir, "max_steps": args.max_steps}
    inputs, config = read_training_config(args.stage, args.config, overrides)
    train_dataset = load_split(inputs.dataset, inputs.train_split, stage=args.stage, config_name=inputs.dataset_config)
    eval_dataset = (
        load_split(inputs.dataset, inputs.eval_split, stage=args.stage, config_name=inputs.dataset_config)
        if inputs.eval_split
        else None
    )
    try:
        tokenizer = _load_tokenizer(inputs.model_name_or_path, trust_remote_code=config.trust_remote_code)
        trainer = _trainer_class(args.stage)(
            model=inputs.model_name_or_path,
            args=config,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
        )
    except ModelLoadError as error:
        raise CommandError(str(error)) from None
    result = trainer.train()
    trainer.save_model()
    print(
        f"trained {args.stage} for {result.global_step} steps (train loss {result.training_loss:.4f}); "
        f"saved to {config.output_dir}"
    )
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one CAI stage (SFT, DPO or a reward model) from a YAML file",
        description="Train one stage from a YAML file holding the model, the dataset and the trainer settings (every "
        "TRL setting of the stage, plus constitution, qlora_profile, soft_labels). Unknown keys are refused with the "
        "closest valid key.",
    )
    parser.add_argument("stage", choices=["sft", "dpo", "reward"], help="the training stage")
    parser.add_argument("--config", required=True, help="YAML with the model, dataset and trainer settings")
    parser.add_argument("--output-dir", help="overrides output_dir of the YAML")
    parser.add_argument("--max-steps", type=int, help="overrides max_steps of the YAML")
    parser.set_defaults(handler=_train)
