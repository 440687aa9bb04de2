"""hf_cai: Constitutional AI on one consumer GPU, shared on the Hugging Face Hub.

The public API is importable from the top level; submodules load on first use so that ``import hf_cai`` stays fast
(no torch or transformers import until a model is touched).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Constitution": "hf_cai.constitution",
    "ConstitutionError": "hf_cai.constitution",
    "Principle": "hf_cai.constitution",
    "PreferenceExample": "hf_cai.constitution",
    "parse_transcript": "hf_cai.importers",
    "TinyModelConfig": "hf_cai.tiny",
    "build_tiny_chat_model": "hf_cai.tiny",
    "build_tiny_reward_model": "hf_cai.tiny",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_cai' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
