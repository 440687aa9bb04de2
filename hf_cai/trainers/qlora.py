"""QLoRA presets: one named profile per GPU memory size, plus a CPU profile for tests and laptops.

A :class:`QLoRAProfile` bundles the choices that decide whether a 7-8B model trains on a consumer card: NF4 weights
(:func:`hf_cai.modeling.bnb_4bit_config`), a LoRA adapter on every linear layer, gradient checkpointing, paged 8-bit
AdamW, and a per-device batch / gradient-accumulation split that keeps the effective batch at 16. Profiles are used
three ways:

* ``CAISFTConfig(qlora_profile="8gb", ...)`` fills the training settings the user did not set
  (:func:`apply_profile_defaults`), and the CAI trainers load a model given by name in 4-bit with the profile's
  LoRA adapter (or continue the adapter, when the name is a saved adapter);
* :func:`load_model_for_training` and :func:`peft_config_for` give the same model and adapter to plain TRL code;
* :meth:`QLoRAProfile.training_arguments` lists the resolved settings for this machine.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from hf_cai.errors import InputError
from hf_cai.modeling import (
    ModelLoadError,
    adapter_base_model,
    check_4bit_support,
    compute_dtype,
    is_peft_adapter,
    keep_4bit_weights_differentiable,
    load_causal_lm,
    load_sequence_classifier,
    missing_base_model_error,
)

logger = logging.getLogger(__name__)

TrainingStage = Literal["sft", "dpo", "reward", "grpo"]
"""A training stage: supervised (SL-CAI), DPO, reward modelling or GRPO (RL-CAI); each has its own profile settings."""
ModelTask = Literal["causal-lm", "sequence-classification"]

_PREFERENCE_STAGES = ("dpo", "reward")

LORA_LEARNING_RATES: dict[str, float] = {
    # QLoRA paper (Dettmers et al. 2023, arXiv 2305.14314): 2e-4 for the 7B and 13B models (1e-4 from 33B up);
    # the alignment-handbook's zephyr-7b QLoRA SFT recipe uses the same.
    "sft": 2e-4,
    # alignment-handbook zephyr-7b-beta DPO recipes: 5e-6 for the QLoRA adapter against 5e-7 for full training. An
    # adapter's low-rank update needs a larger step; TRL's 1e-6 default (sized for full training) barely moves one.
    "dpo": 5e-6,
    # TRL's reward-modelling example: 1e-4 with LoRA against 1e-5 for full training (also RewardConfig's default).
    "reward": 1e-4,
    # TRL's reproduction of "LoRA Without Regret" (Schulman et al. 2025): GRPO at 1e-5 with LoRA against 1e-6 for full
    # training (also GRPOConfig's default).
    "grpo": 1e-5,
}
"""The learning rate a profile gives each stage when the user sets none: values published for LoRA / QLoRA training
of 7B-scale models, which train an adapter rather than the full weights."""

CHECKPOINT_FRACTION = 0.1
"""A profile checkpoints every tenth of the run (when the user sets no ``save_steps``), so short runs leave
checkpoints to resume from; TRL's fixed 500 steps would save none in a run shorter than that."""

CHECKPOINTS_KEPT = 2
"""A profile keeps the two newest checkpoints (``save_total_limit``, when the user sets none) instead of every one
with its optimizer state. Two, because resuming needs the one before the newest: when a kill cuts the newest short,
and when the newest holds the last step (see ``hf_cai.pipeline.stages.training``)."""


@dataclass(frozen=True)
class QLoRAProfile:
    """Memory-saving training settings for one class of hardware.

    Args:
        name: Profile name, e.g. ``"8gb"``.
        description: What the profile is sized for.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by ``lora_alpha / lora_r``).
        lora_dropout: Dropout on the LoRA input.
        target_modules: Modules that get an adapter; ``"all-linear"`` is every linear layer but the output head.
        load_in_4bit: Quantise the frozen base weights to NF4 (QLoRA). ``False`` trains plain LoRA.
        gradient_checkpointing: Recompute activations in the backward pass instead of storing them.
        optim: Optimizer on a CUDA GPU; elsewhere ``"adamw_torch"`` is used, since paged and 8-bit optimizers
            need CUDA.
        per_device_train_batch_size: Sequences per device and step for SFT. Preference stages (DPO, reward) put a
            chosen and a rejected sequence through the model for every pair, so they take half as many pairs per
            step and twice the accumulation, which keeps their activation memory near SFT's.
        gradient_accumulation_steps: Steps accumulated per optimizer update for SFT.
        max_length: Longest tokenised sequence (prompt + completion); longer ones are truncated.
        padding_free: Flatten each batch into one unpadded sequence (TRL's ``padding_free``) for SFT. TRL supports it
            only with FlashAttention 2, so it is applied only on a CUDA GPU with ``flash-attn`` installed.

    Every profile also sets the stage's LoRA learning rate (:data:`LORA_LEARNING_RATES`), mixed precision matching
    :func:`hf_cai.modeling.compute_dtype`, how many checkpoints are kept (:data:`CHECKPOINTS_KEPT`) and, from the
    run's length, ``save_steps`` (:func:`checkpoint_steps`). GRPO takes SFT's batch split (one completion is one
    sequence), with the accumulation raised where needed so that a step holds whole groups of ``num_generations``.
    """

    name: str
    description: str
    lora_r: int
    lora_alpha: int
    lora_dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    load_in_4bit: bool = True
    gradient_checkpointing: bool = True
    optim: str = "paged_adamw_8bit"
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    max_length: int = 1024
    padding_free: bool = True

    def training_arguments(self, stage: TrainingStage = "sft") -> dict[str, Any]:
        """The TRL/``TrainingArguments`` settings of this profile, resolved for this machine and training stage
        (``save_steps`` depends on the run's length and is set by :func:`apply_profile_defaults`)."""
        import torch

        if stage not in LORA_LEARNING_RATES:
            raise InputError(f"unknown training stage '{stage}'; use one of: {', '.join(LORA_LEARNING_RATES)}")
        batch_size = self.per_device_train_batch_size
        accumulation = self.gradient_accumulation_steps
        if stage in _PREFERENCE_STAGES and batch_size > 1:
            batch_size //= 2
            accumulation *= 2
        settings: dict[str, Any] = {
            "learning_rate": LORA_LEARNING_RATES[stage],
            "per_device_train_batch_size": batch_size,
            "gradient_accumulation_steps": accumulation,
            "gradient_checkpointing": self.gradient_checkpointing,
            "optim": self.optim if torch.cuda.is_available() else "adamw_torch",
            "save_total_limit": CHECKPOINTS_KEPT,
            **precision_arguments(),
        }
        if stage != "grpo":  # GRPO bounds what it generates with its own max_completion_length
            settings["max_length"] = self.max_length
        if stage == "sft":
            settings["padding_free"] = self.padding_free and flash_attention_available()
        return settings


QLORA_PROFILES: dict[str, QLoRAProfile] = {
    profile.name: profile
    for profile in (
        QLoRAProfile(
            name="8gb",
            description="7-8B model on an 8 GB card (RTX 3070/4060): rank 16, 1 sequence x 16 accumulation, 1024 tokens",
            lora_r=16,
            lora_alpha=32,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=16,
            max_length=1024,
        ),
        QLoRAProfile(
            name="12gb",
            description="7-8B model on a 12 GB card (RTX 3060/4070): rank 16, 2 x 8, 2048 tokens",
            lora_r=16,
            lora_alpha=32,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=8,
            max_length=2048,
        ),
        QLoRAProfile(
            name="16gb",
            description="7-8B model on a 16 GB card (RTX 4080, T4, V100): rank 32, 4 x 4, 2048 tokens",
            lora_r=32,
            lora_alpha=64,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=4,
            max_length=2048,
        ),
        QLoRAProfile(
            name="24gb",
            description="7-8B model on a 24 GB card (RTX 3090/4090, A10): rank 64, 4 x 4, 4096 tokens",
            lora_r=64,
            lora_alpha=128,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=4,
            max_length=4096,
        ),
        QLoRAProfile(
            name="cpu",
            description="small models on CPU (tests, laptops): rank 8, 2 x 1, 512 tokens, no checkpointing",
            lora_r=8,
            lora_alpha=16,
            gradient_checkpointing=False,
            optim="adamw_torch",
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            max_length=512,
            padding_free=False,
        ),
    )
}
"""The built-in profiles by name: ``"8gb"``, ``"12gb"``, ``"16gb"``, ``"24gb"`` and ``"cpu"``."""


def get_profile(profile: str | QLoRAProfile) -> QLoRAProfile:
    """A built-in profile by name (a :class:`QLoRAProfile` is returned as is)."""
    if isinstance(profile, QLoRAProfile):
        return profile
    try:
        return QLORA_PROFILES[str(profile).lower()]
    except KeyError as error:
        raise InputError(f"unknown QLoRA profile '{profile}'; choose one of: {', '.join(QLORA_PROFILES)}") from error


def precision_arguments() -> dict[str, bool]:
    """``bf16`` / ``fp16`` mixed precision matching :func:`~hf_cai.modeling.compute_dtype`, the dtype models are
    loaded in, so that training computes in the dtype the weights are stored in, on GPU and CPU alike."""
    import torch

    dtype = compute_dtype()
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def checkpoint_steps(max_steps: int) -> int | float:
    """``save_steps`` for a checkpoint every :data:`CHECKPOINT_FRACTION` of a run of ``max_steps`` optimizer steps.

    At least 1, so every run leaves a checkpoint; for a run sized by epochs (``max_steps <= 0``) the fraction
    itself, which ``TrainingArguments`` reads as a fraction of the total steps.
    """
    if max_steps <= 0:
        return CHECKPOINT_FRACTION
    return max(1, math.ceil(max_steps * CHECKPOINT_FRACTION))


def accelerator_available() -> bool:
    """Whether PyTorch sees an accelerator (CUDA, ROCm, XPU, MPS, ...) to train on."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def flash_attention_available() -> bool:
    """Whether FlashAttention 2 can run here (a CUDA GPU and the ``flash-attn`` package)."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    return torch.cuda.is_available() and is_flash_attn_2_available()


def peft_config_for(profile: str | QLoRAProfile, task_type: str = "CAUSAL_LM"):
    """The LoRA adapter configuration of a profile (``task_type="SEQ_CLS"`` for reward models)."""
    from peft import LoraConfig

    profile = get_profile(profile)
    target = profile.target_modules if isinstance(profile.target_modules, str) else list(profile.target_modules)
    return LoraConfig(
        r=profile.lora_r,
        lora_alpha=profile.lora_alpha,
        lora_dropout=profile.lora_dropout,
        target_modules=target,
        bias="none",
        task_type=task_type,
    )


def process_device_map() -> dict[str, int] | None:
    """Where a process loads its model: all of it on the process's own GPU (the layout QLoRA and DDP need).

    ``None`` (let the framework place the weights) on CPU, and under DeepSpeed or FSDP, which shard the model
    themselves.
    """
    import torch

    sharded = any(
        os.environ.get(flag, "false").lower() == "true" for flag in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP")
    )
    if not torch.cuda.is_available() or sharded:
        return None
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def load_model_for_training(
    model_id: str,
    profile: str | QLoRAProfile,
    *,
    task: ModelTask = "causal-lm",
    trust_remote_code: bool = False,
    load_in_4bit: bool | None = None,
):
    """Load a model ready for (Q)LoRA training with a profile.

    With 4-bit loading the weights are NF4-quantised and the model is prepared with PEFT's
    ``prepare_model_for_kbit_training``. For a base model the LoRA adapter itself is added by the trainer
    (``peft_config``); a saved PEFT adapter is loaded on its base model with trainable weights, to be trained
    further (see :func:`continue_adapter`).

    Args:
        model_id: Hub id or local folder of the base model, or of a PEFT adapter to continue training.
        profile: A profile name or object.
        task: ``"causal-lm"`` for SFT / DPO, ``"sequence-classification"`` (one score) for reward models.
        trust_remote_code: Run code from the model repository.
        load_in_4bit: Quantise the base to NF4; ``None`` follows the profile (4-bit for every built-in profile),
            ``False`` trains plain LoRA on a base in :func:`~hf_cai.modeling.compute_dtype`.

    Raises:
        ModelLoadError: The model cannot be loaded, or 4-bit was asked for where bitsandbytes cannot run.
    """
    from peft import prepare_model_for_kbit_training

    profile = get_profile(profile)
    quantise = profile.load_in_4bit if load_in_4bit is None else load_in_4bit
    if quantise:
        check_4bit_support()
    adapter = None
    if is_peft_adapter(model_id):
        adapter, model_id = model_id, adapter_base_model(model_id)
    device_map = process_device_map()
    loaders = {"causal-lm": load_causal_lm, "sequence-classification": load_sequence_classifier}
    if task not in loaders:
        raise InputError(f"unknown task '{task}'; use 'causal-lm' or 'sequence-classification'")
    try:
        model = loaders[task](model_id, load_in_4bit=quantise, device_map=device_map, trust_remote_code=trust_remote_code)
    except ModelLoadError as error:
        if adapter is None:
            raise
        raise missing_base_model_error(adapter, model_id, error) from None
    if profile.padding_free and flash_attention_available():
        model.set_attn_implementation("flash_attention_2")
    if quantise:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.gradient_checkpointing)
        keep_4bit_weights_differentiable(model)
    if adapter is not None:
        model = continue_adapter(model, adapter, task=task)
    return model


def continue_adapter(model: Any, adapter: str, *, task: ModelTask = "causal-lm"):
    """Put a saved LoRA adapter on a loaded base model with trainable weights, to train it further.

    For ``"causal-lm"``, and for a reward adapter on a sequence classifier, this is
    ``PeftModel.from_pretrained(model, adapter, is_trainable=True)``.

    A causal-LM adapter (an SFT adapter, say) on a sequence classifier (``task="sequence-classification"``: a
    one-score reward model of the same base) becomes a sequence-classification adapter: its LoRA weights start the
    reward model from that policy, and the classifier's new score head is trained in full (PEFT's
    ``modules_to_save``). An ``lm_head`` the adapter trained has no counterpart in a classifier and is left out. (The
    pipeline's reward stage does not use this: its reward model starts from the base model, as the paper's preference
    models started from the pretrained model.)

    Raises:
        ModelLoadError: The adapter cannot be loaded on this model, or holds weights the model has no place for.
    """
    from peft import (
        PeftConfig,
        PeftModel,
        TaskType,
        get_peft_model,
        get_peft_model_state_dict,
        load_peft_weights,
        set_peft_model_state_dict,
    )

    try:
        config = PeftConfig.from_pretrained(str(adapter))
        if task != "sequence-classification" or config.task_type == TaskType.SEQ_CLS:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        else:
            kept = [name for name in (config.modules_to_save or []) if name != "lm_head"]
            config = dataclasses.replace(
                config, task_type=TaskType.SEQ_CLS, modules_to_save=kept or None, inference_mode=False
            )
            model = get_peft_model(model, config)
            weights = {key: value for key, value in load_peft_weights(str(adapter)).items() if ".lm_head." not in key}
            # The new score head is not in the SFT adapter: it keeps its fresh initialisation.
            fresh = {key: value for key, value in get_peft_model_state_dict(model).items() if key not in weights}
            result = set_peft_model_state_dict(model, weights | fresh)
            if result.unexpected_keys:
                raise InputError(
                    f"the sequence classifier has no place for {len(result.unexpected_keys)} of its weights, e.g. "
                    f"{result.unexpected_keys[0]}"
                )
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load the adapter '{adapter}' for training: {error}") from None
    logger.info("continuing the adapter %s (%s trainable parameters)", adapter, f"{count_trainable(model):,}")
    return model


def count_trainable(model: Any) -> int:
    """Number of parameters that receive gradients."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def apply_profile_defaults(
    config: Any, profile: str | QLoRAProfile, stage: TrainingStage, *, explicit: Collection[str] = ()
) -> list[str]:
    """Set the profile's training settings on ``config``, except the fields named in ``explicit``.

    ``explicit`` holds the fields the user set (whatever their value: setting TRL's default is a choice too). Besides
    :meth:`QLoRAProfile.training_arguments`, ``save_steps`` is sized to the run (:func:`checkpoint_steps`) unless
    ``load_best_model_at_end`` ties it to ``eval_steps``, GRPO's accumulation is fitted to ``num_generations``
    (:func:`_whole_groups_accumulation`), and ``use_cpu`` is set when bfloat16 is to run without a bfloat16 GPU
    (``TrainingArguments`` refuses that otherwise). Returns the names of the fields that were changed.
    """
    from transformers.utils import is_torch_bf16_gpu_available

    profile = get_profile(profile)
    settings = profile.training_arguments(stage)
    if not getattr(config, "load_best_model_at_end", False):
        settings["save_steps"] = checkpoint_steps(getattr(config, "max_steps", -1))
    batch_fields = ("gradient_accumulation_steps", "generation_batch_size", "steps_per_generation")
    if stage == "grpo" and not any(name in explicit for name in batch_fields):
        settings["gradient_accumulation_steps"] = _whole_groups_accumulation(config, settings, explicit)
    applied = []
    for name, value in settings.items():
        if name not in explicit and hasattr(config, name) and getattr(config, name) != value:
            setattr(config, name, value)
            applied.append(name)
    if config.bf16 and not is_torch_bf16_gpu_available() and "use_cpu" not in explicit and not config.use_cpu:
        config.use_cpu = True
        applied.append("use_cpu")
    if applied:
        logger.info(
            "QLoRA profile '%s' set %s",
            profile.name,
            ", ".join(f"{name}={getattr(config, name)!r}" for name in applied),
        )
    return applied


def _whole_groups_accumulation(config: Any, settings: dict[str, Any], explicit: Collection[str]) -> int:
    """The profile's accumulation for GRPO, raised until a step's completions (per-device batch x accumulation)
    hold whole groups of ``num_generations``: GRPO compares the completions of one prompt with each other, and
    ``GRPOConfig`` refuses a generation batch that splits a group."""
    batch = config.per_device_train_batch_size if "per_device_train_batch_size" in explicit else (
        settings["per_device_train_batch_size"]
    )
    generations = getattr(config, "num_generations", None) or 1
    accumulation = settings["gradient_accumulation_steps"]
    while (batch * accumulation) % generations:
        accumulation += 1
    return accumulation
