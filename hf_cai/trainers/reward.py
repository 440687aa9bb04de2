"""A preference (reward) model on AI-labelled pairs, for GRPO / RLOO / Online DPO with :class:`ConstitutionalReward`.

``CAIRewardTrainer`` is TRL's ``RewardTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`.
With a ``chosen_prob`` column the Bradley-Terry target is the feedback model's probability instead of 1: with
d = r(chosen) - r(rejected) (minus TRL's optional ``margin``),
loss = -p log sigmoid(d) - (1 - p) log sigmoid(-d) = TRL's loss + (1 - p) d.

Starting from the SFT model. Given a saved causal-LM adapter by name (folder or Hub id, e.g. the SFT stage's output),
the trainer builds the reward model the RL-CAI way: a one-score sequence classifier of the adapter's base model, with
the SFT adapter's LoRA weights loaded and trained further, and a new score head trained in full (see
:func:`hf_cai.trainers.qlora.continue_adapter`). The reward model then reads replies with the SFT policy's features.
A saved reward adapter given by name is trained further as saved, score head included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl import RewardConfig, RewardTrainer

from hf_cai.constitution import Constitution
from hf_cai.trainers.base import (
    CAI_TAGS,
    CAIConfigMixin,
    CAIPreferenceTrainerMixin,
    constitution_field,
    default_output_name,
    load_in_4bit_field,
    qlora_profile_field,
    soft_labels_field,
)
from hf_cai.trainers.data import CHOSEN_PROB, named_splits


@dataclass
class CAIRewardConfig(CAIConfigMixin, RewardConfig):
    r"""TRL's :class:`~trl.RewardConfig` plus the CAI fields; every TRL field keeps its TRL default.

    Parameters:
        constitution (`str`, *optional*):
            Built-in constitution name or constitution file the preferences were labelled with; saved as
            ``constitution.yaml`` with every checkpoint. The trainer's ``constitution=`` argument takes precedence.
        qlora_profile (`str`, *optional*):
            ``"8gb"``, ``"12gb"``, ``"16gb"``, ``"24gb"`` or ``"cpu"``: fills the settings not given explicitly
            (memory-related ones, the LoRA learning rate 1e-4, precision, a checkpoint every tenth of the run), loads
            a model given by name in 4-bit as a one-score sequence classifier and adds the profile's LoRA adapter
            (the score head is trained in full).
        load_in_4bit (`bool`, *optional*):
            With a profile, whether a model loaded by name is quantised to 4-bit NF4. ``None``: as the profile says.
        soft_labels (`bool`, *optional*):
            Use the ``chosen_prob`` column as the Bradley-Terry target. ``None``: when the column exists.
    """

    _cai_stage = "reward"
    constitution: str | None = constitution_field()
    qlora_profile: str | None = qlora_profile_field()
    load_in_4bit: bool | None = load_in_4bit_field()
    soft_labels: bool | None = soft_labels_field()


class CAIRewardTrainer(CAIPreferenceTrainerMixin, RewardTrainer):
    """TRL's ``RewardTrainer`` with soft Bradley-Terry targets, QLoRA profiles, the constitution saved with every
    checkpoint and CAI tags.

    Takes exactly ``RewardTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in
    name or file) which overrides ``args.constitution``.
    """

    _tag_names = [*RewardTrainer._tag_names, *CAI_TAGS]
    _cai_stage = "reward"
    _cai_hyperparameters = ("center_rewards_coefficient", "soft_labels")

    def __init__(
        self,
        model: Any,
        args: RewardConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: tuple | None = None,
        preprocess_logits_for_metrics: Any = None,
        quantization_config: Any = None,
        peft_config: Any = None,
        *,
        constitution: Constitution | str | Path | None = None,
    ):
        if args is None:
            args = CAIRewardConfig(default_output_name(model, "Reward"))
        self._cai_set_constitution(constitution, args, train_dataset)
        train_dataset, eval_dataset = self._cai_prepare_datasets(train_dataset, eval_dataset)
        self._cai_check_preference_data(args, train_dataset, eval_dataset)
        self._cai_check_templates(processing_class, args, named_splits(train_dataset, eval_dataset))
        model, peft_config = self._cai_prepare_model(
            model, args, peft_config, quantization_config, "sequence-classification"
        )
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        self._match_head_dtype()
        self._cai_enable_soft_label_batches()
        self._cai_finish_init()

    def _match_head_dtype(self) -> None:
        """Give the trained score head the dtype of the hidden states it reads.

        TRL casts a quantised model's trainable parameters to bfloat16 (the QLoRA recipe). LoRA layers cast their
        input, but the fully trained score head does not, so without autocast (float32 training on CPU) it would
        fail on float32 hidden states.
        """
        model = self.accelerator.unwrap_model(self.model)
        if not getattr(model, "is_loaded_in_4bit", False):
            return
        dtype = model.get_input_embeddings().weight.dtype
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and "modules_to_save" in name and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's Bradley-Terry loss, plus ``mean((1 - p) * d)`` when the batch has chosen_prob."""
        chosen_prob = inputs.pop(CHOSEN_PROB, None)
        if chosen_prob is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        rewards_chosen, rewards_rejected = outputs.logits.squeeze(-1).chunk(2)
        difference = rewards_chosen - rewards_rejected
        if "margin" in inputs:
            difference = difference - inputs["margin"]
        loss = loss + ((1.0 - chosen_prob.to(difference.device, difference.dtype)) * difference).mean()
        return (loss, outputs) if return_outputs else loss
