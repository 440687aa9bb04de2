"""The base model and its CAI version, loaded once and answering side by side, for every visitor at once.

When the CAI model is a LoRA adapter, one copy of the base is loaded and both panels are decoded in the same batches:
PEFT's mixed-adapter batches run a base row with the adapter switched off (``"__base__"``) and a CAI row with it on,
so both replies stream at the same pace from one forward pass per token, without toggling global adapter state between
concurrent requests. The replies of all visitors join those batches (:mod:`hf_cai.spaces.batching`). A merged CAI model is a second model with batches of its own, decoded at the same
time. Either way :meth:`SideBySideModels.stream` yields both partial replies after every decoding step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.backends.base import resolve_seed
from hf_cai.conversation import Message
from hf_cai.hub.space_config import SpaceConfig
from hf_cai.modeling import ModelLoadError, is_peft_adapter, load_causal_lm, load_tokenizer
from hf_cai.spaces.batching import ReplyBatcher, ReplyRequest, stream_replies

logger = logging.getLogger(__name__)

PANELS = ("base", "cai")
BASE_ADAPTER = "__base__"
"""PEFT's name for "no adapter" in a mixed-adapter batch."""


@dataclass
class _Engine:
    """What decodes one panel: the batcher of its model and, for a shared PEFT model, the adapter to use."""

    batcher: ReplyBatcher
    adapter: str | None = None


class PanelReplies(dict):
    """Panel name → its reply so far; ``trimmed``: panel → how its conversation was cut to fit the model's input
    budget (:data:`~hf_cai.spaces.batching.TRIMMED_TURNS` or :data:`~hf_cai.spaces.batching.TRIMMED_MESSAGE`),
    for the panels whose conversation was."""

    def __init__(self, texts: Mapping[str, str], trimmed: Mapping[str, str]):
        super().__init__(texts)
        self.trimmed = dict(trimmed)


def _display_name(name_or_path: str) -> str:
    path = Path(name_or_path)
    return f"{path.name} (local folder)" if path.is_dir() else name_or_path


def _tokenizer_of(model_name_or_path: str, fallback: Any) -> Any:
    """The tokenizer saved with a merged model, or the base model's when the folder has none."""
    try:
        return load_tokenizer(model_name_or_path)
    except ModelLoadError as error:
        logger.warning("using the base model's tokenizer for '%s' (%s)", model_name_or_path, error)
        return fallback


class SideBySideModels:
    """The base and CAI models of the Space, loaded once; see the module docstring for how they share memory.

    Build it with :meth:`from_config`. ``load_error`` holds the reason when the CAI model could not be loaded (the
    base panel still works).
    """

    def __init__(
        self,
        engines: Mapping[str, _Engine],
        *,
        base_label: str,
        cai_label: str | None,
        load_error: str | None = None,
    ):
        self._engines = dict(engines)
        self.base_label = base_label
        self.cai_label = cai_label
        self.load_error = load_error

    @property
    def panels(self) -> tuple[str, ...]:
        """The panels that have a model: ``("base", "cai")``, or ``("base",)`` when the CAI model is missing."""
        return tuple(panel for panel in PANELS if panel in self._engines)

    @property
    def loaded_models(self) -> list[Any]:
        """The distinct models held in memory (one when the CAI model is an adapter on the base)."""
        distinct: dict[int, Any] = {}
        for engine in self._engines.values():
            distinct.setdefault(id(engine.batcher.model), engine.batcher.model)
        return list(distinct.values())

    @property
    def batchers(self) -> list[ReplyBatcher]:
        """The batchers of the distinct models (see :class:`~hf_cai.spaces.batching.ReplyBatcher`)."""
        distinct: dict[int, ReplyBatcher] = {}
        for engine in self._engines.values():
            distinct.setdefault(id(engine.batcher), engine.batcher)
        return list(distinct.values())

    @property
    def shares_base(self) -> bool:
        """True when both panels run on one model in memory (the CAI model is an adapter on the base)."""
        return "cai" in self._engines and self._engines["cai"].batcher is self._engines["base"].batcher

    @classmethod
    def from_config(cls, config: SpaceConfig) -> SideBySideModels:
        """Load the models named by ``config``.

        Raises :class:`hf_cai.modeling.ModelLoadError` when the base model cannot be loaded. A CAI model that cannot
        be loaded is logged and reported in ``load_error``; the base model is served alone.
        """
        base_label = _display_name(config.base_model)
        tokenizer = load_tokenizer(config.base_model)

        def batcher(model: Any, model_tokenizer: Any) -> ReplyBatcher:
            return ReplyBatcher(model, model_tokenizer, max_batch_size=config.max_batch_size,
                                window=config.batch_window_ms / 1000, max_input_tokens=config.max_input_tokens,
                                join_every=config.join_every_tokens, prefix_cache_bytes=config.prefix_cache_mb * 2**20)

        cai = config.cai_model
        if cai is None:
            base = load_causal_lm(config.base_model, load_in_4bit=config.load_in_4bit)
            return cls({"base": _Engine(batcher(base, tokenizer))}, base_label=base_label, cai_label=None)
        cai_label = _display_name(cai)
        # Any failure of the CAI model (missing repo, corrupt weights, wrong shapes) must leave a working base-only
        # Space with the reason on screen, so everything is caught at this start-up boundary.
        try:
            if is_peft_adapter(cai):
                model = load_causal_lm(config.base_model, adapter=cai, load_in_4bit=config.load_in_4bit)
                model.eval()
                shared = batcher(model, tokenizer)
                engines = {"base": _Engine(shared, BASE_ADAPTER), "cai": _Engine(shared, model.active_adapter)}
                return cls(engines, base_label=base_label, cai_label=f"{cai_label} · LoRA adapter")
            base = load_causal_lm(config.base_model, load_in_4bit=config.load_in_4bit)
            cai_model = load_causal_lm(cai, load_in_4bit=config.load_in_4bit)
            engines = {"base": _Engine(batcher(base, tokenizer)),
                       "cai": _Engine(batcher(cai_model, _tokenizer_of(cai, tokenizer)))}
            return cls(engines, base_label=base_label, cai_label=cai_label)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            message = (
                f"The CAI model '{cai}' could not be loaded, so only the base model answers. Reason: {reason}. "
                "Check the model id or path (and HF_TOKEN for a private repository), then restart."
            )
            logger.error(message)
        base = load_causal_lm(config.base_model, load_in_4bit=config.load_in_4bit)
        return cls({"base": _Engine(batcher(base, tokenizer))}, base_label=base_label, cai_label=cai_label,
                   load_error=message)

    # ----------------------------------------------------------------- generation
    def stream(
        self,
        conversations: Mapping[str, Sequence[Message]],
        *,
        max_new_tokens: int,
        temperature: float,
        seed: int | None = None,
        shared_batches: bool = True,
    ) -> Iterator[PanelReplies]:
        """Generate the next assistant reply of each panel's conversation, yielding all partial replies each step.

        Closing the iterator (the visitor left) stops its replies; the other visitors' replies in the same batch go on.

        Args:
            conversations: Panel name (``"base"``/``"cai"``) → chat messages ending with a user message. Panels
                without a loaded model are skipped.
            max_new_tokens: Most tokens per reply.
            temperature: Sampling temperature; 0 decodes greedily.
            seed: Seed of the sampled replies (both panels draw with it, so their differences come from the models);
                ``None`` picks one at random. A reply does not depend on the other rows of its batch, up to the
                rounding of the batch's matrix products (see :mod:`hf_cai.spaces.batching`).
            shared_batches: Join the batches shared with other visitors; ``False`` decodes these replies alone, in
                threads of this call (for ZeroGPU, where only the calling function may use the GPU).
        """
        seed = resolve_seed(seed)
        requests = {
            panel: ReplyRequest(
                conversations[panel],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                adapter=self._engines[panel].adapter,
            )
            for panel in self.panels
            if panel in conversations
        }
        jobs = [(self._engines[panel].batcher, request) for panel, request in requests.items()]
        for _ in stream_replies(jobs, shared=shared_batches):
            texts = {panel: self._engines[panel].batcher.text(request) for panel, request in requests.items()}
            trimmed = {panel: request.trimmed for panel, request in requests.items() if request.trimmed}
            yield PanelReplies(texts, trimmed)

    def generate(
        self, panel: str, conversation: Sequence[Message], *, max_new_tokens: int, temperature: float,
        seed: int | None = None, shared_batches: bool = True,
    ) -> str:
        """The full next reply of one panel's model to ``conversation``."""
        reply = ""
        for replies in self.stream({panel: conversation}, max_new_tokens=max_new_tokens, temperature=temperature,
                                   seed=seed, shared_batches=shared_batches):
            reply = replies[panel]
        return reply
