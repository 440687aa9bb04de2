"""QLoRA profiles: settings per card size, explicit values win, real 4-bit loading, clear error without bitsandbytes."""

from __future__ import annotations

import sys

import pytest
import torch
from datasets import Dataset
from scripts.synthetic_cai import sl_cai_rows, split_prompts
from transformers import BitsAndBytesConfig

from hf_cai.modeling import ModelLoadError, load_tokenizer
from hf_cai.trainers import (
    QLORA_PROFILES,
    CAIDPOConfig,
    CAISFTConfig,
    CAISFTTrainer,
    get_profile,
    load_model_for_training,
    peft_config_for,
)


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
    assert sft["optim"] == "adamw_torch" and sft["bf16"] is False and sft["padding_free"] is False
    dpo = get_profile("16gb").training_arguments("dpo")
    assert (dpo["per_device_train_batch_size"], dpo["gradient_accumulation_steps"]) == (2, 8)
    assert "padding_free" not in dpo


def test_profile_fills_defaults_but_explicit_values_win(tmp_path):
    config = CAISFTConfig(output_dir=str(tmp_path), qlora_profile="12gb", max_length=512, report_to="none")
    assert config.max_length == 512
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (2, 8)
    assert config.gradient_checkpointing is True
    dpo = CAIDPOConfig(output_dir=str(tmp_path), qlora_profile="12gb", report_to="none")
    assert (dpo.per_device_train_batch_size, dpo.gradient_accumulation_steps, dpo.max_length) == (1, 16, 2048)
    plain = CAISFTConfig(output_dir=str(tmp_path), bf16=False, report_to="none")
    assert (plain.per_device_train_batch_size, plain.max_length) == (8, 1024), "no profile: TRL's defaults"


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
