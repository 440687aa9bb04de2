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
from hf_cai.trainers.base import CAI_TAGS, CAITrainerMixin, constitution_field, default_output_name, qlora_profile_field
from hf_cai.trainers.data import check_sft_columns, named_splits
from hf_cai.trainers.qlora import apply_profile_defaults


@dataclass
class CAISFTConfig(SFTConfig):
    r"""TRL's :class:`~trl.SFTConfig` plus the CAI fields; every TRL field keeps its TRL default.

    For SL-CAI data (a ``messages`` column of prompt + final revision) set ``assistant_only_loss=True`` so that only
    the revision is learned; the ``hf-cai train sft`` command does so by default.

    Parameters:
        constitution (`str`, *optional*):
            Built-in constitution name or constitution file the data was made with; saved as ``constitution.yaml``
            with every checkpoint. The trainer's ``constitution=`` argument takes precedence.
        qlora_profile (`str`, *optional*):
            ``"8gb"``, ``"12gb"``, ``"16gb"``, ``"24gb"`` or ``"cpu"``: fills the memory-related settings left at their
            defaults, loads a model given by name in 4-bit and adds the profile's LoRA adapter.
    """

    constitution: str | None = constitution_field()
    qlora_profile: str | None = qlora_profile_field()

    def __post_init__(self):
        if self.qlora_profile is not None:
            apply_profile_defaults(self, self.qlora_profile, "sft")
        super().__post_init__()


class CAISFTTrainer(CAITrainerMixin, SFTTrainer):
    """TRL's ``SFTTrainer`` with QLoRA profiles, the constitution saved next to every checkpoint and CAI tags.

    Takes exactly ``SFTTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in
    name or file) which overrides ``args.constitution``. A dataset in the SL-CAI layout (a string ``prompt`` beside a
    ``messages`` conversation) trains on ``messages``.

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
        self._cai_check_templates(processing_class, args, named_splits(train_dataset, eval_dataset))
        model, peft_config = self._cai_prepare_model(model, args, peft_config, quantization_config, "causal-lm")
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
        self._cai_finish_init()
