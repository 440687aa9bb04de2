"""Merging a LoRA adapter into a 16-bit copy of its base model.

The base is always loaded unquantised in 16-bit, even when the adapter was trained on a 4-bit (QLoRA) base: merging
into 4-bit weights would round the update away and produce weights nobody can load without bitsandbytes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hf_cai.hub.errors import PublishError

logger = logging.getLogger(__name__)

MERGE_DTYPES = ("bfloat16", "float16")


def merge_base(adapter_dir: str | Path, base_model_id: str) -> str:
    """The base model a merge of the adapter in ``adapter_dir`` loads: the weights it was trained on while they are
    on this machine (a local folder, or the converted GGUF file its training record names: see
    :func:`~hf_cai.modeling.adapter_base_model`), else ``base_model_id``. An adapter trained on a converted GGUF file
    is thus merged into the de-quantised weights it was trained on where they are at hand, and into the Hub model's
    own weights elsewhere."""
    from hf_cai.modeling import ModelLoadError, adapter_base_model

    try:
        local = adapter_base_model(adapter_dir)
    except (ModelLoadError, OSError, ValueError):
        return base_model_id
    return local if Path(local).exists() else base_model_id


def merge_adapter(
    adapter_dir: str | Path,
    output_dir: str | Path,
    *,
    base_model: str | Path,
    dtype: str = "bfloat16",
    tokenizer_files: list[Path] = (),
) -> Path:
    """Load ``base_model`` in ``dtype``, apply the adapter, merge it and save the result as safetensors.

    Args:
        adapter_dir: Folder of the PEFT adapter.
        output_dir: Where the merged model is written (created).
        base_model: Hub id or local folder of the base model.
        dtype: ``"bfloat16"`` or ``"float16"``.
        tokenizer_files: Files copied next to the merged weights (tokenizer, chat template).
    """
    import torch

    from hf_cai.modeling import ModelLoadError, load_causal_lm

    if dtype not in MERGE_DTYPES:
        raise PublishError(f"merge dtype '{dtype}' is not supported; use one of {', '.join(MERGE_DTYPES)}")
    logger.info("merging %s into a %s copy of %s", adapter_dir, dtype, base_model)
    try:
        model = load_causal_lm(
            base_model, adapter=adapter_dir, dtype=getattr(torch, dtype), load_in_4bit=False, device_map="cpu"
        )
    except ModelLoadError as error:
        raise PublishError(f"could not load the model to merge: {error}") from None
    merged = model.merge_and_unload()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(output_dir), safe_serialization=True)
    for file in tokenizer_files:
        shutil.copy2(file, output_dir / file.name)
    return output_dir
