"""Text generation and option scoring behind one small protocol (:class:`GenerationBackend`)."""

from hf_cai.backends.base import (
    BackendError,
    FinishReason,
    Generation,
    GenerationBackend,
    generate_with_reasons,
    row_seed,
)
from hf_cai.backends.endpoint import EndpointBackend
from hf_cai.backends.transformers_backend import TransformersBackend
from hf_cai.conversation import Conversation

__all__ = [
    "BackendError",
    "Conversation",
    "EndpointBackend",
    "FinishReason",
    "Generation",
    "GenerationBackend",
    "TransformersBackend",
    "generate_with_reasons",
    "row_seed",
]
