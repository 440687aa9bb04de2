"""A saved LoRA adapter on the tiny chat model, standing in for the SFT stage's output folder."""

from __future__ import annotations

from pathlib import Path


def save_sft_adapter(base_dir: str | Path, output_dir: str | Path, *, with_tokenizer: bool = True) -> Path:
    """Save a causal-LM LoRA adapter on ``base_dir`` to ``output_dir`` and return the folder.

    Its B matrices are random, not zero, so the adapted model differs from the base, as a trained SFT adapter does.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(11)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(str(output_dir))
    if with_tokenizer:
        AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(output_dir))
    return Path(output_dir)


def adapter_weights(folder: str | Path) -> dict:
    """The saved adapter's tensors, keyed as PEFT saves them (without the adapter name)."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def parameter_name(saved_key: str, adapter_name: str) -> str:
    """The name of a loaded adapter's parameter for a saved key ('...lora_A.weight' -> '...lora_A.<name>.weight')."""
    stem, _, leaf = saved_key.rpartition(".")
    return f"{stem}.{adapter_name}.{leaf}"
