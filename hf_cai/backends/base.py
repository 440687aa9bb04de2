"""The generation protocol every backend implements, and helpers shared by the implementations.

Builders, rewards and evaluation only talk to :class:`GenerationBackend`: batched chat generation and multiple-choice
option scoring. Whether the tokens come from a model in this process (:class:`~hf_cai.backends.TransformersBackend`)
or from an OpenAI-compatible server (:class:`~hf_cai.backends.EndpointBackend`) is the caller's choice.
"""

from __future__ import annotations

import hashlib
import random
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from hf_cai.conversation import Conversation
from hf_cai.errors import HFCAIError, InputError

FinishReason = Literal["stop", "length", "stop_string"]
"""Why a reply ended: ``"stop"``, the model ended its turn (an end-of-turn or end-of-sequence token); ``"length"``,
``max_new_tokens`` ran out and the reply is cut short; ``"stop_string"``, one of the caller's stop strings appeared
(the reply ends before it)."""


class BackendError(HFCAIError, RuntimeError):
    """Generation failed for a reason outside the caller's data: an endpoint that is down or keeps answering with
    errors after the retries, or a malformed server reply. The message names the URL and the status."""


@dataclass(frozen=True)
class Generation:
    """One generated reply and why it ended.

    Attributes:
        text: The reply, without the end-of-turn token or the stop string that ended it.
        finish_reason: A :data:`FinishReason`. An endpoint passes other reasons its server gives through unchanged
            (OpenAI's ``"content_filter"``, for one); ``None`` when the backend does not know.
    """

    text: str
    finish_reason: str | None


@runtime_checkable
class GenerationBackend(Protocol):
    """Batched chat generation plus option scoring.

    ``generate`` returns the replies; ``generate_detailed`` returns them with the reason each ended, so a reply cut
    short by ``max_new_tokens`` can be told from a finished one. Callers that accept any backend use
    :func:`generate_with_reasons`, which also serves backends written with ``generate`` alone.

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

    def generate_detailed(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """What :meth:`generate` returns, each reply with the reason it ended (a :class:`Generation`)."""
        ...

    def option_logprobs(self, prompts: Sequence[Conversation], options: Sequence[str]) -> list[list[float]]:
        """Per prompt, the log-probability of each option string as the beginning of the assistant's reply.

        The prompts are chats whose next turn is the assistant's, e.g. a multiple-choice question answered with
        ``options=("(A)", "(B)")``.
        """
        ...


class DetailedGenerator:
    """Base of the backends that implement ``generate_detailed``: their :meth:`generate` is its replies' texts."""

    def generate(self, conversations: Sequence[Conversation], **options: Any) -> list[str]:
        """The replies ``generate_detailed(conversations, **options)`` returns, without the reasons they ended."""
        return [generation.text for generation in self.generate_detailed(conversations, **options)]


def row_seed(seed: int, index: int | str) -> int:
    """A 63-bit seed for row ``index`` of a call made with ``seed``: stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh random one when it is ``None``."""
    return random.SystemRandom().randrange(2**63) if seed is None else int(seed)


def generate_with_reasons(backend: Any, conversations: Sequence[Conversation], **kwargs: Any) -> list[Generation]:
    """``backend.generate_detailed(conversations, **kwargs)``; for a backend that only has ``generate`` (one written
    before finish reasons existed), its replies with ``finish_reason=None``."""
    if hasattr(backend, "generate_detailed"):
        return backend.generate_detailed(conversations, **kwargs)
    return [Generation(text, None) for text in backend.generate(conversations, **kwargs)]


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest occurrence of any stop string, and whether one occurred."""
    cut = len(text)
    for marker in stop or ():
        if marker:
            position = text.find(marker)
            if position != -1:
                cut = min(cut, position)
    return text[:cut], cut < len(text)


def describe_backend(backend: Any) -> dict[str, Any]:
    """What identifies the model behind a backend, for run fingerprints: its ``identity`` when it has one."""
    identity = getattr(backend, "identity", None)
    if isinstance(identity, dict):
        return dict(identity)
    return {"backend": f"{type(backend).__module__}.{type(backend).__qualname__}"}


def describe_loading(backend: Any) -> str | None:
    """How the model behind ``backend`` holds its weights, from its identity: ``"4-bit"`` when quantised, else their
    dtype (``"bfloat16"``, ``"float32"``); ``None`` when the backend does not say (a served endpoint)."""
    identity = describe_backend(backend)
    if "load_in_4bit" not in identity:
        return None
    if identity["load_in_4bit"]:
        return "4-bit"
    return str(identity.get("dtype") or "").removeprefix("torch.") or None


def check_generation_args(max_new_tokens: int, temperature: float, top_p: float) -> None:
    """Raise ``ValueError`` for generation settings no backend can honour."""
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise InputError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")


_ROWS_BAR: ContextVar[Any] = ContextVar("hf_cai_rows_bar", default=None)


@contextmanager
def rows_progress(bar: Any) -> Iterator[Any]:
    """While inside, each batch of conversations a backend finishes generating or scoring advances ``bar`` (a tqdm
    bar) by its size (:func:`rows_finished`): one bar can follow work spread over many backend calls, such as an
    evaluation's passes. The backends' own bars stay hidden beneath it (see :func:`progress_bar`)."""
    token = _ROWS_BAR.set(bar)
    try:
        yield bar
    finally:
        _ROWS_BAR.reset(token)


def rows_finished(count: int) -> None:
    """Advance the bar of the enclosing :func:`rows_progress`, if any, by ``count`` finished conversations. Backends
    call it as each batch (or request) of a call is done."""
    bar = _ROWS_BAR.get()
    if bar is not None:
        bar.update(count)


_OPEN_BARS: weakref.WeakSet[Any] = weakref.WeakSet()


def stage_bar(**options: Any) -> Any:
    """A tqdm bar (``tqdm.auto``, with ``options``) for hf_cai's own progress of a stage (an SL-CAI build, an
    evaluation, a training run): while it is open, the backends' per-call bars (:func:`progress_bar`) stay hidden."""
    from tqdm.auto import tqdm

    bar = tqdm(**options)
    _OPEN_BARS.add(bar)
    return bar


def progress_bar(iterable: Sequence[Any] | None = None, *, total: int | None = None, description: str, unit: str):
    """A tqdm bar over one call's batches or requests, gone when done (``leave=False``).

    It is shown only when it tells something: for at least two pieces of work, and when no other bar of hf_cai's is
    open (a :func:`stage_bar`, or the bar of an enclosing call), so a stage's own bar stays the only one on screen
    while it calls the backend.
    """
    count = len(iterable) if total is None and iterable is not None else (total or 0)
    another_bar_open = any(not bar.disable for bar in _OPEN_BARS)  # tqdm sets ``disable`` when a bar is closed
    return stage_bar(iterable=iterable, total=total, desc=description, unit=unit, leave=False,
                     disable=count < 2 or another_bar_open)
