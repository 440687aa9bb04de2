"""GRPO's config with the CAI fields, so that a QLoRA profile fills GRPO's settings as it does the other stages'.

GRPO itself is TRL's ``GRPOTrainer`` with a :class:`~hf_cai.trainers.rewards.ConstitutionalReward`; the policy it
trains is loaded with :func:`~hf_cai.trainers.qlora.load_model_for_training` (the SFT adapter, in 4-bit where asked).
"""

from __future__ import annotations

from dataclasses import dataclass

from trl import GRPOConfig

from hf_cai.trainers.config import CAIConfigMixin


@dataclass
class CAIGRPOConfig(CAIConfigMixin, GRPOConfig):
    r"""TRL's :class:`~trl.GRPOConfig` plus the CAI fields of :class:`~hf_cai.trainers.config.CAIConfigMixin`;
    every TRL field keeps its TRL default.

    A ``qlora_profile`` fills the settings the config was not given: the LoRA learning rate 1e-5, the profile's
    per-device batch and accumulation (raised where needed so that an optimizer step holds whole groups of
    ``num_generations`` completions), optimizer, precision, gradient checkpointing, the checkpoint interval and how
    many checkpoints are kept. ``GRPOTrainer`` does not load models with the profile: pass it the model from
    :func:`~hf_cai.trainers.qlora.load_model_for_training`.
    """

    _cai_stage = "grpo"
