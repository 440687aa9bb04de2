"""Loading models and tokenizers: one code path for the tiny test models and real Hub checkpoints.

Everything that loads a model (backends, trainers, evaluation, the Space) goes through these functions, so the
code a test runs on the tiny model is the code a user runs on a Qwen or Llama checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import TRAINING_RECORD
from hf_cai.errors import HFCAIError
from hf_cai.gguf import embedded_model, is_gguf_file, local_weights, resolve_model
from hf_cai.quiet import import_bitsandbytes

logger = logging.getLogger(__name__)


class ModelLoadError(HFCAIError, RuntimeError):
    """A model, adapter or tokenizer could not be loaded; the message says which and what to do."""


DTYPE_VARIABLE = "HF_CAI_DTYPE"
"""Environment variable that overrides :func:`compute_dtype`."""


def compute_dtype():
    """The dtype models load and compute in by default.

    On GPU: bfloat16 where the GPU supports it, else float16. On CPU: bfloat16 where the CPU has bfloat16 matrix
    instructions (AVX512-BF16 or AMX-BF16 on x86-64), float32 elsewhere. With those instructions bfloat16 decoding
    is faster than float32 (SmolLM2-135M, batch 16: 1.5-1.9x, see benchmarks/RESULTS.md); without them PyTorch
    emulates bfloat16 and float32 is both faster and exact.

    The environment variable ``HF_CAI_DTYPE`` (``float32``, ``bfloat16`` or ``float16``) overrides the choice, e.g.
    ``HF_CAI_DTYPE=float32`` for results that do not depend on bfloat16 rounding.
    """
    import torch

    override = os.environ.get(DTYPE_VARIABLE)
    if override:
        choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if override not in choices:
            raise ModelLoadError(f"{DTYPE_VARIABLE}={override!r} is not a dtype; use one of: {', '.join(choices)}")
        return choices[override]
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bfloat16() else torch.float32


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (x86-64 AVX512-BF16 or AMX-BF16)."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        found = capabilities()
        return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
    # Older torch releases have only these private probes.
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def bnb_4bit_config(compute_dtype_override=None):
    """The QLoRA quantisation: NF4 weights, double quantisation, compute in :func:`compute_dtype`."""
    from transformers import BitsAndBytesConfig

    check_4bit_support()
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype_override or compute_dtype(),
        bnb_4bit_quant_storage=compute_dtype_override or compute_dtype(),
    )


def check_4bit_support() -> None:
    """Raise :class:`ModelLoadError` when bitsandbytes 4-bit cannot run here."""
    try:
        import_bitsandbytes()
    except Exception as error:  # bitsandbytes raises various errors on unsupported platforms
        raise ModelLoadError(
            f"4-bit (QLoRA) loading needs bitsandbytes, which failed to import here ({type(error).__name__}: {error}). "
            "Install it with `pip install bitsandbytes`, or load without quantization (load_in_4bit=False)."
        ) from error


def keep_4bit_weights_differentiable(model: Any) -> int:
    """Keep the 4-bit layers of a model that is to be trained in bitsandbytes' standard layout; the number of layers
    whose weights had already been repacked (and are unpacked again).

    On a CPU with AVX512-BF16, a bitsandbytes ``Linear4bit`` layer repacks its weights for a fused inference kernel
    the first time it runs in eval mode without gradients (an evaluation before or during training), and computes
    with that kernel from then on, in training too. The kernel has no backward pass: gradients stop at the frozen
    4-bit layers, and the LoRA weights beneath them train on zero gradients (PyTorch warns "bitsandbytes::gemv_4bit:
    an autograd kernel was not registered"). This turns the repacking off for the model's layers.
    """
    if "bitsandbytes" not in sys.modules:  # no bitsandbytes, no 4-bit layers
        return 0
    import bitsandbytes.functional as bnb_functional
    from bitsandbytes.nn import Linear4bit

    unpacked = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = module.weight
        if getattr(weight.quant_state, "packing_format_for_cpu", False):
            # bitsandbytes' own inverse, as its Params4bit.cuda() uses before moving a repacked weight.
            weight.data, weight.quant_state = bnb_functional._convert_weight_packed_for_cpu_inverse(
                weight.data, weight.quant_state
            )
            unpacked += 1
    return unpacked


def is_peft_adapter(name_or_path: str | Path, *, token: str | None = None) -> bool:
    """Whether a local folder or Hub repository holds a PEFT adapter (``adapter_config.json``).

    A Hub id that cannot be read (missing, private, offline) counts as not an adapter; loading it as a full model
    then reports the reason. Embedded model aliases and ``.gguf`` files are full models, answered without the Hub.
    """
    if embedded_model(name_or_path) is not None or is_gguf_file(name_or_path):
        return False
    if Path(name_or_path).is_dir():
        return (Path(name_or_path) / "adapter_config.json").is_file()
    from peft import PeftConfig

    try:
        PeftConfig.from_pretrained(str(name_or_path), token=token)
    except Exception:  # not an adapter repo, not reachable, or offline
        return False
    return True


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False, require_chat_template: bool = True):
    """Load a tokenizer padded on the left (for batched generation) with a pad token.

    Raises :class:`ModelLoadError` when ``require_chat_template`` and the tokenizer has no chat template.
    """
    from transformers import AutoTokenizer

    name_or_path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load the tokenizer of '{name_or_path}': {error}") from None
    if require_chat_template and not tokenizer.chat_template:
        raise ModelLoadError(
            f"the tokenizer of '{name_or_path}' has no chat template. Use an instruct/chat model, or set one before "
            "use: `tokenizer.chat_template = open('template.jinja').read()` (hf_cai.tiny.CHAT_TEMPLATE is a ChatML "
            "template with {% generation %} markers)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


BASE_WEIGHTS_KEY = "base_weights"
"""Key of the training record (``cai_training.json``) naming the GGUF file the base weights were converted from."""


def adapter_base_model(adapter: str | Path) -> str:
    """The base model to load a saved PEFT adapter (folder or Hub id) on.

    ``base_model_name_or_path`` of its ``adapter_config.json`` names the base by its Hub id; when the adapter was
    trained on weights converted from a GGUF file (an embedded model, a local ``.gguf``) and its training record
    says so, the converted folder of that same file is returned instead, so hf_cai loads the adapter on exactly the
    weights it was trained on.

    Raises:
        ModelLoadError: the adapter does not name its base model.
    """
    import json

    from peft import PeftConfig

    base = PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path
    record_file = Path(adapter) / TRAINING_RECORD
    if record_file.is_file():
        try:
            source = json.loads(record_file.read_text(encoding="utf-8")).get(BASE_WEIGHTS_KEY)
        except (OSError, ValueError):
            source = None
        local = local_weights(source) if isinstance(source, dict) else None
        if local is not None:
            return local
    if not base:
        raise ModelLoadError(
            f"the adapter '{adapter}' does not name its base model (base_model_name_or_path in adapter_config.json); "
            "set it there, or load the base yourself and apply the adapter with PeftModel.from_pretrained(base, "
            "adapter)"
        )
    return base


def missing_base_model_error(adapter: str | Path, base: str, error: Exception) -> ModelLoadError:
    """The error for a saved adapter whose base model cannot be loaded: it names the adapter, the base it needs, the
    ``adapter_config.json`` field that names it, and the ways out."""
    return ModelLoadError(
        f"the adapter '{adapter}' is trained on the base model '{base}' (base_model_name_or_path in its "
        f"adapter_config.json), which could not be loaded: {error}. Put the base model at that path or make the Hub "
        f"id reachable (download it once online, log in for a gated model), or set base_model_name_or_path in "
        f"'{Path(adapter) / 'adapter_config.json'}' to where the base model is."
    )


def load_causal_lm(
    name_or_path: str | Path,
    *,
    adapter: str | Path | None = None,
    load_in_4bit: bool = False,
    dtype: Any = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    is_trainable: bool = False,
):
    """Load a causal LM (safetensors only), optionally 4-bit quantised and with a PEFT adapter on top.

    Args:
        name_or_path: Hub id or local folder of the base model, or of a PEFT adapter (its base is read from
            ``adapter_config.json``), or an embedded model alias or ``.gguf`` file (see :mod:`hf_cai.gguf`).
        adapter: Hub id or folder of a PEFT adapter to load on top of the base.
        load_in_4bit: Quantise the base to NF4 with bitsandbytes (QLoRA); works on CPU and GPU.
        dtype: Weight dtype; defaults to :func:`compute_dtype`.
        device_map: Passed to ``from_pretrained``; defaults to ``"auto"`` on GPU and CPU otherwise.
        trust_remote_code: Run code from the model repository. Off unless the user opts in.
        is_trainable: Load the adapter with trainable weights.
    """
    import torch
    from transformers import AutoModelForCausalLM

    base_from_adapter = adapter is None and is_peft_adapter(name_or_path)
    if base_from_adapter:
        adapter = name_or_path
        name_or_path = adapter_base_model(adapter)
    kwargs: dict[str, Any] = {
        "dtype": dtype or compute_dtype(),
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,
    }
    if load_in_4bit:
        kwargs["quantization_config"] = bnb_4bit_config()
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif torch.cuda.is_available():
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model(name_or_path), **kwargs)
    except (OSError, ValueError) as error:
        if base_from_adapter:
            raise missing_base_model_error(adapter, str(name_or_path), error) from None
        raise ModelLoadError(f"could not load the model '{name_or_path}': {error}") from None
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load the adapter '{adapter}' on '{name_or_path}': {error}") from None
    logger.info("loaded %s%s%s", name_or_path, f" + adapter {adapter}" if adapter else "", " (4-bit)" if load_in_4bit else "")
    return model


def load_sequence_classifier(
    model_id: str, *, load_in_4bit: bool = False, device_map: Any = None, trust_remote_code: bool = False
):
    """Load a model with a one-score sequence-classification head (a reward model, or a base to train one).

    With ``load_in_4bit`` the body is NF4-quantised and the score head kept in full precision.
    """
    from transformers import AutoModelForSequenceClassification

    model_id = resolve_model(model_id)
    kwargs: dict[str, Any] = {
        "num_labels": 1,
        "dtype": compute_dtype(),
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,
    }
    if load_in_4bit:
        quantization = bnb_4bit_config()
        # The score head is new and fully trained (PEFT's modules_to_save), so it must stay unquantised.
        quantization.llm_int8_skip_modules = ["score", "classifier"]
        kwargs["quantization_config"] = quantization
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(model_id), **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load '{model_id}' as a sequence classifier: {error}") from None
