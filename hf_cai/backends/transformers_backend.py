"""Generation with a model loaded in this process: the embedded default backend.

Conversations are rendered with the tokenizer's chat template, sorted by length and generated in left-padded batches
bounded by a row count and, optionally, a token budget. Sampling draws each row from its own ``torch.Generator``
seeded from the call's seed and the row's position, so a row's reply does not depend on which rows share its batch
or on the batch size.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hf_cai.backends.base import (
    DetailedGenerator,
    Generation,
    check_generation_args,
    progress_bar,
    resolve_seed,
    row_seed,
    rows_finished,
)
from hf_cai.backends.batching import Batch, cache_name, ensure_pad_token, length_sorted_batches, prepare_batch
from hf_cai.backends.chat_tokens import encode_chats, end_of_turn_ids, option_token_ids
from hf_cai.backends.decoding import finished_generation, greedy_generation_config, make_row_sampler
from hf_cai.backends.option_scoring import score_options
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError
from hf_cai.modeling import ModelLoadError, adapter_base_model, is_peft_adapter, load_causal_lm, load_tokenizer

_UNBOUNDED_TOKENIZER_LENGTH = 1_000_000


@contextmanager
def _evaluating(model: Any, *, adapters_disabled: bool = False):
    """The model in eval mode (no dropout) for the duration, then back in the mode it was in: a model being trained
    can be used to generate without changing its training. With ``adapters_disabled``, its PEFT adapters are off."""
    was_training = model.training
    model.eval()
    try:
        if adapters_disabled:
            with model.disable_adapter():
                yield
        else:
            yield
    finally:
        if was_training:
            model.train()


class TransformersBackend(DetailedGenerator):
    """Batched generation and option scoring with a 🤗 Transformers causal LM.

    Args:
        model: A Hub id or local folder (of a model, or of a PEFT adapter whose base is read from its config), a
            loaded ``PreTrainedModel``, or a ``PeftModel``.
        tokenizer: A tokenizer, or where to load it from. Defaults to the model's own folder/id. It must have a chat
            template.
        batch_size: Most conversations generated or scored together.
        max_batch_tokens: Optional budget on ``rows * (longest prompt + max_new_tokens)`` per batch; long prompts then
            go in smaller batches. Use it to bound memory on a small GPU.
        load_in_4bit: Load the model quantised to NF4 (QLoRA); only when ``model`` is a path or id.
        dtype: Weight and compute dtype when ``model`` is a path or id; defaults to
            :func:`~hf_cai.modeling.compute_dtype` (bfloat16 on GPUs and CPUs with fast bfloat16, else float32).
        adapter: A PEFT adapter (path or id) to apply on top of ``model``.
        trust_remote_code: Allow code from the model repository to run. Off unless you opt in.
        max_input_tokens: Longest prompt kept. Defaults to the model context minus ``max_new_tokens``. Longer
            conversations lose their earliest messages (the system message stays), then their earliest tokens, with a
            warning: a long run is never stopped by one long prompt.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 16,
        max_batch_tokens: int | None = None,
        load_in_4bit: bool = False,
        dtype: Any = None,
        adapter: str | Path | None = None,
        trust_remote_code: bool = False,
        max_input_tokens: int | None = None,
    ):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise InputError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_input_tokens = max_input_tokens
        if isinstance(model, (str, Path)):
            self.model = load_causal_lm(
                model, adapter=adapter, load_in_4bit=load_in_4bit, dtype=dtype, trust_remote_code=trust_remote_code
            )
            model_name = str(model)
            tokenizer = tokenizer if tokenizer is not None else _tokenizer_source(model)
        else:
            if load_in_4bit or dtype is not None:
                raise InputError(
                    "load_in_4bit and dtype need a model path or id; the model given is already loaded. Load it with "
                    "hf_cai.modeling.load_causal_lm(..., load_in_4bit=..., dtype=...) or pass its path instead."
                )
            self.model = model
            if adapter is not None:
                from peft import PeftModel

                try:
                    self.model = PeftModel.from_pretrained(model, str(adapter))
                except (OSError, ValueError) as error:
                    raise ModelLoadError(f"could not load the adapter '{adapter}': {error}") from None
            model_name = str(getattr(self.model, "name_or_path", "") or type(self.model).__name__)
            if tokenizer is None:
                tokenizer = getattr(self.model, "name_or_path", None)
                if not tokenizer:
                    raise ModelLoadError("the model was passed as an object without a name; pass tokenizer= as well")
        self.tokenizer = _prepare_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        self._pad_id = self.tokenizer.pad_token_id
        self._eos_ids = end_of_turn_ids(self.model, self.tokenizer)
        self._context_length = _context_length(self.model, self.tokenizer)
        self._keeps_logits = "logits_to_keep" in _forward_parameters(self.model)
        self._adapters_disabled = False
        self.identity = {
            "backend": "transformers",
            "model": model_name,
            "adapter": str(adapter) if adapter is not None else None,
            "peft": hasattr(self.model, "peft_config"),
            "load_in_4bit": bool(load_in_4bit or getattr(getattr(self.model, "config", None), "quantization_config", None)),
            "dtype": str(getattr(self.model, "dtype", "")),
        }

    def without_adapter(self) -> TransformersBackend:
        """The base model of this adapter backend, sharing its weights in memory: the same loaded model with its
        PEFT adapters switched off for each call. The two backends take turns on one model; do not call them from
        two threads at once."""
        if not self.identity["peft"]:
            raise InputError("without_adapter() needs a backend whose model carries a PEFT adapter")
        base = copy.copy(self)
        base._adapters_disabled = True
        base.identity = {**self.identity, "adapter": None, "adapters_disabled": True}
        return base

    # ------------------------------------------------------------------ protocol
    def generate_detailed(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        """The next assistant reply to each conversation, with the reason it ended (see
        :class:`~hf_cai.backends.GenerationBackend` and :class:`~hf_cai.backends.Generation`).

        Args:
            seeds: Optional explicit seed per row, overriding ``seed`` (used by servers that batch requests which
                each carry their own seed).
        """
        import torch

        check_generation_args(max_new_tokens, temperature, top_p)
        if not conversations:
            return []
        if seeds is None:
            base = resolve_seed(seed)
            seeds = [row_seed(base, index) for index in range(len(conversations))]
        elif len(seeds) != len(conversations):
            raise InputError(f"got {len(seeds)} seeds for {len(conversations)} conversations")
        stop = [s for s in (stop or ()) if s]
        encoded = encode_chats(self.tokenizer, conversations, self._input_limit(max_new_tokens))
        results: list[Generation | None] = [None] * len(conversations)
        batches = self._batches([len(e.ids) for e in encoded], extra_tokens=max_new_tokens)
        progress = progress_bar(batches, description="generating", unit="batch")
        with _evaluating(self.model, adapters_disabled=self._adapters_disabled):
            for batch in progress:
                prepared = self._prepare_batch([encoded[i].ids for i in batch])
                kwargs: dict[str, Any] = {}
                if prepared.cache is not None:
                    kwargs[cache_name()] = prepared.cache
                if temperature > 0:
                    generators = [torch.Generator().manual_seed(seeds[i]) for i in batch]
                    kwargs["logits_processor"] = [make_row_sampler(generators, temperature, top_p)]
                if stop:
                    kwargs["tokenizer"] = self.tokenizer
                with torch.inference_mode():
                    output = self.model.generate(
                        input_ids=prepared.input_ids,
                        attention_mask=prepared.attention_mask,
                        generation_config=greedy_generation_config(max_new_tokens, stop, self._eos_ids, self._pad_id),
                        **kwargs,
                    )
                generated = output[:, prepared.input_ids.shape[1] :]
                ended = torch.isin(generated, torch.tensor(self._eos_ids, device=generated.device)).any(dim=-1)
                texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
                for index, text, end_of_turn in zip(batch, texts, ended.tolist()):
                    results[index] = finished_generation(text, stop, end_of_turn)
                rows_finished(len(batch))
        return results

    def option_logprobs(self, prompts: Sequence[Conversation], options: Sequence[str]) -> list[list[float]]:
        """Log-probability of each option as the start of the assistant reply to each prompt.

        One forward pass per batch of prompts gives every option's first token; when options are longer, the prompt's
        key/value cache is repeated per option and one more short pass scores the remaining tokens.
        """
        if not options or any(not option for option in options):
            raise InputError(f"options must be non-empty strings, got {list(options)!r}")
        if not prompts:
            return []
        standalone = [self.tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
        encoded = encode_chats(self.tokenizer, prompts, self._input_limit(max(len(ids) for ids in standalone) + 4))
        option_ids = [option_token_ids(self.tokenizer, item, options, standalone) for item in encoded]
        scores: list[list[float]] = [[] for _ in prompts]
        batches = self._batches([len(item.ids) for item in encoded], extra_tokens=0)
        progress = progress_bar(batches, description="scoring options", unit="batch")
        with _evaluating(self.model, adapters_disabled=self._adapters_disabled):
            for batch in progress:
                prepared = self._prepare_batch([encoded[i].ids for i in batch])
                batch_options = [option_ids[i] for i in batch]
                values = score_options(
                    self.model, prepared, batch_options, pad_id=self._pad_id, keeps_logits=self._keeps_logits
                )
                for index, row in zip(batch, values):
                    scores[index] = row
                rows_finished(len(batch))
        return scores

    # ------------------------------------------------------------------ encoding
    def encode(self, conversations: Sequence[Conversation], *, max_new_tokens: int = 0) -> list[list[int]]:
        """Token ids of each conversation rendered with the chat template and a generation prompt, fitted to the
        input limit that generating ``max_new_tokens`` leaves."""
        return [item.ids for item in encode_chats(self.tokenizer, conversations, self._input_limit(max_new_tokens))]

    def _input_limit(self, reserved: int) -> int | None:
        limits = []
        if self._context_length is not None:
            limits.append(self._context_length - reserved)
        if self.max_input_tokens is not None:
            limits.append(self.max_input_tokens)
        if not limits:
            return None
        limit = min(limits)
        if limit < 1:
            raise InputError(
                f"no room for the prompt: the model context is {self._context_length} tokens and {reserved} are "
                "reserved for the reply; lower max_new_tokens"
            )
        return limit

    # ------------------------------------------------------------------ batching
    def _batches(self, lengths: list[int], *, extra_tokens: int) -> list[list[int]]:
        return length_sorted_batches(
            lengths, batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens, extra_tokens=extra_tokens
        )

    def _prepare_batch(self, sequences: list[list[int]]) -> Batch:
        return prepare_batch(self.model, sequences, tokenizer=self.tokenizer, keeps_logits=self._keeps_logits)


# ---------------------------------------------------------------------- helpers
def _tokenizer_source(model: str | Path) -> str:
    """Where the tokenizer of a model path/id lives: an adapter folder without tokenizer files uses its base's."""
    path = Path(model)
    if is_peft_adapter(path) and not (path / "tokenizer_config.json").is_file():
        return adapter_base_model(path)
    return str(model)


def _prepare_tokenizer(tokenizer: Any, *, trust_remote_code: bool):
    if isinstance(tokenizer, (str, Path)):
        return load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            "the tokenizer has no chat template. Use an instruct/chat model's tokenizer, or set one before use: "
            "`tokenizer.chat_template = open('template.jinja').read()` (hf_cai.tiny.CHAT_TEMPLATE is a ChatML template)."
        )
    return ensure_pad_token(tokenizer)


def _context_length(model: Any, tokenizer: Any) -> int | None:
    lengths = []
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    position_limit = getattr(text_config, "max_position_embeddings", None)
    if isinstance(position_limit, int) and position_limit > 0:
        lengths.append(position_limit)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _UNBOUNDED_TOKENIZER_LENGTH:
        lengths.append(tokenizer_limit)
    return min(lengths) if lengths else None


def _forward_parameters(model: Any) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(base.forward).parameters)
    except (TypeError, ValueError):
        return set()
