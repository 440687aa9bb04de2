"""RL-CAI with GRPO: the policy samples groups of replies, and a constitutional reward ranks each group.

``CAIGRPOTrainer`` is TRL's ``GRPOTrainer`` plus the CAI additions of :class:`~hf_cai.trainers.base.CAITrainerMixin`
(the constitution saved with every checkpoint, QLoRA model loading from a profile, ``cai_training.json``, CAI tags);
code written for ``GRPOTrainer`` / ``GRPOConfig`` runs unchanged with ``CAIGRPOTrainer`` / ``CAIGRPOConfig``. The
reward is any of TRL's reward functions or models; :class:`~hf_cai.trainers.rewards.ConstitutionalReward` ranks the
completions of a prompt against each other with a trained preference model or a feedback model and the constitution.

The prompts are the dataset's ``prompt`` column, as in TRL. The SL-CAI and RL-CAI datasets keep the red-team prompt as
plain text beside conversations (``messages``, or ``chosen`` / ``rejected``); there the prompt becomes the
conversation's turns before its last reply, so that the chat template frames it as the other stages saw it.

A saved adapter given by name (the SFT model) is trained further; with ``beta > 0`` TRL's reference is a frozen copy
of it, which is not saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_cai.quiet import IMPORT_TIME_LOGGERS, loggers_at_error
from hf_cai.trainers.base import CAI_TAGS, CAITrainerMixin
from hf_cai.trainers.config import CAIConfigMixin
from hf_cai.trainers.data import DatasetFormatError, check_chat_template, column_names, first_example, is_conversation

# TRL's GRPO module imports bitsandbytes, whose CPU backend warns about an optional Hub kernel when imported offline.
with loggers_at_error(IMPORT_TIME_LOGGERS):
    from trl import GRPOConfig, GRPOTrainer

CONVERSATION_COLUMNS = ("messages", "chosen")
"""Conversational columns whose turns before the last reply replace a plain-text 'prompt' beside them."""


@dataclass
class CAIGRPOConfig(CAIConfigMixin, GRPOConfig):
    r"""TRL's :class:`~trl.GRPOConfig` plus the CAI fields of :class:`~hf_cai.trainers.config.CAIConfigMixin`
    (``constitution``, ``qlora_profile``, ``load_in_4bit``); every TRL field keeps its TRL default.

    A ``qlora_profile`` fills the settings the config was not given: the LoRA learning rate 1e-5, the profile's
    per-device batch and accumulation (raised where needed so that an optimizer step holds whole groups of
    ``num_generations`` completions), optimizer, precision, gradient checkpointing, the checkpoint interval and how
    many checkpoints are kept; :class:`CAIGRPOTrainer` loads a model given by name with it.
    """

    _cai_stage = "grpo"


class CAIGRPOTrainer(CAITrainerMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with QLoRA profiles, the constitution saved with every checkpoint and CAI tags.

    Takes exactly ``GRPOTrainer``'s arguments, plus ``constitution`` (a :class:`~hf_cai.Constitution`, built-in name
    or file) which overrides ``args.constitution``. Accepts any dataset with a ``prompt`` column, including the SL-CAI
    and RL-CAI datasets (see the module docstring). For a reward that follows the constitution pass
    :class:`~hf_cai.trainers.rewards.ConstitutionalReward` as ``reward_funcs``::

        reward = ConstitutionalReward.from_reward_model("runs/demo/reward/final")
        trainer = CAIGRPOTrainer(model="runs/demo/sft/final", reward_funcs=reward, args=CAIGRPOConfig(...), ...)
    """

    _tag_names = [*GRPOTrainer._tag_names, *CAI_TAGS]
    _cai_config_class = CAIGRPOConfig
    _cai_output_suffix = "GRPO"
    _cai_trl_internals = ()
    _cai_hyperparameters = ("beta", "num_generations", "max_completion_length", "loss_type", "temperature")

    def _cai_prepare_stage(self, arguments: dict[str, Any], splits: dict[str, Any]) -> None:
        for split, dataset in splits.items():
            columns = column_names(dataset)
            if columns is not None and "prompt" not in columns:
                raise DatasetFormatError(
                    f"the {split} dataset has columns {sorted(columns)}; GRPO training expects a 'prompt' column (plain "
                    "text or a conversation) and generates the replies itself. A builder output or a file of prompts "
                    "(one 'prompt' per row) fits."
                )

    def _cai_drop_string_prompt(self, dataset: Any) -> Any:
        """The dataset with a plain-text 'prompt' beside a conversation replaced by that conversation's turns before
        its last reply (TRL would send the bare text to the model, without the chat template)."""
        if dataset is None:
            return None
        example = first_example(dataset)
        if example is None or not isinstance(example.get("prompt"), str):
            return dataset
        column = next((name for name in CONVERSATION_COLUMNS if is_conversation(example.get(name))), None)
        if column is None:
            return dataset
        return dataset.map(lambda row: {"prompt": _turns_before_last_reply(row[column])})

    def _cai_after_trl_init(self) -> None:
        # GRPO prepares no dataset in TRL's _prepare_dataset, where the other trainers check a template made final in
        # TRL's __init__ (a loaded processing class, a chat_template_path): check it here.
        if not self._cai_chat_templates_checked:
            for split, dataset in {"train": self.train_dataset, "eval": self.eval_dataset}.items():
                if dataset is not None and not isinstance(dataset, dict):
                    check_chat_template(self.processing_class, dataset, split=split)


def _turns_before_last_reply(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if conversation and conversation[-1].get("role") == "assistant":
        return conversation[:-1]
    return conversation
