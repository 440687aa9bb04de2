"""What every CAI trainer adds to its TRL parent.

The CAI trainers are ``class CAIxTrainer(CAITrainerMixin, xTrainer)``: TRL does the training; the mixin adds the
constitution (resolved, checked against the dataset's provenance, saved next to every checkpoint), QLoRA model
loading from a profile, data checks that fail before the first step, the SL-CAI/RL-CAI dataset adapters, CAI tags
for the model card and the ``cai_training.json`` record.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar

from hf_cai.constitution import Constitution
from hf_cai.modeling import check_4bit_support, is_peft_adapter
from hf_cai.trainers.artifacts import training_record, write_training_artifacts
from hf_cai.trainers.data import (
    CHOSEN_PROB,
    ChosenProbCollator,
    check_chat_template,
    check_chosen_prob_column,
    check_preference_columns,
    column_names,
    drop_string_prompt,
    first_example,
    named_splits,
    resolve_soft_labels,
)
from hf_cai.trainers.qlora import (
    QLORA_PROFILES,
    adapter_base_model,
    apply_profile_defaults,
    continue_adapter,
    count_trainable,
    get_profile,
    load_model_for_training,
    peft_config_for,
)

logger = logging.getLogger(__name__)

CAI_TAGS = ["constitutional-ai", "hf-cai"]
"""Model-card tags every CAI trainer adds to TRL's (``lora`` or ``qlora`` is added when an adapter is trained)."""

DATASET_CONSTITUTION_COLUMN = "constitution_sha256"


def constitution_field() -> Any:
    """The ``constitution`` field shared by the CAI training configs."""
    return field(
        default=None,
        metadata={
            "help": "Built-in constitution name or path of a constitution file (YAML/JSON) the training data was made "
            "with. It is saved as `constitution.yaml` next to every checkpoint and the final model, and its sha256 "
            "goes into `cai_training.json`. The trainer's `constitution=` argument takes precedence. When unset, a "
            "built-in constitution whose sha256 matches the dataset's `constitution_sha256` column is used."
        },
    )


def qlora_profile_field() -> Any:
    """The ``qlora_profile`` field shared by the CAI training configs."""
    return field(
        default=None,
        metadata={
            "help": "Memory profile for QLoRA training: `8gb`, `12gb`, `16gb`, `24gb` or `cpu` (see "
            "`hf_cai.trainers.qlora`). It fills the learning rate, batch size, gradient accumulation, max length, "
            "optimizer, precision, gradient checkpointing and checkpoint interval settings the config was not given "
            "explicitly; a model given by name is loaded in 4-bit NF4 (see `load_in_4bit`), and the profile's LoRA "
            "adapter is used unless `peft_config` is passed or the model is a saved adapter. `None` trains exactly "
            "as TRL does.",
            "choices": list(QLORA_PROFILES),
        },
    )


def load_in_4bit_field() -> Any:
    """The ``load_in_4bit`` field shared by the CAI training configs."""
    return field(
        default=None,
        metadata={
            "help": "Whether a model the trainer loads by name with a `qlora_profile` is quantised to 4-bit NF4 "
            "(QLoRA). `None` follows the profile (4-bit for every built-in profile); `False` trains plain LoRA on an "
            "unquantised base. Without a profile, `True` is refused: pass TRL's `quantization_config` instead."
        },
    )


def soft_labels_field() -> Any:
    """The ``soft_labels`` field shared by the preference training configs."""
    return field(
        default=None,
        metadata={
            "help": "Train on the soft AI-feedback labels of a `chosen_prob` column (probability that `chosen` is "
            "better): loss = -p log sigmoid(x) - (1 - p) log sigmoid(-x). `None` uses them when the column exists; "
            "`False` ignores the column (hard labels, exactly TRL's loss); `True` requires it."
        },
    )


class CAIConfigMixin:
    """What the CAI training configs share: the QLoRA profile fills only the settings the user did not set.

    Put it first among the bases of a TRL config dataclass that declares ``qlora_profile`` and ``load_in_4bit``.
    The fields given to the constructor (by keyword or position) are recorded before the dataclass ``__init__``
    runs, so a value the user set is kept even when it equals TRL's default. ``HfArgumentParser``'s command-line
    parsing (and TRL's ``TrlParser``) and ``dataclasses.replace`` pass every field, which tells nothing; such a config
    counts as set the fields that differ from their declared defaults.
    """

    _cai_stage: ClassVar[str]
    """``"sft"``, ``"dpo"`` or ``"reward"``: which of the profile's per-stage settings apply."""

    qlora_profile: str | None
    load_in_4bit: bool | None

    def __new__(cls, *args: Any, **kwargs: Any):
        config = super().__new__(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        given = dict(zip((f.name for f in fields), args)) | kwargs
        if len(given) == len(fields):
            given = {f.name: value for f in fields if (value := given[f.name]) != _declared_default(f)}
        config._cai_explicit_fields = frozenset(given)
        return config

    @property
    def explicit_fields(self) -> frozenset[str]:
        """The fields this config was constructed with (by keyword or position)."""
        return getattr(self, "_cai_explicit_fields", frozenset())

    def __post_init__(self):
        if self.qlora_profile is not None:
            apply_profile_defaults(self, self.qlora_profile, self._cai_stage, explicit=self.explicit_fields)
        elif self.load_in_4bit:
            raise ValueError(
                "load_in_4bit=True applies to models loaded with a qlora_profile; set qlora_profile (e.g. 'cpu' or "
                "'8gb'), or pass quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...) to the trainer as "
                "with TRL"
            )
        super().__post_init__()


def _declared_default(config_field: dataclasses.Field) -> Any:
    if config_field.default_factory is not dataclasses.MISSING:
        return config_field.default_factory()
    return config_field.default


def default_output_name(model: Any, suffix: str) -> str:
    """TRL's default output folder name: the model's last path component plus a stage suffix."""
    name = model if isinstance(model, str) else model.config.name_or_path
    return f"{str(name).rstrip('/').split('/')[-1]}-{suffix}"


class CAITrainerMixin:
    """Constitution, QLoRA profile, data checks and artifacts for a TRL trainer (put it first among the bases)."""

    _cai_stage: ClassVar[str]
    """``"sft"``, ``"dpo"`` or ``"reward"``: recorded in ``cai_training.json``."""
    _cai_conversation_column: ClassVar[str]
    """The conversational column next to which a plain-text 'prompt' is dropped (see ``drop_string_prompt``)."""
    _cai_hyperparameters: ClassVar[tuple[str, ...]] = ()
    """Stage-specific config fields recorded in ``cai_training.json`` besides the common ones."""

    constitution: Constitution | None

    # ------------------------------------------------------------------ before TRL's __init__
    def _cai_prepare_datasets(self, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
        """Apply the SL-CAI / RL-CAI adapters to the train and eval datasets."""
        train_dataset = self._cai_normalize(train_dataset)
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: self._cai_normalize(part) for name, part in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._cai_normalize(eval_dataset)
        return train_dataset, eval_dataset

    def _cai_normalize(self, dataset: Any) -> Any:
        if dataset is None:
            return None
        return drop_string_prompt(dataset, conversation_column=self._cai_conversation_column)

    @staticmethod
    def _cai_check_templates(processing_class: Any, args: Any, datasets: dict[str, Any]) -> None:
        if processing_class is None or getattr(args, "chat_template_path", None):
            return
        for split, dataset in datasets.items():
            if dataset is not None:
                check_chat_template(processing_class, dataset, split=split)

    @staticmethod
    def _cai_prepare_model(model: Any, args: Any, peft_config: Any, quantization_config: Any, task: str):
        """Load a model given by name with the QLoRA profile of ``args``, and default the adapter to the profile's.

        A name that is a saved PEFT adapter (folder or Hub id) is loaded on its base with trainable adapter weights,
        to be trained further, with or without a profile.
        """
        from peft import PeftModel
        from transformers import set_seed

        if quantization_config is not None and getattr(quantization_config, "load_in_4bit", False):
            check_4bit_support()
        continuing = isinstance(model, str) and is_peft_adapter(model)
        if continuing and peft_config is not None:
            raise ValueError(
                f"model '{model}' is a saved adapter, which the trainer trains further, so `peft_config` (a new "
                "adapter) cannot be used with it. Drop `peft_config` to continue the adapter, or pass its base model "
                f"('{adapter_base_model(model)}') to train a new adapter."
            )
        profile_name = getattr(args, "qlora_profile", None)
        if isinstance(model, str):
            # A sequence classifier gets a freshly initialised score head: seed first, as TRL does.
            set_seed(args.seed)
        if profile_name is None:
            if continuing:
                if quantization_config is not None:
                    raise ValueError(
                        f"model '{model}' is a saved adapter, which the trainer loads itself; `quantization_config` "
                        "applies to base models only. Set `qlora_profile` to load its base in 4-bit, or load the "
                        "model yourself and pass it."
                    )
                model = continue_adapter(
                    _load_base_as_trl_does(adapter_base_model(model), args, task), model, task=task
                )
            return model, peft_config
        profile = get_profile(profile_name)
        if isinstance(model, str):
            if quantization_config is not None or args.model_init_kwargs:
                raise ValueError(
                    f"qlora_profile='{profile.name}' loads the model itself (4-bit NF4 on one device per process); "
                    "do not also pass `quantization_config` or `model_init_kwargs`. Either drop the profile, or load "
                    "the model yourself and pass the model object."
                )
            model = load_model_for_training(
                model,
                profile,
                task=task,
                trust_remote_code=args.trust_remote_code,
                load_in_4bit=getattr(args, "load_in_4bit", None),
            )
        if peft_config is None and not isinstance(model, PeftModel):
            peft_config = peft_config_for(
                profile, task_type="SEQ_CLS" if task == "sequence-classification" else "CAUSAL_LM"
            )
        return model, peft_config

    def _cai_set_constitution(self, constitution: Constitution | str | Path | None, args: Any, dataset: Any) -> None:
        """Resolve the constitution (the ``constitution=`` argument, else ``args.constitution``, else the dataset's)."""
        requested = constitution if constitution is not None else getattr(args, "constitution", None)
        self.constitution = resolve_training_constitution(requested, dataset)

    # ------------------------------------------------------------------ after TRL's __init__
    def _cai_finish_init(self) -> None:
        """Tag the model card with the kind of adapter trained; call at the end of ``__init__``."""
        from peft import PeftModel

        model = self.accelerator.unwrap_model(self.model)
        if count_trainable(model) == 0:
            raise ValueError(
                "the model has no trainable parameters. A PEFT model loaded with PeftModel.from_pretrained(...) is "
                "frozen unless loaded with is_trainable=True; or pass the adapter's folder or Hub id as `model`, "
                "which the trainer loads trainable."
            )
        self._cai_trainable_dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
        if isinstance(model, PeftModel):
            adapter_tag = "qlora" if getattr(model, "is_loaded_in_4bit", False) else "lora"
            self._tag_names = [*type(self)._tag_names, adapter_tag]
            model.add_model_tags([adapter_tag])

    def cai_training_record(self) -> dict[str, Any]:
        """The ``cai_training.json`` content for the trainer's current state."""
        return training_record(
            self,
            stage=self._cai_stage,
            constitution=self.constitution,
            hyperparameters=self._cai_hyperparameters,
            **self._cai_extra_record(),
        )

    def _cai_extra_record(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ TRL / Trainer hooks
    def _prepare_dataset(self, dataset: Any, processing_class: Any, *args: Any, **kwargs: Any) -> Any:
        dataset = self._cai_normalize(dataset)
        # TRL passes the dataset's name ("train", "eval", ...) as the last argument.
        split = args[-1] if args and isinstance(args[-1], str) else "training"
        check_chat_template(processing_class, dataset, split=split)
        return super()._prepare_dataset(dataset, processing_class, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Resume as TRL started: PEFT reloads adapter weights in float32, while TRL trains a QLoRA adapter in
        bfloat16, so the trainable weights are cast back to the dtypes they had before the checkpoint was loaded
        (otherwise a resumed run would continue in another precision than an uninterrupted one)."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        unwrapped = self.accelerator.unwrap_model(model or self.model)
        for name, parameter in unwrapped.named_parameters():
            dtype = self._cai_trainable_dtypes.get(name)
            if dtype is not None and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as TRL does, plus ``constitution.yaml`` and ``cai_training.json`` (checkpoints included)."""
        if self.args.should_save:
            write_training_artifacts(output_dir or self.args.output_dir, self.constitution, self.cai_training_record())
        super().save_model(output_dir, _internal_call)


def _load_base_as_trl_does(model_id: str, args: Any, task: str):
    """Load a base model the way TRL loads a model given by name (``args.model_init_kwargs``, float32 by default)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.trainer.utils import create_model_from_path

    from hf_cai.gguf import resolve_model

    kwargs = dict(args.model_init_kwargs or {})
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    architecture = AutoModelForCausalLM
    if task == "sequence-classification":
        architecture = AutoModelForSequenceClassification
        kwargs["num_labels"] = 1
    return create_model_from_path(str(resolve_model(model_id)), architecture, **kwargs)


def resolve_training_constitution(requested: Constitution | str | Path | None, dataset: Any) -> Constitution | None:
    """The constitution to save with a model, checked against the dataset's ``constitution_sha256`` provenance.

    ``requested`` (an object, built-in name or file) wins; a mismatch with the dataset is logged as a warning. With
    nothing requested, a built-in constitution matching the dataset's single sha256 is used, else ``None``.
    """
    hashes = dataset_constitution_hashes(dataset)
    if requested is not None:
        constitution = Constitution.resolve(requested)
        if hashes and constitution.sha256 not in hashes:
            logger.warning(
                "the training data was made with constitution sha256 %s, but constitution '%s' has sha256 %s; the "
                "saved constitution.yaml will not match the data",
                ", ".join(sorted(hashes)),
                constitution.name,
                constitution.sha256,
            )
        return constitution
    if len(hashes) == 1:
        (wanted,) = hashes
        for name in Constitution.list_builtin():
            builtin = Constitution.builtin(name)
            if builtin.sha256 == wanted:
                logger.info("using built-in constitution '%s' (matches the dataset's constitution_sha256)", name)
                return builtin
    logger.info("no constitution given: checkpoints get cai_training.json but no constitution.yaml")
    return None


def dataset_constitution_hashes(dataset: Any) -> set[str]:
    """The distinct values of the dataset's ``constitution_sha256`` column (from the first row when streaming)."""
    if dataset is None or DATASET_CONSTITUTION_COLUMN not in (column_names(dataset) or []):
        return set()
    if hasattr(dataset, "unique"):
        return {value for value in dataset.unique(DATASET_CONSTITUTION_COLUMN) if value}
    example = first_example(dataset)
    return {example[DATASET_CONSTITUTION_COLUMN]} if example and example[DATASET_CONSTITUTION_COLUMN] else set()


class CAIPreferenceTrainerMixin(CAITrainerMixin):
    """The CAI additions of the preference trainers (DPO, reward): soft labels from a 'chosen_prob' column."""

    _cai_conversation_column = "chosen"
    soft_labels: bool

    def _cai_check_preference_data(self, args: Any, train_dataset: Any, eval_dataset: Any) -> None:
        """Check the columns and 'chosen_prob' values of every split, and decide whether soft labels are on."""
        splits = named_splits(train_dataset, eval_dataset)
        for split, dataset in splits.items():
            check_preference_columns(dataset, split=split, stage=self._cai_stage)
        self.soft_labels = resolve_soft_labels(getattr(args, "soft_labels", None), train_dataset)
        if self.soft_labels:
            for split, dataset in splits.items():
                check_chosen_prob_column(dataset, split=split)

    def _cai_extra_record(self) -> dict[str, Any]:
        return {"soft_labels": self.soft_labels}

    def _cai_enable_soft_label_batches(self) -> None:
        """Make batches carry 'chosen_prob'; call after TRL's ``__init__`` (which may precompute with its collator).

        Any collator, TRL's or the user's, is wrapped, so 'chosen_prob' cannot be lost on the way; a batch without it
        (an eval set without the column) is scored with TRL's hard-label loss.
        """
        if self.soft_labels:
            self.data_collator = ChosenProbCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.soft_labels and CHOSEN_PROB not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, CHOSEN_PROB]
