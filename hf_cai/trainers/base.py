"""What every CAI trainer adds to its TRL parent.

The CAI trainers are ``class CAIxTrainer(CAITrainerMixin, xTrainer)``: TRL does the training; the mixin adds the
constitution (resolved, checked against the dataset's provenance, saved next to every checkpoint), QLoRA model
loading from a profile, data checks that fail before the first step, the SL-CAI/RL-CAI dataset adapters, CAI tags
for the model card and the ``cai_training.json`` record.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar

from hf_cai.artifact_files import CONSTITUTION_FILE, TRAINING_RECORD
from hf_cai.constitution import Constitution
from hf_cai.errors import InputError
from hf_cai.gguf import hub_id_of
from hf_cai.modeling import is_peft_adapter, keep_4bit_weights_differentiable
from hf_cai.quiet import known_warnings_ignored
from hf_cai.trainers.artifacts import name_adapter_base_by_hub_id, training_record, write_training_artifacts
from hf_cai.trainers.config import CAIConfigMixin
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
from hf_cai.trainers.flagged_rows import keep_unflagged_rows
from hf_cai.trainers.qlora import ModelTask, TrainingStage, count_trainable
from hf_cai.trainers.training_model import prepare_training_model

logger = logging.getLogger(__name__)

CAI_TAGS = ["constitutional-ai", "hf-cai"]
"""Model-card tags every CAI trainer adds to TRL's (``lora`` or ``qlora`` is added when an adapter is trained)."""

DATASET_CONSTITUTION_COLUMN = "constitution_sha256"

REFERENCE_ADAPTER = "ref"
"""The name TRL gives the frozen copy of a continued adapter that serves as the DPO (and GRPO) reference."""

MIN_TRL_VERSION = "1.16"
"""The oldest TRL whose internals the CAI trainers extend: the fused LM head of soft-label DPO came in 1.15, and 1.16 is
the first whose fused head trains without triton (which PyTorch's CPU wheels lack)."""


class CAITrainerMixin:
    """Constitution, QLoRA profile, data checks and artifacts for a TRL trainer (put it first among the bases).

    A CAI trainer takes exactly its TRL parent's arguments (its signature is the parent's), plus a keyword-only
    ``constitution`` (a :class:`~hf_cai.Constitution`, built-in name or file) which overrides ``args.constitution``.
    Before TRL's ``__init__`` the mixin resolves the constitution, drops the SL-CAI string prompts, runs the stage's
    checks (:meth:`_cai_prepare_stage`), checks the chat template and loads the model with the profile; after it,
    the stage finishes (:meth:`_cai_after_trl_init`) and the trained model is checked and tagged. A stage supplies
    the class attributes below and overrides those hooks.
    """

    _cai_config_class: ClassVar[type[CAIConfigMixin]]
    """The stage's CAI config: the default ``args``, and through its ``_cai_stage`` the stage recorded."""
    _cai_output_suffix: ClassVar[str]
    """TRL's suffix of the default output folder (``<model name>-<suffix>``)."""
    _cai_model_task: ClassVar[ModelTask] = "causal-lm"
    """The head of a model the trainer loads by name."""
    _cai_conversation_column: ClassVar[str]
    """The conversational column next to which a plain-text 'prompt' is dropped (see ``drop_string_prompt``)."""
    _cai_hyperparameters: ClassVar[tuple[str, ...]] = ()
    """Stage-specific config fields recorded in ``cai_training.json`` besides the common ones."""

    _cai_trl_internals: ClassVar[tuple[str, ...]] = ("_prepare_dataset",)
    """Methods of the TRL trainer (not of transformers' ``Trainer``) that the CAI trainer overrides, checked at
    construction."""

    constitution: Constitution | None

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        trl_trainer = mro[mro.index(CAITrainerMixin) + 1]  # object for a mixin that is not yet a trainer
        if trl_trainer is not object:
            signature = inspect.signature(trl_trainer)
            constitution = inspect.Parameter(
                "constitution",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation="Constitution | str | Path | None",
            )
            cls.__signature__ = signature.replace(parameters=[*signature.parameters.values(), constitution])

    def __init__(self, *args: Any, **kwargs: Any):
        with known_warnings_ignored():
            self._cai_init(*args, **kwargs)

    def _cai_init(self, *args: Any, **kwargs: Any) -> None:
        self._cai_check_trl_internals()
        bound = type(self).__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        constitution = arguments.pop("constitution")
        if arguments["args"] is None:
            arguments["args"] = self._cai_config_class(default_output_name(arguments["model"], self._cai_output_suffix))
        config = arguments["args"]
        requested = constitution if constitution is not None else getattr(config, "constitution", None)
        self.constitution = resolve_training_constitution(requested, arguments["train_dataset"])
        arguments["train_dataset"] = self._cai_drop_string_prompt(arguments["train_dataset"])
        eval_dataset = arguments["eval_dataset"]
        if isinstance(eval_dataset, dict):
            arguments["eval_dataset"] = {
                name: self._cai_drop_string_prompt(part) for name, part in eval_dataset.items()
            }
        else:
            arguments["eval_dataset"] = self._cai_drop_string_prompt(eval_dataset)
        splits = named_splits(arguments["train_dataset"], arguments["eval_dataset"])
        self._cai_prepare_stage(arguments, splits)
        self._cai_check_chat_templates(arguments["processing_class"], config, splits)
        self._cai_initial_adapter = initial_adapter(arguments["model"])
        arguments["model"], arguments["peft_config"] = prepare_training_model(
            arguments["model"], config, arguments["peft_config"], arguments["quantization_config"], self._cai_model_task
        )
        self._cai_constructed = False
        self._cai_init_trl(arguments)
        self._cai_constructed = True
        keep_4bit_weights_differentiable(self.model)
        self._cai_use_progress_display()
        self._cai_after_trl_init()
        self._cai_check_trained_model()

    @property
    def _cai_stage(self) -> TrainingStage:
        return self._cai_config_class._cai_stage

    # ------------------------------------------------------------------ stage hooks
    def _cai_prepare_stage(self, arguments: dict[str, Any], splits: dict[str, Any]) -> None:
        """The stage's checks of its datasets (``splits``, by name) and changes to TRL's ``arguments``, before the
        chat template is checked and the model loaded."""

    def _cai_init_trl(self, arguments: dict[str, Any]) -> None:
        """TRL's ``__init__`` with the prepared arguments."""
        super().__init__(**arguments)

    def _cai_after_trl_init(self) -> None:
        """The stage's changes to what TRL's ``__init__`` built."""

    def _cai_adapt_dataset(self, dataset: Any, processing_class: Any, config: Any, split: str) -> Any:
        """The stage's change to one dataset just before TRL prepares it."""
        return dataset

    # ------------------------------------------------------------------ the setup steps
    def _cai_check_trl_internals(self) -> None:
        """Refuse a TRL without the methods this trainer extends, naming the TRL version it needs."""
        mro = type(self).__mro__
        trl_trainer = mro[mro.index(CAITrainerMixin) + 1]
        missing = [name for name in self._cai_trl_internals if not hasattr(trl_trainer, name)]
        if missing:
            require_trl(f"{type(self).__name__} extends {', '.join(f'{trl_trainer.__name__}.{m}' for m in missing)}")

    def _cai_use_progress_display(self) -> None:
        """One progress bar at a time, gone when its work is done (see ``CAIProgressCallback``)."""
        from hf_cai.trainers.progress import use_cai_progress

        use_cai_progress(self)

    def _cai_drop_string_prompt(self, dataset: Any) -> Any:
        """The dataset without a plain-text 'prompt' beside its conversations (see ``drop_string_prompt``)."""
        if dataset is None:
            return None
        return drop_string_prompt(dataset, conversation_column=self._cai_conversation_column)

    def _cai_check_chat_templates(self, processing_class: Any, config: Any, splits: dict[str, Any]) -> None:
        """Check the chat template of every split now if the tokenizer is final, else when TRL prepares the split.

        TRL loads a missing processing class, and applies ``chat_template_path``, in its own ``__init__``.
        """
        self._cai_chat_templates_checked = processing_class is not None and not getattr(
            config, "chat_template_path", None
        )
        if self._cai_chat_templates_checked:
            for split, dataset in splits.items():
                if dataset is not None:
                    check_chat_template(processing_class, dataset, split=split)

    def _cai_check_trained_model(self) -> None:
        """Refuse a model with nothing to train, note the trainable weights' dtypes, and tag the kind of adapter."""
        from peft import PeftModel

        model = self.accelerator.unwrap_model(self.model)
        if count_trainable(model) == 0:
            raise InputError(
                "the model has no trainable parameters. A PEFT model loaded with PeftModel.from_pretrained(...) is "
                "frozen unless loaded with is_trainable=True; or pass the adapter's folder or Hub id as `model`, "
                "which the trainer loads trainable."
            )
        self._cai_trainable_dtypes = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
        if isinstance(model, PeftModel):
            name_loaded_base(model)
            adapter_tag = "qlora" if getattr(model, "is_loaded_in_4bit", False) else "lora"
            self._tag_names = [*type(self)._tag_names, adapter_tag]
            model.add_model_tags([adapter_tag])

    # ------------------------------------------------------------------ the training record
    def cai_training_record(self) -> dict[str, Any]:
        """The ``cai_training.json`` content for the trainer's current state."""
        return training_record(
            self,
            stage=self._cai_stage,
            constitution=self.constitution,
            hyperparameters=self._cai_hyperparameters,
            initial_adapter=self._cai_initial_adapter,
            **self._cai_extra_record(),
        )

    def _cai_extra_record(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ TRL / Trainer hooks
    def _prepare_dataset(self, dataset: Any, processing_class: Any, config: Any, *args: Any) -> Any:
        """TRL's preparation of one dataset, after the CAI steps ``__init__`` has not taken for it: all of them for a
        dataset given to ``evaluate()``, the chat-template check for one whose tokenizer TRL made final."""
        # TRL passes the dataset's name ("train", "eval", ...) as the last argument.
        split = args[-1] if args and isinstance(args[-1], str) else "training"
        if self._cai_constructed:
            dataset = self._cai_drop_string_prompt(dataset)
        if self._cai_constructed or not self._cai_chat_templates_checked:
            check_chat_template(processing_class, dataset, split=split)
        dataset = self._cai_adapt_dataset(dataset, processing_class, config, split)
        return super()._prepare_dataset(dataset, processing_class, config, *args)

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

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's ``train``, without the warnings peft and TRL raise about transformers' renamed methods."""
        with known_warnings_ignored():
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's ``evaluate``, without the warnings peft and TRL raise about transformers' renamed methods."""
        with known_warnings_ignored():
            return super().evaluate(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as TRL does, plus ``constitution.yaml`` and ``cai_training.json`` (checkpoints included), without
        the frozen reference adapter.

        PEFT saves every adapter of a model, so the reference copy TRL makes of a continued adapter (DPO, and GRPO
        with ``beta > 0``) would land in ``ref/`` of every checkpoint and of the final model: it is the starting
        adapter, not part of the trained model, and a resumed run rebuilds it from the starting adapter.
        """
        folder = Path(output_dir or self.args.output_dir)
        if self.args.should_save:
            write_training_artifacts(folder, self.constitution, self.cai_training_record())
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            model = self.accelerator.unwrap_model(self.model)
            if REFERENCE_ADAPTER in (getattr(model, "peft_config", None) or {}):
                shutil.rmtree(folder / REFERENCE_ADAPTER, ignore_errors=True)
            name_adapter_base_by_hub_id(folder)


class CAIPreferenceTrainerMixin(CAITrainerMixin):
    """The CAI additions of the preference trainers (DPO, reward): soft labels from a 'chosen_prob' column."""

    _cai_conversation_column = "chosen"
    soft_labels: bool

    cai_quality: Any
    """The quality gates' flags of the training rows (a ``QualityGateResult``; ``None``: the training dataset has no
    ``quality_flags`` column); ``kept`` of ``total`` rows were trained on."""

    def _cai_prepare_stage(self, arguments: dict[str, Any], splits: dict[str, Any]) -> None:
        """Leave out the rows the quality gates flagged, check the columns and 'chosen_prob' values of every split,
        and decide whether soft labels are on."""
        self.cai_quality = keep_unflagged_rows(arguments, splits)
        for split, dataset in splits.items():
            check_preference_columns(dataset, split=split, stage=self._cai_stage)
        self.soft_labels = resolve_soft_labels(getattr(arguments["args"], "soft_labels", None), splits["train"])
        if self.soft_labels:
            for split, dataset in splits.items():
                check_chosen_prob_column(dataset, split=split)

    def _cai_after_trl_init(self) -> None:
        """Make batches carry 'chosen_prob' (after TRL's ``__init__``, which may precompute with its collator).

        Any collator, TRL's or the user's, is wrapped, so 'chosen_prob' cannot be lost on the way; a batch without it
        (an eval set without the column) is scored with TRL's hard-label loss.
        """
        if self.soft_labels:
            self.data_collator = ChosenProbCollator(self.data_collator)

    def _cai_extra_record(self) -> dict[str, Any]:
        return {"soft_labels": self.soft_labels}

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.soft_labels and CHOSEN_PROB not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, CHOSEN_PROB]


def require_trl(what: str) -> None:
    """Raise ``ImportError``: ``what`` (a part of TRL the CAI trainers use) is missing from the installed TRL."""
    import trl

    raise ImportError(
        f"{what}, which TRL {trl.__version__} does not have: hf-cai needs trl>={MIN_TRL_VERSION} "
        f"(pip install -U 'trl>={MIN_TRL_VERSION}')"
    )


LOADED_PEFT_MODEL = "(a PeftModel passed in)"
"""``initial_adapter`` of a training given a loaded ``PeftModel``: the trainer cannot tell where its adapter came from."""


def initial_adapter(model: Any) -> str | None:
    """What the training record calls ``initial_adapter``: the saved adapter a model given by name is, which the
    training continues; :data:`LOADED_PEFT_MODEL` for a loaded ``PeftModel``; ``None`` when the trained weights start
    from the base model's own (a base model by name or object, to which the trainer adds a new adapter or which it
    trains in full)."""
    if isinstance(model, str):
        return model if is_peft_adapter(model) else None
    from peft import PeftModel

    return LOADED_PEFT_MODEL if isinstance(model, PeftModel) else None


def name_loaded_base(model: Any) -> None:
    """Make the adapters of a PEFT ``model`` name the folder their base weights were loaded from while it trains.

    A saved adapter names its base by Hub id (see ``name_adapter_base_by_hub_id``); loaded again onto the converted
    GGUF weights it was trained on, PEFT would look that Hub id up on every save (a warning offline). On disk the Hub
    id is written back after each save."""
    loaded = getattr(model.get_base_model().config, "name_or_path", None)
    hub_id = hub_id_of(loaded) if loaded else None
    if not hub_id:
        return
    for config in model.peft_config.values():
        if config.base_model_name_or_path == hub_id:
            config.base_model_name_or_path = loaded


def default_output_name(model: Any, suffix: str) -> str:
    """TRL's default output folder name: the model's last path component plus a stage suffix."""
    name = model if isinstance(model, str) else model.config.name_or_path
    return f"{str(name).rstrip('/').split('/')[-1]}-{suffix}"


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
                "saved %s will not match the data",
                ", ".join(sorted(hashes)),
                constitution.name,
                constitution.sha256,
                CONSTITUTION_FILE,
            )
        return constitution
    if len(hashes) == 1:
        (wanted,) = hashes
        for name in Constitution.list_builtin():
            builtin = Constitution.builtin(name)
            if builtin.sha256 == wanted:
                logger.info("using built-in constitution '%s' (matches the dataset's constitution_sha256)", name)
                return builtin
    logger.info("no constitution given: checkpoints get %s but no %s", TRAINING_RECORD, CONSTITUTION_FILE)
    return None


def dataset_constitution_hashes(dataset: Any) -> set[str]:
    """The distinct values of the dataset's ``constitution_sha256`` column (from the first row when streaming)."""
    if dataset is None or DATASET_CONSTITUTION_COLUMN not in (column_names(dataset) or []):
        return set()
    if hasattr(dataset, "unique"):
        return {value for value in dataset.unique(DATASET_CONSTITUTION_COLUMN) if value}
    example = first_example(dataset)
    return {example[DATASET_CONSTITUTION_COLUMN]} if example and example[DATASET_CONSTITUTION_COLUMN] else set()
