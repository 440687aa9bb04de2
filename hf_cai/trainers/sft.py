"""Supervised CAI (SL-CAI): fine-tune on the final revisions of critique -> revision chains.

``CAISFTTrainer`` is TRL's ``SFTTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`;
code written for ``SFTTrainer`` / ``SFTConfig`` runs unchanged with ``CAISFTTrainer`` / ``CAISFTConfig``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig, SFTTrainer

from hf_cai.builders.quality_gates import (
    QUALITY_COLUMN,
    QualityGateConfig,
    QualityGateError,
    QualityGateResult,
    filter_for_training,
)
from hf_cai.errors import InputError
from hf_cai.gguf import resolve_model
from hf_cai.trainers.base import CAI_TAGS, CAITrainerMixin
from hf_cai.trainers.config import CAIConfigMixin
from hf_cai.trainers.data import check_sft_columns, column_names, first_example, named_splits
from hf_cai.trainers.templates import add_assistant_masks, needs_computed_assistant_masks

logger = logging.getLogger(__name__)


@dataclass
class CAISFTConfig(CAIConfigMixin, SFTConfig):
    r"""TRL's :class:`~trl.SFTConfig` plus the CAI fields of :class:`~hf_cai.trainers.config.CAIConfigMixin`
    (``constitution``, ``qlora_profile``, ``load_in_4bit``); every TRL field keeps its TRL default.

    For SL-CAI data (a ``messages`` column of prompt + final revision) set ``assistant_only_loss=True`` so that only
    the revision is learned; the ``hf-cai train sft`` command does so by default. A ``qlora_profile`` sets the LoRA
    learning rate 2e-4.

    Its own fields, after TRL's and the mixin's (so TRL's positional arguments keep their meaning), govern SL-CAI
    data whose rows carry the quality gates' ``quality_flags`` column:

    Parameters:
        exclude_flagged_rows (`bool`, *optional*, defaults to `True`):
            Train (and evaluate) only on the rows the quality gates did not flag.
        min_kept_share (`float`, *optional*, defaults to `0.5`):
            Refuse to train (``QualityGateError``) when fewer than this share of the training rows are kept.
    """

    _cai_stage = "sft"

    exclude_flagged_rows: bool = field(
        default=True,
        metadata={
            "help": f"For a dataset with a `{QUALITY_COLUMN}` column (the SL-CAI builder's quality gates): train and "
            "evaluate only on the rows the gates did not flag, and log how many that is. False trains on every row "
            "(still logging how many are flagged): at your own risk. In a recipe, set `sl_quality.exclude_flagged`."
        },
    )
    min_kept_share: float = field(
        default=QualityGateConfig.min_kept_share,
        metadata={
            "help": f"For a dataset with a `{QUALITY_COLUMN}` column: stop with QualityGateError, before loading the "
            "model, when fewer than this share of the training rows are kept (the model that wrote the data is "
            "then not up to the task). 0 never stops, unless no row is left. In a recipe, set "
            "`sl_quality.min_kept_share`."
        },
    )

    def __post_init__(self):
        if not 0 <= self.min_kept_share <= 1:
            raise InputError(f"min_kept_share must be in [0, 1], got {self.min_kept_share}")
        super().__post_init__()


class CAISFTTrainer(CAITrainerMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` with QLoRA profiles, the constitution saved next to every checkpoint and CAI tags.

    Takes exactly ``SFTTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in
    name or file) which overrides ``args.constitution``. A dataset in the SL-CAI layout (a string ``prompt`` beside a
    ``messages`` conversation) trains on ``messages``.

    A dataset with the SL-CAI builder's ``quality_flags`` column trains (and evaluates) on the rows the quality gates
    did not flag, saying how many in the log; fewer than ``args.min_kept_share`` of the training rows kept stops it
    with :class:`~hf_cai.builders.QualityGateError` before the model is loaded. ``args.exclude_flagged_rows=False``
    trains on every row. :attr:`cai_quality` holds the training rows' flags as the trainer found them.

    ``assistant_only_loss=True`` works with any prefix-preserving chat template: when the template has no
    ``{% generation %}`` markers, the conversations are tokenised here with masks on every assistant reply and its
    end-of-turn token (see :mod:`hf_cai.trainers.templates`), and TRL trains on them as an already tokenised dataset.
    A template that is not prefix-preserving goes to TRL, which trains it where it ships a training version of it.

    Example::

        trainer = CAISFTTrainer(
            model="Qwen/Qwen2.5-1.5B-Instruct",
            args=CAISFTConfig("out", qlora_profile="8gb", assistant_only_loss=True),
            train_dataset=sl_cai["train_sft"],
            constitution="harmless",
        )
        trainer.train()
        trainer.save_model()  # adapter + tokenizer + constitution.yaml + cai_training.json
    """

    _tag_names = [*SFTTrainer._tag_names, *CAI_TAGS]
    _cai_config_class = CAISFTConfig
    _cai_output_suffix = "SFT"
    _cai_conversation_column = "messages"
    _cai_hyperparameters = ("assistant_only_loss", "completion_only_loss", "packing", "padding_free", "loss_type")

    cai_quality: QualityGateResult | None
    """The quality gates' flags of the training rows (``None``: the training dataset has no ``quality_flags``
    column); ``kept`` of ``total`` rows were trained on."""

    def _cai_prepare_stage(self, arguments: dict[str, Any], splits: dict[str, Any]) -> None:
        """Leave out the rows the quality gates flagged, check the SFT columns, and decide whether the assistant masks
        are computed here (loading the processing class early when they may be, to inspect its chat template)."""
        args, formatting_func = arguments["args"], arguments["formatting_func"]
        arguments["train_dataset"], self.cai_quality = _kept_training_rows(arguments["train_dataset"], args)
        eval_dataset = arguments["eval_dataset"]
        if isinstance(eval_dataset, dict):
            arguments["eval_dataset"] = {name: _kept_eval_rows(part, args, f"eval '{name}'")
                                         for name, part in eval_dataset.items()}
        else:
            arguments["eval_dataset"] = _kept_eval_rows(eval_dataset, args, "eval")
        splits.clear()
        splits.update(named_splits(arguments["train_dataset"], arguments["eval_dataset"]))
        if formatting_func is None:
            text_field = getattr(args, "dataset_text_field", "text")
            for split, dataset in splits.items():
                check_sft_columns(dataset, split=split, text_field=text_field)
        masks_assistant_turns = self._cai_masks_assistant_turns(args, formatting_func, splits["train"])
        if masks_assistant_turns and arguments["processing_class"] is None:
            arguments["processing_class"] = self._cai_load_processing_class(arguments["model"], args)
        self._cai_computed_assistant_masks = masks_assistant_turns and needs_computed_assistant_masks(
            arguments["processing_class"]
        )

    def _cai_init_trl(self, arguments: dict[str, Any]) -> None:
        args = arguments["args"]
        assistant_only_loss = args.assistant_only_loss
        if self._cai_computed_assistant_masks:
            # TRL would look for {% generation %} markers and stop; _cai_adapt_dataset supplies the masks instead.
            args.assistant_only_loss = False
        try:
            super()._cai_init_trl(arguments)
        finally:
            args.assistant_only_loss = assistant_only_loss

    @staticmethod
    def _cai_masks_assistant_turns(args: Any, formatting_func: Callable | None, train_dataset: Any) -> bool:
        """Whether TRL would tokenise the conversations of ``train_dataset`` with assistant masks."""
        from trl.data_utils import is_conversational

        skips_preparation = (args.dataset_kwargs or {}).get("skip_prepare_dataset", False)
        if not args.assistant_only_loss or formatting_func is not None or skips_preparation or args.chat_template_path:
            return False
        example = first_example(train_dataset) if train_dataset is not None else None
        return example is not None and is_conversational(example)

    @staticmethod
    def _cai_load_processing_class(model: Any, args: Any) -> Any:
        """The processing class TRL loads for ``model``, loaded early so that its chat template can be inspected."""
        from transformers import AutoProcessor
        from trl.trainer.utils import get_config_model_id

        if isinstance(model, str):
            revision = (args.model_init_kwargs or {}).get("revision")
            return AutoProcessor.from_pretrained(
                resolve_model(model), revision=revision, trust_remote_code=args.trust_remote_code
            )
        return AutoProcessor.from_pretrained(
            get_config_model_id(model.config), trust_remote_code=args.trust_remote_code
        )

    def _cai_adapt_dataset(self, dataset: Any, processing_class: Any, config: Any, split: str) -> Any:
        """Tokenise a conversational dataset with the assistant masks computed here, when they are."""
        from trl.data_utils import is_conversational

        if self._cai_computed_assistant_masks and "input_ids" not in (column_names(dataset) or []):
            example = first_example(dataset)
            if example is not None and is_conversational(example):
                dataset = add_assistant_masks(
                    dataset, processing_class, dataset_name=split, num_proc=config.dataset_num_proc
                )
        return dataset


def _has_flags(dataset: Any) -> bool:
    return dataset is not None and QUALITY_COLUMN in (column_names(dataset) or [])


def _kept_training_rows(dataset: Any, args: Any) -> tuple[Any, QualityGateResult | None]:
    """The training rows the quality gates did not flag (all of them with ``exclude_flagged_rows`` off), logged, and
    their flags; raises :class:`QualityGateError` when too few are kept."""
    if not _has_flags(dataset):
        return dataset, None
    exclude = getattr(args, "exclude_flagged_rows", True)
    if not hasattr(dataset, "__len__"):  # a streamed dataset: its rows are counted only as they come
        if exclude:
            logger.info("training on the rows the quality gates did not flag (%s column), left out as they stream",
                        QUALITY_COLUMN)
            dataset = dataset.filter(lambda row: not row[QUALITY_COLUMN])
        return dataset, None
    config = QualityGateConfig(exclude_flagged=exclude, min_kept_share=getattr(args, "min_kept_share", 0.5))
    result = QualityGateResult(flags=[list(flags or ()) for flags in dataset[QUALITY_COLUMN]], config=config)
    kept = filter_for_training(dataset, result)
    if result.total and not result.kept:
        raise QualityGateError(
            f"the quality gates left none of the {result.total} training rows (min_kept_share is 0, so nothing else "
            "stopped the training). Generate the SL-CAI data with a larger or stronger model, or train on the flagged "
            "rows too (`exclude_flagged_rows=False` in CAISFTConfig; `exclude_flagged: false` in the recipe's "
            "`sl_quality` section).",
            result,
        )
    if not result.flagged:
        logger.info("training on all %d rows: the quality gates flagged none", result.total)
    elif exclude:
        logger.info(
            "training on %d of %d rows (%.0f%%): the quality gates flagged %d (%s; %s column); "
            "exclude_flagged_rows=False trains on them too",
            result.kept, result.total, 100 * result.kept_share, result.flagged, _reasons(result), QUALITY_COLUMN,
        )
    else:
        logger.warning(
            "training on all %d rows, %d of them flagged by the quality gates (%s): exclude_flagged_rows is off",
            result.total, result.flagged, _reasons(result),
        )
    return kept, result


def _kept_eval_rows(dataset: Any, args: Any, split: str) -> Any:
    """The evaluation rows the quality gates did not flag (``None`` when they flagged every one)."""
    if not _has_flags(dataset) or not getattr(args, "exclude_flagged_rows", True):
        return dataset
    if not hasattr(dataset, "__len__"):
        return dataset.filter(lambda row: not row[QUALITY_COLUMN])
    passed = [index for index, flags in enumerate(dataset[QUALITY_COLUMN]) if not flags]
    if len(passed) == len(dataset):
        return dataset
    if not passed:
        logger.warning("no %s rows to evaluate on: the quality gates flagged all %d of them", split, len(dataset))
        return None
    logger.info("evaluating on %d of %d %s rows: the quality gates flagged the others", len(passed), len(dataset), split)
    return dataset.select(passed)


def _reasons(result: QualityGateResult) -> str:
    return ", ".join(f"{flag.replace('_', ' ')} {count}" for flag, count in result.reason_counts.items() if count)
