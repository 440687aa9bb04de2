"""The rewards of ``hf-cai train grpo``: TRL's GRPO script arguments, plus a feedback model, made into reward functions.

``reward_model_name_or_path`` is a preference model (a ``hf-cai train reward`` output, adapter or full weights, or any
one-score sequence classifier) and ``feedback_model_name_or_path`` a chat model asked the constitution's
multiple-choice questions. Either becomes a :class:`~hf_cai.trainers.ConstitutionalReward`, which ranks each prompt's
completions against each other: a completion's reward is its average probability of being the better reply in its
group. ``reward_funcs`` adds, as in TRL's ``grpo.py``, functions of ``trl.rewards`` by name or any function by dotted
import path (``my_rewards.length_penalty``); TRL sums the rewards.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from trl.scripts.grpo import GRPOScriptArguments

from hf_cai.errors import InputError

TRL_REWARD_FUNCTIONS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")
"""The functions of ``trl.rewards`` that ``reward_funcs`` may name."""


@dataclass
class GRPORewardArguments(GRPOScriptArguments):
    """TRL's GRPO script arguments (``dataset_name``, ..., ``reward_model_name_or_path``, ``reward_funcs``) plus
    ``feedback_model_name_or_path``; see the module docstring for what each reward means here."""

    feedback_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Chat model (Hub id or folder) that compares each prompt's completions by the constitution's "
            "multiple-choice questions; needs `constitution`."
        },
    )


def reward_functions(script_args: GRPORewardArguments, config: Any) -> list[Any]:
    """The reward functions the GRPO trainer sums, in the order: preference model, feedback model, ``reward_funcs``.

    Raises:
        InputError: No reward is given, a feedback model comes without a constitution, or a ``reward_funcs`` entry
            names nothing that can be imported.
    """
    from hf_cai.trainers import ConstitutionalReward

    rewards: list[Any] = []
    if script_args.reward_model_name_or_path:
        # Loaded as it was trained: NF4 exactly when its training quantised the base (see RewardModelJudge.load).
        rewards.append(
            ConstitutionalReward.from_reward_model(
                script_args.reward_model_name_or_path, trust_remote_code=config.trust_remote_code
            )
        )
    if script_args.feedback_model_name_or_path:
        if config.constitution is None:
            raise InputError(
                "feedback_model_name_or_path asks the constitution's questions: set `constitution` (a built-in name "
                "or a file)"
            )
        from hf_cai.backends import TransformersBackend
        from hf_cai.trainers import get_profile

        # In 4-bit exactly when the policy is: load_in_4bit, else the profile's choice.
        quantise = config.load_in_4bit
        if quantise is None:
            quantise = config.qlora_profile is not None and get_profile(config.qlora_profile).load_in_4bit
        backend = TransformersBackend(
            script_args.feedback_model_name_or_path,
            load_in_4bit=quantise,
            trust_remote_code=config.trust_remote_code,
        )
        rewards.append(ConstitutionalReward.from_feedback_model(backend, config.constitution))
    rewards.extend(_named_function(name) for name in script_args.reward_funcs or ())
    if not rewards:
        raise InputError(
            "GRPO needs a reward: set reward_model_name_or_path (a `hf-cai train reward` output), "
            "feedback_model_name_or_path (with a constitution), or reward_funcs"
        )
    return rewards


def _named_function(name: str) -> Any:
    if name in TRL_REWARD_FUNCTIONS:
        import trl.rewards

        return getattr(trl.rewards, name)
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise InputError(
            f"reward_funcs: unknown function '{name}'; name one of {', '.join(TRL_REWARD_FUNCTIONS)} or a dotted "
            "import path (module.function)"
        )
    # A module beside the config, as TRL's grpo.py finds it.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise InputError(f"reward_funcs: cannot import '{name}': {error}") from None
    if not callable(function):
        raise InputError(f"reward_funcs: '{name}' is not a function")
    return function
