"""A preference (reward) model on AI-labelled pairs, for GRPO / RLOO / Online DPO with :class:`ConstitutionalReward`.

``CAIRewardTrainer`` is TRL's ``RewardTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`.
With a ``chosen_prob`` column the Bradley-Terry target is the feedback model's probability instead of 1: with
d = r(chosen) - r(rejected) (minus TRL's optional ``margin``),
loss = -p log sigmoid(d) - (1 - p) log sigmoid(-d) = TRL's loss + (1 - p) d.

Where the reward model starts. Given a base model, the trainer adds a new LoRA adapter and a one-score head to it. The
pipeline's ``reward`` stage does this: as in the paper, whose preference models were fine-tuned from the pretrained
language model rather than from the SL-CAI policy, the reward model starts from the base model, not from the SFT
adapter. A saved causal-LM adapter given by name (folder or Hub id, e.g. an SFT output) is also accepted: the
reward model is then a one-score sequence classifier of the adapter's base model with the adapter's LoRA weights
loaded and trained further, and a new score head trained in full (see :func:`hf_cai.trainers.qlora.continue_adapter`).
A saved reward adapter given by name is trained further as saved, score head included. ``cai_training.json`` records
which: ``initial_adapter`` is null for a reward model started from the base model.
"""

from __future__ import annotations

from dataclasses import dataclass

from trl import RewardConfig, RewardTrainer

from hf_cai.trainers.base import CAI_TAGS, CAIPreferenceTrainerMixin
from hf_cai.trainers.config import CAIPreferenceConfigMixin
from hf_cai.trainers.data import CHOSEN_PROB


@dataclass
class CAIRewardConfig(CAIPreferenceConfigMixin, RewardConfig):
    r"""TRL's :class:`~trl.RewardConfig` plus the CAI fields of
    :class:`~hf_cai.trainers.config.CAIPreferenceConfigMixin` (``constitution``, ``qlora_profile``, ``load_in_4bit``,
    ``soft_labels``: the ``chosen_prob`` column as the Bradley-Terry target); every TRL field keeps its TRL default.

    A ``qlora_profile`` sets the LoRA learning rate 1e-4 and loads a model given by name as a one-score sequence
    classifier, whose score head is trained in full.
    """

    _cai_stage = "reward"


class CAIRewardTrainer(CAIPreferenceTrainerMixin, RewardTrainer):
    """TRL's ``RewardTrainer`` with soft Bradley-Terry targets, QLoRA profiles, the constitution saved with every
    checkpoint and CAI tags.

    Takes exactly ``RewardTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in
    name or file) which overrides ``args.constitution``.
    """

    _tag_names = [*RewardTrainer._tag_names, *CAI_TAGS]
    _cai_config_class = CAIRewardConfig
    _cai_output_suffix = "Reward"
    _cai_model_task = "sequence-classification"
    _cai_hyperparameters = ("center_rewards_coefficient", "soft_labels")

    def _cai_after_trl_init(self) -> None:
        self._match_head_dtype()
        super()._cai_after_trl_init()

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
