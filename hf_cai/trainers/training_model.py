"""The model a CAI trainer hands to TRL: loaded with the config's QLoRA profile, or a saved adapter continued."""

from __future__ import annotations

from typing import Any

from hf_cai.errors import InputError
from hf_cai.gguf import resolve_model
from hf_cai.modeling import adapter_base_model, check_4bit_support, is_peft_adapter
from hf_cai.trainers.qlora import (
    ModelTask,
    continue_adapter,
    get_profile,
    load_model_for_training,
    peft_config_for,
)


def prepare_training_model(model: Any, args: Any, peft_config: Any, quantization_config: Any, task: ModelTask):
    """``(model, peft_config)`` for TRL: a model given by name is loaded with the QLoRA profile of ``args``, and the
    adapter defaults to the profile's.

    A name that is a saved PEFT adapter (folder or Hub id) is loaded on its base with trainable adapter weights, to be
    trained further, with or without a profile. Anything else is returned for TRL to load: as given, or for an
    embedded model alias or a ``.gguf`` file, its converted folder.
    """
    from peft import PeftModel
    from transformers import set_seed

    if quantization_config is not None and getattr(quantization_config, "load_in_4bit", False):
        check_4bit_support()
    continuing = isinstance(model, str) and is_peft_adapter(model)
    if continuing and peft_config is not None:
        raise InputError(
            f"model '{model}' is a saved adapter, which the trainer trains further, so `peft_config` (a new "
            "adapter) cannot be used with it. Drop `peft_config` to continue the adapter, or pass its base model "
            f"('{adapter_base_model(model)}') to train a new adapter."
        )
    profile_name = getattr(args, "qlora_profile", None)
    if isinstance(model, str):
        # A sequence classifier gets a freshly initialised score head: seed first, as TRL does.
        set_seed(args.seed)
    if profile_name is None:
        if continuing:
            if quantization_config is not None:
                raise InputError(
                    f"model '{model}' is a saved adapter, which the trainer loads itself; `quantization_config` "
                    "applies to base models only. Set `qlora_profile` to load its base in 4-bit, or load the "
                    "model yourself and pass it."
                )
            model = continue_adapter(_load_base_as_trl_does(adapter_base_model(model), args, task), model, task=task)
        elif isinstance(model, str):
            model = resolve_model(model)  # TRL loads a converted folder; it cannot read an alias or a .gguf file
        return model, peft_config
    profile = get_profile(profile_name)
    if isinstance(model, str):
        if quantization_config is not None or args.model_init_kwargs:
            raise InputError(
                f"qlora_profile='{profile.name}' loads the model itself (4-bit NF4 on one device per process); "
                "do not also pass `quantization_config` or `model_init_kwargs`. Either drop the profile, or load "
                "the model yourself and pass the model object."
            )
        model = load_model_for_training(
            model,
            profile,
            task=task,
            trust_remote_code=args.trust_remote_code,
            load_in_4bit=getattr(args, "load_in_4bit", None),
        )
    if peft_config is None and not isinstance(model, PeftModel):
        peft_config = peft_config_for(
            profile, task_type="SEQ_CLS" if task == "sequence-classification" else "CAUSAL_LM"
        )
    return model, peft_config


def _load_base_as_trl_does(model_id: str, args: Any, task: ModelTask):
    """Load a base model the way TRL loads a model given by name (``args.model_init_kwargs``, float32 by default)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.trainer.utils import create_model_from_path

    kwargs = dict(args.model_init_kwargs or {})
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    architecture = AutoModelForCausalLM
    if task == "sequence-classification":
        architecture = AutoModelForSequenceClassification
        kwargs["num_labels"] = 1
    return create_model_from_path(str(resolve_model(model_id)), architecture, **kwargs)
