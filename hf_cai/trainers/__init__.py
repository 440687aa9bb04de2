"""TRL-compatible Constitutional AI trainers.

``CAISFTTrainer`` / ``CAIDPOTrainer`` / ``CAIRewardTrainer`` / ``CAIGRPOTrainer`` subclass TRL's ``SFTTrainer`` /
``DPOTrainer`` / ``RewardTrainer`` / ``GRPOTrainer`` and take the same arguments (plus an optional ``constitution=``);
their configs subclass TRL's and only add fields. :class:`ConstitutionalReward` is a TRL reward function for
``GRPOTrainer``, ``RLOOTrainer`` and ``OnlineDPOTrainer``. QLoRA presets live in :mod:`hf_cai.trainers.qlora`.

What a trainer output folder holds
----------------------------------
Every checkpoint folder (``checkpoint-N/``) and the folder of ``trainer.save_model()`` contain what TRL writes (the
PEFT adapter ``adapter_config.json`` + ``adapter_model.safetensors``, or full weights; the tokenizer; ``README.md``
in the output folder), plus:

* ``constitution.yaml``: the constitution the model was trained with (written when one is known, see
  :func:`hf_cai.trainers.base.resolve_training_constitution`); ``Constitution.load`` reads it back.
* ``cai_training.json``: a record of the run, read by the model-card builder. Keys (``schema_version`` 1):

  - ``schema_version`` (int): 1.
  - ``stage`` (str): ``"sft"``, ``"dpo"``, ``"reward"`` or ``"grpo"``.
  - ``method`` (str): ``"qlora"`` (adapter on a quantised base), ``"lora"`` or ``"full"``.
  - ``trainer`` (str): trainer class name, e.g. ``"CAIDPOTrainer"``.
  - ``base_model`` (str | null): name or path of the base model.
  - ``base_weights`` (object | null): for a base model converted from a GGUF file, the file the weights came from
    (:func:`hf_cai.gguf.weights_source`: ``file``, ``sha256``, ``quantization``, ``tensor_types``, ``hub_id``, ...);
    null when ``base_model`` is loaded as it is.
  - ``initial_adapter`` (str | null): the saved adapter (folder or Hub id) the training started from and trained
    further, when the model was given by its name; ``"(a PeftModel passed in)"`` for a loaded ``PeftModel``;
    null when the trained weights started from ``base_model`` alone (a new adapter, or full training).
  - ``quantization`` (str | null): ``"nf4"`` (or another 4-bit type, ``"int8"``) when the base was quantised.
  - ``lora`` (object | null): ``peft_type``, ``task_type``, ``r``, ``alpha``, ``dropout``, ``target_modules``
    (list or string), ``modules_to_save`` (list | null).
  - ``qlora_profile`` (str | null): the profile name, when one was used.
  - ``hyperparameters`` (object): ``learning_rate``, ``lr_scheduler_type``, ``warmup_steps``, ``weight_decay``,
    ``num_train_epochs``, ``max_steps``, ``per_device_train_batch_size``, ``gradient_accumulation_steps``,
    ``max_length``, ``optim``, ``gradient_checkpointing``, ``bf16``, ``fp16``, ``seed``, and per stage: SFT
    ``assistant_only_loss``, ``completion_only_loss``, ``packing``, ``padding_free``, ``loss_type``; DPO ``beta``,
    ``loss_type``, ``loss_weights``, ``precompute_ref_log_probs``, ``soft_labels``; reward
    ``center_rewards_coefficient``, ``soft_labels``; GRPO ``beta``, ``num_generations``, ``max_completion_length``,
    ``loss_type``, ``temperature`` (config fields absent from a plain TRL config are left out).
  - ``effective_batch_size`` (int): per-device batch x accumulation x processes.
  - ``soft_labels`` (bool, DPO and reward only): whether the ``chosen_prob`` soft labels were trained on.
  - ``dataset_sizes`` (object): ``train`` and ``eval`` row counts after preprocessing (null when unknown or absent;
    an object per name for several eval sets).
  - ``constitution`` (object | null): ``name``, ``version``, ``sha256``.
  - ``global_step`` (int): optimizer steps done when the folder was written.
  - ``metrics`` (object): the end-of-training summary (``train_loss``, ``train_runtime``, ...) once training
    finished, else the last logged training metrics.
  - ``hardware`` (object): ``device_type`` (``"cuda"``, ``"cpu"``, ...), ``device_name``, ``num_processes``.
  - ``versions`` (object): installed versions of hf-cai, torch, transformers, trl, peft, datasets, accelerate and
    bitsandbytes (null when absent).
"""

from __future__ import annotations

from hf_cai._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CAISFTConfig": "hf_cai.trainers.sft",
    "CAISFTTrainer": "hf_cai.trainers.sft",
    "CAIDPOConfig": "hf_cai.trainers.dpo",
    "CAIDPOTrainer": "hf_cai.trainers.dpo",
    "CAIRewardConfig": "hf_cai.trainers.reward",
    "CAIRewardTrainer": "hf_cai.trainers.reward",
    "CAIGRPOConfig": "hf_cai.trainers.grpo",
    "CAIGRPOTrainer": "hf_cai.trainers.grpo",
    "ConstitutionalReward": "hf_cai.trainers.rewards",
    "QLoRAProfile": "hf_cai.trainers.qlora",
    "QLORA_PROFILES": "hf_cai.trainers.qlora",
    "LORA_LEARNING_RATES": "hf_cai.trainers.qlora",
    "get_profile": "hf_cai.trainers.qlora",
    "load_model_for_training": "hf_cai.trainers.qlora",
    "continue_adapter": "hf_cai.trainers.qlora",
    "peft_config_for": "hf_cai.trainers.qlora",
    "DatasetFormatError": "hf_cai.trainers.data",
    "ChatTemplateError": "hf_cai.trainers.templates",
    "tokenize_conversation": "hf_cai.trainers.templates",
    "CONSTITUTION_FILE": "hf_cai.artifact_files",
    "TRAINING_METADATA_FILE": "hf_cai.trainers.artifacts",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
