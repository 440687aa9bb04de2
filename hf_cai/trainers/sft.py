"""Supervised CAI (SL-CAI): fine-tune on the final revisions of critique -> revision chains.

``CAISFTTrainer`` is TRL's ``SFTTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`;
code written for ``SFTTrainer`` / ``SFTConfig`` runs unchanged with ``CAISFTTrainer`` / ``CAISFTConfig``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl import SFTConfig, SFTTrainer

from hf_cai.constitution import Constitution
from hf_cai.trainers.base import (
    CAI_TAGS,
    CAIConfigMixin,
    CAITrainerMixin,
    constitution_field,
    default_output_name,
    load_in_4bit_field,
    qlora_profile_field,
)
from hf_cai.trainers.data import check_sft_columns, column_names, first_example, named_splits
from hf_cai.trainers.templates import add_assistant_masks, needs_computed_assistant_masks


@dataclass
class CAISFTConfig(CAIConfigMixin, SFTConfig):
    r"""TRL's :class:`~trl.SFTConfig` plus the CAI fields; every TRL field keeps its TRL default.

    For SL-CAI data (a ``messages`` column of prompt + final revision) set ``assistant_only_loss=True`` so that only
    the revision is learned; the ``hf-cai train sft`` command does so by default.

    Parameters:
        constitution (`str`, *optional*):
            Built-in constitution name or constitution file the data was made with; saved as ``constitution.yaml``
            with every checkpoint. The trainer's ``constitution=`` argument takes precedence.
        qlora_profile (`str`, *optional*):
            ``"8gb"``, ``"12gb"``, ``"16gb"``, ``"24gb"`` or ``"cpu"``: fills the settings not given explicitly
            (memory-related ones, the LoRA learning rate 2e-4, precision, a checkpoint every tenth of the run), loads
            a model given by name in 4-bit and adds the profile's LoRA adapter.
        load_in_4bit (`bool`, *optional*):
            With a profile, whether a model loaded by name is quantised to 4-bit NF4. ``None``: as the profile says.
    """

    _cai_stage = "sft"
    constitution: str | None = constitution_field()
    qlora_profile: str | None = qlora_profile_field()
    load_in_4bit: bool | None = load_in_4bit_field()


class CAISFTTrainer(CAITrainerMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` with QLoRA profiles, the constitution saved next to every checkpoint and CAI tags.

    Takes exactly ``SFTTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in
    name or file) which overrides ``args.constitution``. A dataset in the SL-CAI layout (a string ``prompt`` beside a
    ``messages`` conversation) trains on ``messages``.

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
    _cai_stage = "sft"
    _cai_conversation_column = "messages"
    _cai_hyperparameters = ("assistant_only_loss", "completion_only_loss", "packing", "padding_free", "loss_type")

    def __init__(
        self,
        model: Any,
        args: SFTConfig | Any | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: tuple | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        quantization_config: Any = None,
        peft_config: Any = None,
        formatting_func: Callable[[dict], str] | None = None,
        *,
        constitution: Constitution | str | Path | None = None,
    ):
        if args is None:
            args = CAISFTConfig(default_output_name(model, "SFT"))
        self._cai_set_constitution(constitution, args, train_dataset)
        train_dataset, eval_dataset = self._cai_prepare_datasets(train_dataset, eval_dataset)
        if formatting_func is None:
            text_field = getattr(args, "dataset_text_field", "text")
            for split, dataset in named_splits(train_dataset, eval_dataset).items():
                check_sft_columns(dataset, split=split, text_field=text_field)
        masks_assistant_turns = self._cai_masks_assistant_turns(args, formatting_func, train_dataset)
        if masks_assistant_turns and processing_class is None:
            processing_class = self._cai_load_processing_class(model, args)
        self._cai_check_templates(processing_class, args, named_splits(train_dataset, eval_dataset))
        self._cai_computed_assistant_masks = masks_assistant_turns and needs_computed_assistant_masks(processing_class)
        model, peft_config = self._cai_prepare_model(model, args, peft_config, quantization_config, "causal-lm")
        assistant_only_loss = args.assistant_only_loss
        if self._cai_computed_assistant_masks:
            # TRL would look for {% generation %} markers and stop; _prepare_dataset supplies the masks instead.
            args.assistant_only_loss = False
        try:
            super().__init__(
                model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_loss_func=compute_loss_func,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
                preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                quantization_config=quantization_config,
                peft_config=peft_config,
                formatting_func=formatting_func,
            )
        finally:
            args.assistant_only_loss = assistant_only_loss
        self._cai_finish_init()

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
            return AutoProcessor.from_pretrained(model, revision=revision, trust_remote_code=args.trust_remote_code)
        return AutoProcessor.from_pretrained(
            get_config_model_id(model.config), trust_remote_code=args.trust_remote_code
        )

    def _prepare_dataset(
        self,
        dataset: Any,
        processing_class: Any,
        args: Any,
        packing: bool,
        formatting_func: Callable | None,
        dataset_name: str,
    ) -> Any:
        from trl.data_utils import is_conversational

        if self._cai_computed_assistant_masks and "input_ids" not in (column_names(dataset) or []):
            dataset = self._cai_normalize(dataset)
            example = first_example(dataset)
            if example is not None and is_conversational(example):
                dataset = add_assistant_masks(
                    dataset, processing_class, dataset_name=dataset_name, num_proc=args.dataset_num_proc
                )
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
