"""The generation protocol every backend implements, and helpers shared by the implementations.

Builders, rewards and evaluation only talk to :class:`GenerationBackend`: batched chat generation and multiple-choice
option scoring. Whether the tokens come from a model in this process (:class:`~hf_cai.backends.TransformersBackend`)
or from an OpenAI-compatible server (:class:`~hf_cai.backends.EndpointBackend`) is the caller's choice.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

Conversation = list[dict[str, str]]


class BackendError(RuntimeError):
    """Generation failed for a reason outside the caller's data: an endpoint that is down or keeps answering with
    errors after the retries, or a malformed server reply. The message names the URL and the status."""


@runtime_checkable
class GenerationBackend(Protocol):
    """Batched chat generation plus option scoring.

    Implementations must give each row of a batch its own random stream derived from ``seed`` and the row's position
    (see :func:`row_seed`), so a row's sample does not depend on which other rows share its batch.
    """

    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """The assistant's next reply to each conversation, in input order.

        ``temperature == 0`` is greedy decoding. Generation of a reply ends at the end-of-turn token or at the first
        of the ``stop`` strings, which is not included in the reply.
        """
        ...

    def option_logprobs(self, prompts: Sequence[Conversation], options: Sequence[str]) -> list[list[float]]:
        """Per prompt, the log-probability of each option string as the beginning of the assistant's reply.

        The prompts are chats whose next turn is the assistant's, e.g. a multiple-choice question answered with
        ``options=("(A)", "(B)")``.
        """
        ...


def row_seed(seed: int, index: int | str) -> int:
    """A 63-bit seed for row ``index`` of a call made with ``seed``: stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh random one when it is ``None``."""
    return random.SystemRandom().randrange(2**63) if seed is None else int(seed)


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    if not stop:
        return text
    cut = len(text)
    for marker in stop:
        if marker:
            position = text.find(marker)
            if position != -1:
                cut = min(cut, position)
    return text[:cut]


def describe_backend(backend: Any) -> dict[str, Any]:
    """What identifies the model behind a backend, for run fingerprints: its ``identity`` when it has one."""
    identity = getattr(backend, "identity", None)
    if isinstance(identity, dict):
        return dict(identity)
    return {"backend": f"{type(backend).__module__}.{type(backend).__qualname__}"}


def check_generation_args(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
