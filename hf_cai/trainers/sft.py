"""Supervised CAI (SL-CAI): fine-tune on the final revisions of critique -> revision chains.

``CAISFTTrainer`` is TRL's ``SFTTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`;
code written for ``SFTTrainer`` / ``SFTConfig`` runs unchanged with ``CAISFTTrainer`` / ``CAISFTConfig``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trl import SFTConfig, SFTTrainer

from hf_cai.builders.quality_gates import QualityGateResult
from hf_cai.gguf import resolve_model
from hf_cai.trainers.base import CAI_TAGS, CAITrainerMixin
from hf_cai.trainers.config import CAIConfigMixin
from hf_cai.trainers.data import check_sft_columns, column_names, first_example
from hf_cai.trainers.flagged_rows import FlaggedRowsConfigMixin, keep_unflagged_rows
from hf_cai.trainers.templates import add_assistant_masks, needs_computed_assistant_masks


@dataclass
class CAISFTConfig(FlaggedRowsConfigMixin, CAIConfigMixin, SFTConfig):
    r"""TRL's :class:`~trl.SFTConfig` plus the CAI fields of :class:`~hf_cai.trainers.config.CAIConfigMixin`
    (``constitution``, ``qlora_profile``, ``load_in_4bit``); every TRL field keeps its TRL default.

    For SL-CAI data (a ``messages`` column of prompt + final revision) set ``assistant_only_loss=True`` so that only
    the revision is learned; the ``hf-cai train sft`` command does so by default. A ``qlora_profile`` sets the LoRA
    learning rate 2e-4.

    ``exclude_flagged_rows`` and ``min_kept_share`` (:class:`~hf_cai.trainers.flagged_rows.FlaggedRowsConfigMixin`)
    govern SL-CAI data whose rows carry the quality gates' ``quality_flags`` column.
    """

    _cai_stage = "sft"


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
        self.cai_quality = keep_unflagged_rows(arguments, splits)
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
