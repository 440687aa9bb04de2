"""QLoRA profiles: settings per card size, explicit values win, LoRA learning rates, checkpoints sized to the run,
real 4-bit loading or plain LoRA, clear error without bitsandbytes."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from datasets import Dataset
from scripts.synthetic_cai import sl_cai_rows, split_prompts
from transformers import BitsAndBytesConfig, HfArgumentParser, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from hf_cai.modeling import ModelLoadError, compute_dtype, load_tokenizer
from hf_cai.trainers import (
    LORA_LEARNING_RATES,
    QLORA_PROFILES,
    CAIDPOConfig,
    CAIGRPOConfig,
    CAIRewardConfig,
    CAISFTConfig,
    CAISFTTrainer,
    get_profile,
    load_model_for_training,
    peft_config_for,
)
from hf_cai.trainers.qlora import CHECKPOINTS_KEPT, checkpoint_steps

pytestmark = pytest.mark.min_versions

CONFIGS = {"sft": CAISFTConfig, "dpo": CAIDPOConfig, "reward": CAIRewardConfig, "grpo": CAIGRPOConfig}


def test_gpu_profiles_keep_an_effective_batch_of_16_and_scale_with_memory():
    gpu = [QLORA_PROFILES[name] for name in ("8gb", "12gb", "16gb", "24gb")]
    for profile in gpu:
        assert profile.per_device_train_batch_size * profile.gradient_accumulation_steps == 16
        assert profile.load_in_4bit and profile.gradient_checkpointing and profile.optim == "paged_adamw_8bit"
        assert profile.target_modules == "all-linear"
    assert [p.max_length for p in gpu] == sorted(p.max_length for p in gpu)
    assert [p.lora_r for p in gpu] == sorted(p.lora_r for p in gpu)
    with pytest.raises(ValueError, match="unknown QLoRA profile '6gb'; choose one of: 8gb, 12gb, 16gb, 24gb, cpu"):
        get_profile("6gb")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallbacks")
def test_settings_resolve_for_this_machine_and_stage():
    sft = get_profile("16gb").training_arguments("sft")
    assert sft["optim"] == "adamw_torch" and sft["padding_free"] is False
    dpo = get_profile("16gb").training_arguments("dpo")
    assert (dpo["per_device_train_batch_size"], dpo["gradient_accumulation_steps"]) == (2, 8)
    assert "padding_free" not in dpo


def test_profile_precision_matches_the_dtype_models_load_in(tmp_path):
    settings = get_profile("cpu").training_arguments("sft")
    assert settings["bf16"] is (compute_dtype() == torch.bfloat16)
    assert settings["fp16"] is (compute_dtype() == torch.float16)
    config = CAISFTConfig(str(tmp_path), qlora_profile="cpu", report_to="none")  # TrainingArguments accepts them
    assert (config.bf16, config.fp16) == (settings["bf16"], settings["fp16"])
    if config.bf16 and not torch.cuda.is_available():
        assert config.use_cpu, "TrainingArguments takes bfloat16 on CPU only with use_cpu"


def test_profile_fills_defaults_but_explicit_values_win(tmp_path):
    config = CAISFTConfig(output_dir=str(tmp_path), qlora_profile="12gb", max_length=512, report_to="none")
    assert config.max_length == 512
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (2, 8)
    assert config.gradient_checkpointing is True
    dpo = CAIDPOConfig(output_dir=str(tmp_path), qlora_profile="12gb", report_to="none")
    assert (dpo.per_device_train_batch_size, dpo.gradient_accumulation_steps, dpo.max_length) == (1, 16, 2048)
    plain = CAISFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none")
    assert (plain.per_device_train_batch_size, plain.max_length) == (8, 1024), "no profile: TRL's defaults"


def test_explicit_values_win_even_when_they_equal_trl_defaults(tmp_path):
    # 8 and 1024 are TRL's defaults; the 8gb profile would set 1 and keep 1024, the cpu profile 2 and 512.
    config = CAISFTConfig(str(tmp_path), per_device_train_batch_size=8, qlora_profile="8gb", report_to="none")
    assert config.per_device_train_batch_size == 8 and config.gradient_accumulation_steps == 16
    config = CAISFTConfig(str(tmp_path), gradient_accumulation_steps=1, qlora_profile="8gb", report_to="none")
    assert config.per_device_train_batch_size == 1 and config.gradient_accumulation_steps == 1
    config = CAISFTConfig(
        str(tmp_path), qlora_profile="cpu", max_length=1024, gradient_checkpointing=True, report_to="none"
    )
    assert (config.max_length, config.gradient_checkpointing) == (1024, True)
    assert config.explicit_fields == {
        "output_dir",
        "qlora_profile",
        "max_length",
        "gradient_checkpointing",
        "report_to",
    }
    dpo = CAIDPOConfig(str(tmp_path), qlora_profile="cpu", learning_rate=1e-6, save_steps=500, report_to="none")
    assert (dpo.learning_rate, dpo.save_steps) == (1e-6, 500)


def test_a_config_given_every_field_keeps_every_value(tmp_path):
    """A parser passes every field: each is the user's, even where it equals TRL's default (1 here; the 8gb profile
    would set 16). ``hf-cai train`` constructs its config from the fields given only."""
    argv = ["--output_dir", str(tmp_path), "--qlora_profile", "8gb", "--max_length", "512", "--report_to", "none"]
    (config,) = HfArgumentParser(CAISFTConfig).parse_args_into_dataclasses([*argv, "--bf16", "false"])
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (8, 1)
    assert config.max_length == 512


def test_profile_learning_rates_apply_only_when_unset(tmp_path):
    assert LORA_LEARNING_RATES == {"sft": 2e-4, "dpo": 5e-6, "reward": 1e-4, "grpo": 1e-5}
    for stage, config_class in CONFIGS.items():
        profiled = config_class(str(tmp_path), qlora_profile="8gb", report_to="none")
        assert profiled.learning_rate == LORA_LEARNING_RATES[stage], stage
        chosen = config_class(str(tmp_path), qlora_profile="8gb", learning_rate=3e-5, report_to="none")
        assert chosen.learning_rate == 3e-5, stage
        plain = config_class(str(tmp_path), bf16=False, report_to="none")
        assert plain.learning_rate == config_class.__dataclass_fields__["learning_rate"].default, stage


def test_save_steps_scale_with_the_run(tmp_path):
    assert [checkpoint_steps(n) for n in (1, 5, 12, 15, 1000)] == [1, 1, 2, 2, 100]
    assert checkpoint_steps(-1) == 0.1, "a run sized by epochs: a tenth of its steps, as TrainingArguments reads it"
    assert CAIDPOConfig(str(tmp_path), qlora_profile="cpu", max_steps=12, report_to="none").save_steps == 2
    assert CAIDPOConfig(str(tmp_path), qlora_profile="cpu", num_train_epochs=2, report_to="none").save_steps == 0.1
    kept = CAIDPOConfig(str(tmp_path), qlora_profile="cpu", max_steps=12, save_steps=5, report_to="none")
    assert kept.save_steps == 5
    assert CAIDPOConfig(str(tmp_path), max_steps=12, bf16=False, report_to="none").save_steps == 500, "no profile"


def test_profiles_keep_the_two_newest_checkpoints_unless_told_otherwise(tmp_path):
    assert CHECKPOINTS_KEPT == 2
    for stage, config_class in CONFIGS.items():
        assert config_class(str(tmp_path), qlora_profile="cpu", report_to="none").save_total_limit == 2, stage
        chosen = config_class(str(tmp_path), qlora_profile="cpu", save_total_limit=5, report_to="none")
        assert chosen.save_total_limit == 5, stage
        assert config_class(str(tmp_path), bf16=False, report_to="none").save_total_limit is None, "no profile: TRL's"


def test_grpo_takes_the_profile_with_whole_groups_of_completions_per_step(tmp_path):
    # The cpu profile's 2 sequences a step would split GRPO's default groups of 8: the accumulation rises to 4.
    config = CAIGRPOConfig(str(tmp_path), qlora_profile="cpu", max_steps=20, report_to="none")
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (2, 4)
    assert (config.generation_batch_size, config.num_generations) == (8, 8)
    assert (config.learning_rate, config.save_steps, config.save_total_limit) == (1e-5, 2, 2)
    # transformers renamed gradient_checkpointing to activation_checkpointing after 5.0 (the lowest version tested).
    assert getattr(config, "activation_checkpointing", config.gradient_checkpointing) is False
    assert config.optim == "adamw_torch"
    fits = CAIGRPOConfig(str(tmp_path), qlora_profile="cpu", num_generations=2, report_to="none")
    assert fits.gradient_accumulation_steps == 1
    gpu = CAIGRPOConfig(str(tmp_path), qlora_profile="16gb", report_to="none")
    assert (gpu.per_device_train_batch_size, gpu.gradient_accumulation_steps, gpu.generation_batch_size) == (4, 4, 16)
    chosen = CAIGRPOConfig(str(tmp_path), qlora_profile="cpu", per_device_train_batch_size=4, num_generations=4,
                           gradient_accumulation_steps=3, report_to="none")
    assert (chosen.per_device_train_batch_size, chosen.gradient_accumulation_steps) == (4, 3)


class _Interrupt(Exception):
    pass


class _InterruptAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupt


def test_a_12_step_run_leaves_a_checkpoint_to_resume_from(tiny_model_dir, tmp_path, one_torch_thread):
    dataset = Dataset.from_list(sl_cai_rows(split_prompts(8, 0)[0]))
    tokenizer = load_tokenizer(tiny_model_dir)

    def trainer(callbacks=None):
        return CAISFTTrainer(
            model=str(tiny_model_dir),
            args=CAISFTConfig(str(tmp_path), qlora_profile="cpu", max_steps=12, report_to="none"),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
        )

    with pytest.raises(_Interrupt):
        trainer([_InterruptAtStep(7)]).train()
    checkpoint = get_last_checkpoint(str(tmp_path))
    assert checkpoint is not None and checkpoint.endswith("checkpoint-6")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]  # the newest two
    assert trainer().train(resume_from_checkpoint=checkpoint).global_step == 12
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-12"]


def test_load_in_4bit_false_trains_plain_lora(tiny_model_dir, tmp_path):
    model = load_model_for_training(str(tiny_model_dir), "8gb", load_in_4bit=False)
    assert not getattr(model, "is_loaded_in_4bit", False)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == compute_dtype()
    trainer = CAISFTTrainer(
        model=str(tiny_model_dir),
        args=CAISFTConfig(str(tmp_path), qlora_profile="cpu", load_in_4bit=False, report_to="none"),
        train_dataset=Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0])),
        processing_class=load_tokenizer(tiny_model_dir),
    )
    assert not getattr(trainer.model, "is_loaded_in_4bit", False)
    assert trainer.cai_training_record()["method"] == "lora"
    with pytest.raises(ValueError, match="load_in_4bit=True applies to models loaded with a qlora_profile"):
        CAISFTConfig(str(tmp_path), load_in_4bit=True, bf16=False, report_to="none")


def test_peft_config_for_profile():
    config = peft_config_for("24gb", task_type="SEQ_CLS")
    assert (config.r, config.lora_alpha, config.lora_dropout) == (64, 128, 0.05)
    assert config.target_modules == "all-linear" and config.task_type == "SEQ_CLS"


def test_load_model_for_training_quantises_to_nf4(tiny_model_dir, tiny_reward_model_dir):
    import bitsandbytes as bnb

    model = load_model_for_training(str(tiny_model_dir), "cpu")
    assert model.is_loaded_in_4bit
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert model.model.layers[0].self_attn.q_proj.weight.quant_state.quant_type == "nf4"
    assert not any(p.requires_grad for p in model.parameters()), "the base is frozen for (Q)LoRA"
    classifier = load_model_for_training(str(tiny_reward_model_dir), "cpu", task="sequence-classification")
    assert classifier.is_loaded_in_4bit and classifier.config.num_labels == 1
    assert type(classifier.score) is torch.nn.Linear, "the score head stays unquantised: it is trained in full"


def test_4bit_without_bitsandbytes_fails_before_training(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an unsupported platform looks like to Python
    dataset = Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0]))
    tokenizer = load_tokenizer(tiny_model_dir)
    with pytest.raises(ModelLoadError, match="4-bit \\(QLoRA\\) loading needs bitsandbytes"):
        CAISFTTrainer(
            model=str(tiny_model_dir),
            args=CAISFTConfig(output_dir=str(tmp_path), qlora_profile="cpu", report_to="none"),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    with pytest.raises(ModelLoadError, match="bitsandbytes"):
        CAISFTTrainer(
            model=str(tiny_model_dir),
            args=CAISFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none"),
            train_dataset=dataset,
            processing_class=tokenizer,
            quantization_config=BitsAndBytesConfig(load_in_4bit=True),
        )


def test_profile_refuses_competing_loading_options(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="qlora_profile='cpu' loads the model itself"):
        CAISFTTrainer(
            model=str(tiny_model_dir),
            args=CAISFTConfig(
                output_dir=str(tmp_path), qlora_profile="cpu", model_init_kwargs={"dtype": "float32"}, report_to="none"
            ),
            train_dataset=Dataset.from_list(sl_cai_rows(split_prompts(2, 0)[0])),
            processing_class=load_tokenizer(tiny_model_dir),
        )


def test_a_policy_adapter_whose_base_model_is_missing_says_which_base_and_what_to_do(tiny_model_dir, tmp_path):
    from scripts.saved_adapter import save_sft_adapter

    from hf_cai.modeling import load_causal_lm
    from hf_cai.trainers import load_model_for_training

    adapter = save_sft_adapter(tiny_model_dir, tmp_path / "sft")
    config_file = adapter / "adapter_config.json"
    missing = tmp_path / "moved-base-model"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": str(missing)}))
    for load in (lambda: load_causal_lm(adapter), lambda: load_model_for_training(str(adapter), "cpu")):
        with pytest.raises(ModelLoadError) as error:
            load()
        message = str(error.value)
        assert f"adapter '{adapter}'" in message and f"base model '{missing}'" in message
        assert str(config_file) in message and "base_model_name_or_path" in message
