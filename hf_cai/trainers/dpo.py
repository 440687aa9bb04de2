"""RL-CAI with DPO: learn from AI-feedback preferences, optionally with the feedback model's soft labels.

``CAIDPOTrainer`` is TRL's ``DPOTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`.
The reference model never costs a second copy of the base weights (TRL's behaviour with PEFT):

* a new LoRA/QLoRA adapter (``peft_config``, or a profile on a base model): the reference is the same network with
  the adapter switched off, i.e. the base model;
* a saved adapter, given by name (folder or Hub id, e.g. the SFT stage's output) or as a trainable ``PeftModel``:
  the adapter is trained further, and TRL keeps a frozen copy of it as a second adapter named ``"ref"``, so the
  reference is the starting (SFT) policy, as RL-CAI prescribes, not the bare base.

``precompute_ref_log_probs=True`` (TRL's option) removes the reference forward pass from training altogether.

Soft labels. When the dataset has a ``chosen_prob`` column (the feedback model's probability that ``chosen`` is the
better reply), the loss of a pair with implicit reward margin x = beta * delta is the cross-entropy against that
probability::

    loss = -p * log(sigmoid(x)) - (1 - p) * log(sigmoid(-x))

which is TRL's sigmoid loss at p = 1 and is minimised at margin 0 when p = 0.5. Because
log(sigmoid(x)) - log(sigmoid(-x)) = x, it equals TRL's sigmoid loss plus (1 - p) * x, which is how it is computed:
TRL computes its loss unchanged, and the trainer adds the mean of (1 - p) * x using the policy and reference
log-probabilities recorded from the same forward passes. Without a ``chosen_prob`` column (or with
``soft_labels=False``) nothing is added and training is exactly TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer import utils as trl_utils

from hf_cai.errors import InputError
from hf_cai.trainers.base import CAI_TAGS, CAIPreferenceTrainerMixin, require_trl
from hf_cai.trainers.config import CAIPreferenceConfigMixin
from hf_cai.trainers.data import CHOSEN_PROB


@dataclass
class CAIDPOConfig(CAIPreferenceConfigMixin, DPOConfig):
    r"""TRL's :class:`~trl.DPOConfig` plus the CAI fields of :class:`~hf_cai.trainers.config.CAIPreferenceConfigMixin`
    (``constitution``, ``qlora_profile``, ``load_in_4bit``, ``soft_labels``); every TRL field keeps its TRL default.

    A ``qlora_profile`` sets half the SFT batch per device with twice the accumulation and the LoRA learning rate
    5e-6; the disabled state of its adapter is the reference model. A saved adapter given by name (e.g. the SFT
    model) is trained further instead, against a frozen copy of itself.
    """

    _cai_stage = "dpo"


class CAIDPOTrainer(CAIPreferenceTrainerMixin, DPOTrainer):
    """TRL's ``DPOTrainer`` with soft AI-feedback labels, QLoRA profiles, the constitution saved with every
    checkpoint and CAI tags.

    Takes exactly ``DPOTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in
    name or file) which overrides ``args.constitution``. Accepts the RL-CAI preference dataset (``prompt``,
    ``chosen``, ``rejected``, ``chosen_prob``) and the SL-CAI ``train_prefs`` split (a string ``prompt`` beside
    ``chosen`` / ``rejected`` conversations, whose shared first turn becomes the prompt).

    Soft labels need TRL's plain ``"sigmoid"`` loss (alone or combined with others, e.g. ``["sigmoid", "sft"]``),
    the default f-divergence, no ``ld_alpha`` and no ``use_weighting``; other settings with a ``chosen_prob`` column
    are refused before training (set ``soft_labels=False`` to train them on hard labels).
    """

    _tag_names = [*DPOTrainer._tag_names, *CAI_TAGS]
    _cai_config_class = CAIDPOConfig
    _cai_output_suffix = "DPO"
    _cai_hyperparameters = ("beta", "loss_type", "loss_weights", "precompute_ref_log_probs", "soft_labels")

    def _cai_prepare_stage(self, arguments: dict[str, Any], splits: dict[str, Any]) -> None:
        """The preference checks, and the refusal of loss settings soft labels are not defined for."""
        super()._cai_prepare_stage(arguments, splits)
        if self.soft_labels:
            _check_soft_label_loss(arguments["args"])
            if not hasattr(trl_utils, "add_fused_lm_head"):
                require_trl(
                    "soft-label DPO reads the log-probs of TRL's fused LM head (trl.trainer.utils.add_fused_lm_head)"
                )

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != CHOSEN_PROB})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's DPO loss, plus the soft-label term ``mean((1 - p) * beta * delta)`` when the batch has chosen_prob."""
        chosen_prob = inputs.pop(CHOSEN_PROB, None)
        if chosen_prob is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        recorder = _FusedLogProbRecorder(self._log_prob_modules())
        with recorder:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = result if return_outputs else (result, None)
        margin = self.beta * self._log_ratio_difference(recorder.log_probs, inputs)
        weight = self.loss_weights[self.loss_types.index("sigmoid")]
        loss = loss + weight * ((1.0 - chosen_prob.to(margin.device, margin.dtype)) * margin).mean()
        return (loss, outputs) if return_outputs else loss

    def _log_prob_modules(self) -> list[torch.nn.Module]:
        modules = [self.accelerator.unwrap_model(self.model)]
        if self.ref_model is not None:
            modules.append(self.accelerator.unwrap_model(self.ref_model))
        return modules

    def _log_ratio_difference(self, recorded: list[torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
        """delta = (policy - reference log-prob of chosen) - (policy - reference log-prob of rejected), per pair."""
        expected = 1 if self.precompute_ref_logps else 2
        if len(recorded) < expected:
            raise RuntimeError(
                f"soft-label DPO expected {expected} fused log-prob forward passes, saw {len(recorded)}; this TRL "
                "version computes DPO log-probs differently, so set soft_labels=False."
            )
        # Same reduction as TRL: sum of per-token log-probs over the shifted completion positions.
        length = inputs["completion_mask"].size(1) - 1
        policy = recorded[0][:, -length:].sum(dim=1)
        policy_chosen, policy_rejected = policy.chunk(2, dim=0)
        if self.precompute_ref_logps:
            reference_chosen, reference_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            reference_chosen, reference_rejected = recorded[1][:, -length:].sum(dim=1).chunk(2, dim=0)
        return (policy_chosen - reference_chosen.to(policy.device)) - (
            policy_rejected - reference_rejected.to(policy.device)
        )


def _check_soft_label_loss(args: Any) -> None:
    loss_types = [args.loss_type] if isinstance(args.loss_type, str) else list(args.loss_type)
    problems = []
    if "sigmoid" not in loss_types:
        problems.append(f"loss_type={loss_types} has no 'sigmoid'")
    if args.f_divergence_type != "reverse_kl":
        problems.append(f"f_divergence_type='{args.f_divergence_type}'")
    if args.ld_alpha is not None:
        problems.append(f"ld_alpha={args.ld_alpha}")
    if args.use_weighting:
        problems.append("use_weighting=True")
    if problems:
        raise InputError(
            f"soft labels ('{CHOSEN_PROB}' column) work with the standard sigmoid DPO loss only, but {'; '.join(problems)}. "
            "Use the default loss settings, or set soft_labels=False to train on hard labels."
        )


class _FusedLogProbRecorder:
    """Collect the per-token log-probs of every fused-LM-head forward pass of some modules, in call order.

    TRL's DPO computes the policy pass (with gradients) and then the reference pass with ``fused_lm_head=True``;
    forward hooks on the outermost modules see both, whatever wraps them (DDP, PEFT).
    """

    def __init__(self, modules: list[torch.nn.Module]):
        self.modules = modules
        self.log_probs: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _hook(self, module, args, kwargs, output):
        if kwargs.get("fused_lm_head"):
            self.log_probs.append(output.log_probs)

    def __enter__(self) -> _FusedLogProbRecorder:
        self._handles = [m.register_forward_hook(self._hook, with_kwargs=True) for m in self.modules]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
