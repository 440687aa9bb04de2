"""``hf-cai train sft | dpo | reward | grpo --config cfg.yaml [--key value ...]``: one training stage, on TRL's own
parser.

The settings are those of TRL's training scripts, under TRL's names, parsed by ``trl.TrlParser``: TRL's
``ScriptArguments`` (``dataset_name``, ``dataset_config``, ``dataset_train_split``, ``dataset_test_split``; for GRPO
those of TRL's ``grpo.py``, plus ``feedback_model_name_or_path``: see :mod:`hf_cai.cli.grpo_rewards`), the stage's config
(``CAISFTConfig``, ``CAIDPOConfig``, ``CAIRewardConfig``, ``CAIGRPOConfig``: every field of TRL's ``SFTConfig`` /
``DPOConfig`` / ``RewardConfig`` / ``GRPOConfig`` plus ``constitution``, ``qlora_profile``, ``soft_labels``) and
``trl.ModelConfig`` (``model_name_or_path``, ``use_peft``, ``lora_r``, ``load_in_4bit``, ...). Each can be set in the
YAML file and on the command line (``--learning_rate 1e-4``), the command line winning; a config written for TRL's
``sft.py`` or ``dpo.py`` runs unchanged. Unknown keys are an error. Example::

    model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct
    dataset_name: runs/demo/sl-cai     # a builder output folder, a saved dataset, a data file or a Hub id
    constitution: harmless
    qlora_profile: 8gb
    output_dir: runs/demo/sft
    num_train_epochs: 1

A ``qlora_profile`` fills only the settings given neither in the YAML nor on the command line, even where a given
value equals TRL's default; LoRA settings given (``lora_r``, ``lora_alpha``, ...) replace the profile's. Without a
profile, ``use_peft`` and the quantisation settings mean what they mean in TRL's scripts (``trl.get_peft_config``,
``trl.get_quantization_config``).

For SFT, ``assistant_only_loss`` defaults to true here (train on the revisions, not on the red-team prompts). The
train split defaults to ``train_sft`` (SFT) or ``train_prefs`` (DPO, reward, GRPO) when the dataset has it, else
``train``; an evaluation split is used when ``dataset_test_split`` is given. ``model_name_or_path`` may be a saved
adapter, such as the SFT stage's output folder: DPO and reward training then continue it (DPO against a frozen copy
of it as the reference; see :mod:`hf_cai.trainers.dpo` and :mod:`hf_cai.trainers.reward`), and GRPO trains it
further against the reward.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass
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
    "grpo": ("train_prefs", "train"),
}
STAGES = tuple(_DEFAULT_TRAIN_SPLITS)
RENAMED_KEYS = {"dataset": "dataset_name", "train_split": "dataset_train_split", "eval_split": "dataset_test_split"}
"""Keys of earlier hf-cai training configs, and the TRL names that replace them."""

# ModelConfig's LoRA settings and the LoraConfig fields they set (as trl.get_peft_config does).
_LORA_FIELDS = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_target_parameters": "target_parameters",
    "lora_modules_to_save": "modules_to_save",
    "lora_task_type": "task_type",
    "use_rslora": "use_rslora",
    "use_dora": "use_dora",
}
# ModelConfig's settings that TRL's scripts pass to from_pretrained, and their keyword there.
_MODEL_INIT_FIELDS = {"model_revision": "revision", "attn_implementation": "attn_implementation", "dtype": "dtype"}
# ModelConfig's settings of how the model is loaded, which a qlora_profile decides (load_in_4bit aside).
_PROFILE_LOADING_FIELDS = (
    "model_revision",
    "dtype",
    "attn_implementation",
    "load_in_8bit",
    "bnb_4bit_quant_type",
    "use_bnb_nested_quant",
    "bnb_4bit_quant_storage",
)
_UNSET = object()


@dataclass
class TrainingSetup:
    """A training stage as ``hf-cai train`` parsed it: TRL's three argument dataclasses and what the user gave.

    Args:
        script_args: TRL's ``ScriptArguments`` (the dataset and its splits).
        config: The stage's CAI config, constructed from the settings given only, so that a ``qlora_profile`` fills
            the rest.
        model_args: TRL's ``ModelConfig`` (the model, PEFT and quantisation settings).
        given: The names of the settings given in the YAML file or on the command line.
    """

    script_args: Any
    config: Any
    model_args: Any
    given: frozenset[str]


def _config_class(stage: str):
    from hf_cai.trainers import CAIDPOConfig, CAIGRPOConfig, CAIRewardConfig, CAISFTConfig

    return {"sft": CAISFTConfig, "dpo": CAIDPOConfig, "reward": CAIRewardConfig, "grpo": CAIGRPOConfig}[stage]


def _trainer_class(stage: str):
    from hf_cai.trainers import CAIDPOTrainer, CAIGRPOTrainer, CAIRewardTrainer, CAISFTTrainer

    return {"sft": CAISFTTrainer, "dpo": CAIDPOTrainer, "reward": CAIRewardTrainer, "grpo": CAIGRPOTrainer}[stage]


def _script_arguments_class(stage: str):
    if stage == "grpo":
        from hf_cai.cli.grpo_rewards import GRPORewardArguments

        return GRPORewardArguments
    from trl import ScriptArguments

    return ScriptArguments


def _parser(stage: str):
    """TRL's parser of a training script's arguments: script arguments, the stage's CAI config, ``ModelConfig``.

    ``load_in_4bit`` is a field of both the CAI config and ``ModelConfig``: one option sets it (see
    :func:`read_training_config`).
    """
    from trl import ModelConfig, TrlParser

    return TrlParser(
        (_script_arguments_class(stage), _config_class(stage), ModelConfig),
        prog=f"hf-cai train {stage}",
        conflict_handler="resolve",
    )


def _read_yaml(path: str) -> dict[str, Any]:
    location = Path(path)
    if not location.is_file():
        raise FileNotFoundError(f"training config not found: {location}")
    try:
        data = yaml.safe_load(location.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{location}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise InputError(f"{location}: expected a mapping of settings, got {type(data).__name__}")
    return data


def _refuse_renamed(keys: Any, where: str) -> None:
    renamed = [key for key in keys if key in RENAMED_KEYS]
    if renamed:
        raise InputError(
            f"{where}: {', '.join(f'{key} is now {RENAMED_KEYS[key]}' for key in renamed)} (TRL's name); rename "
            f"{'it' if len(renamed) == 1 else 'them'}"
        )


def read_training_config(stage: str, argv: list[str]) -> TrainingSetup:
    """Parse ``[--config cfg.yaml] [--key value ...]`` as TRL's scripts do, into a :class:`TrainingSetup`.

    The YAML's ``env`` mapping sets environment variables, as in TRL. Unknown keys raise ``ValueError`` naming the
    closest valid key, before any setting is checked; hf-cai's earlier names (``dataset``, ``train_split``,
    ``eval_split``) are refused with the TRL name to use.
    """
    from trl import ModelConfig

    script_arguments = _script_arguments_class(stage)
    argv = list(argv)
    data: dict[str, Any] = {}
    where = "command line"
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 == len(argv):
            raise InputError("--config needs the path of a YAML file")
        where = argv[index + 1]
        data = _read_yaml(where)
        del argv[index : index + 2]
    parser = _parser(stage)
    fields = {f.name for cls in (script_arguments, _config_class(stage), ModelConfig) for f in dataclasses.fields(cls)}
    _refuse_renamed(data, where)
    check_keys([key for key in data if key != "env"], fields, where, error=InputError)
    for name, value in (data.pop("env", None) or {}).items():
        os.environ[name] = str(value)
    # Every setting starts unset: what is not unset after parsing was given in the YAML or on the command line.
    parser.set_defaults_with_config(**dict.fromkeys(fields, _UNSET) | data)
    namespace, unknown = parser.parse_known_args(argv)
    options = [option.split("=")[0].lstrip("-").replace("-", "_") for option in unknown if option.startswith("--")]
    _refuse_renamed(options, "command line")
    if unknown:
        check_keys(options or unknown, fields, "command line", error=InputError)
        raise InputError(f"command line: unexpected argument(s) {' '.join(unknown)}")
    values = {name: value for name, value in vars(namespace).items() if value is not _UNSET}
    missing = [key for key in ("model_name_or_path", "dataset_name") if key not in values]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    if stage == "sft":
        values.setdefault("assistant_only_loss", True)

    def given_fields(cls, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls) if f.init} - set(leave_out)
        return {name: value for name, value in values.items() if name in names}

    profile = values.get("qlora_profile")
    try:
        script_args = script_arguments(**given_fields(script_arguments))
        model_args = ModelConfig(**given_fields(ModelConfig))
        # ModelConfig's load_in_4bit is the profile's too; without a profile it becomes TRL's quantization_config.
        config = _config_class(stage)(
            **given_fields(_config_class(stage), leave_out=() if profile else ("load_in_4bit",))
        )
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: {error}") from None
    if profile:
        clashing = [name for name in _PROFILE_LOADING_FIELDS if name in values]
        if clashing or values.get("use_peft") is False:
            raise InputError(
                f"{where}: qlora_profile '{profile}' loads the model itself (4-bit NF4 unless load_in_4bit is false) "
                f"and trains a LoRA adapter, so {', '.join(clashing) or 'use_peft: false'} cannot be used with it; "
                "drop the setting, or the profile"
            )
    return TrainingSetup(script_args, config, model_args, frozenset(values))


def trainer_model_arguments(setup: TrainingSetup) -> dict[str, Any]:
    """``peft_config`` and ``quantization_config`` for the trainer, from ``ModelConfig`` as TRL's scripts make them.

    With a ``qlora_profile``, the adapter is the profile's with the LoRA settings given replacing its own, and the
    profile loads the model (``quantization_config`` stays ``None``). Without one, the trainer gets
    ``trl.get_peft_config`` and ``trl.get_quantization_config``, and the loading settings given (``model_revision``,
    ``attn_implementation``, ``dtype``) go to ``model_init_kwargs``, whose own entries win. Sets
    ``setup.config.model_init_kwargs``.
    """
    from trl import get_peft_config, get_quantization_config

    from hf_cai.trainers.qlora import peft_config_for

    config, model_args, given = setup.config, setup.model_args, setup.given
    if config.qlora_profile is None:
        loading = {keyword: getattr(model_args, name) for name, keyword in _MODEL_INIT_FIELDS.items() if name in given}
        if loading:
            config.model_init_kwargs = {**loading, **(config.model_init_kwargs or {})}
        return {"peft_config": get_peft_config(model_args), "quantization_config": get_quantization_config(model_args)}
    lora = {field: getattr(model_args, name) for name, field in _LORA_FIELDS.items() if name in given}
    if not lora:
        return {"peft_config": None, "quantization_config": None}  # the profile's adapter, or the saved one continued
    task = "SEQ_CLS" if isinstance(config, _config_class("reward")) else "CAUSAL_LM"
    return {
        "peft_config": dataclasses.replace(peft_config_for(config.qlora_profile, task), **lora),
        "quantization_config": None,
    }


def load_split(source: str, split: str | None, *, stage: str, config_name: str | None = None):
    """One split of the dataset named by ``dataset_name`` (see the module docstring); ``split=None`` picks the stage's
    default. Read by :func:`hf_cai.dataset_reader.read_dataset`, the reader of prompts and evaluation sets too."""
    from hf_cai.dataset_reader import read_dataset

    return read_dataset(source, split=[split] if split else _DEFAULT_TRAIN_SPLITS[stage], config_name=config_name)


def _load_tokenizer(model_name_or_path: str, *, trust_remote_code: bool):
    """The model's tokenizer; for an adapter saved without one, its base model's."""
    from hf_cai.modeling import ModelLoadError, adapter_base_model, is_peft_adapter, load_tokenizer

    folder = Path(model_name_or_path)
    # A local adapter folder without tokenizer files goes straight to its base: on such a folder transformers 5.0
    # raises an ImportError (about protobuf), not the missing-file error that later releases raise.
    if folder.is_dir() and not (folder / "tokenizer_config.json").is_file() and is_peft_adapter(model_name_or_path):
        return load_tokenizer(adapter_base_model(model_name_or_path), trust_remote_code=trust_remote_code)
    try:
        return load_tokenizer(model_name_or_path, trust_remote_code=trust_remote_code)
    except ModelLoadError:
        if not is_peft_adapter(model_name_or_path):
            raise
        return load_tokenizer(adapter_base_model(model_name_or_path), trust_remote_code=trust_remote_code)


def _train(args: argparse.Namespace) -> int:
    from hf_cai.modeling import ModelLoadError

    if any(option in ("-h", "--help") for option in args.settings):
        _parser(args.stage).print_help()
        return 0
    setup = read_training_config(args.stage, args.settings)
    script_args, config, model_args = setup.script_args, setup.config, setup.model_args
    unsupported = [name for name in ("dataset_streaming", "ignore_bias_buffers") if getattr(script_args, name)]
    if unsupported:
        raise CommandError(f"{' and '.join(unsupported)}: not supported by hf-cai train; drop the setting")
    source, config_name = script_args.dataset_name, script_args.dataset_config
    train_split = script_args.dataset_train_split if "dataset_train_split" in setup.given else None
    train_dataset = load_split(source, train_split, stage=args.stage, config_name=config_name)
    eval_dataset = (
        load_split(source, script_args.dataset_test_split, stage=args.stage, config_name=config_name)
        if "dataset_test_split" in setup.given
        else None
    )
    try:
        tokenizer = _load_tokenizer(model_args.model_name_or_path, trust_remote_code=config.trust_remote_code)
        stage_arguments = {}
        if args.stage == "grpo":
            from hf_cai.cli.grpo_rewards import reward_functions

            stage_arguments["reward_funcs"] = reward_functions(script_args, config)
        trainer = _trainer_class(args.stage)(
            model=model_args.model_name_or_path,
            args=config,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            **trainer_model_arguments(setup),
            **stage_arguments,
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
        help="train one CAI stage (SFT, DPO, a reward model or GRPO) with TRL's settings, from a YAML file and options",
        description="Train one stage with the settings of TRL's training scripts, under TRL's names (TRL's "
        "ScriptArguments (for GRPO: its reward model, reward functions and feedback model), the stage's config: TRL's "
        "plus constitution, qlora_profile, soft_labels, and ModelConfig), "
        "from a YAML file (--config) and options (--learning_rate 1e-4), the options winning. Unknown keys are "
        "refused with the closest valid key. `hf-cai train sft --help` lists every setting.",
    )
    parser.add_argument("stage", choices=STAGES, help="the training stage")
    parser.add_argument(
        "settings",
        nargs=argparse.REMAINDER,
        help="--config cfg.yaml and any setting as --name value (TRL's names, e.g. --dataset_name, --max_steps)",
    )
    parser.set_defaults(handler=_train)
