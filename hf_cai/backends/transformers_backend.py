"""Generation with a model loaded in this process: the embedded default backend.

Conversations are rendered with the tokenizer's chat template, sorted by length and generated in left-padded batches
bounded by a row count and, optionally, a token budget. Sampling draws each row from its own ``torch.Generator``
seeded from the call's seed and the row's position, so a row's reply does not depend on which rows share its batch
or on the batch size.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hf_cai.backends.base import (
    BackendError,
    Conversation,
    Generation,
    check_generation_args,
    cut_at_stop,
    resolve_seed,
    row_seed,
)
from hf_cai.modeling import ModelLoadError, is_peft_adapter, load_causal_lm, load_tokenizer

logger = logging.getLogger(__name__)

_UNBOUNDED_TOKENIZER_LENGTH = 1_000_000
MIN_SHARED_PREFIX = 32
"""Shortest token prefix shared by a whole batch that is computed once and reused (prefix caching)."""


@dataclass
class _Encoded:
    ids: list[int]
    text: str | None  # the rendered chat, or None when the ids were cut inside the text
    truncated: bool = False


@dataclass
class _Batch:
    input_ids: Any
    attention_mask: Any
    cache: Any = None  # key/value cache of the first ``cached_length`` columns, shared prefix of every row
    cached_length: int = 0


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


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(ids) for ids in sequences)
    for position in range(length):
        token = first[position]
        if any(ids[position] != token for ids in sequences):
            return position
    return length


def _make_row_sampler(generators: list, temperature: float, top_p: float):
    """A logits processor that samples each row with its own generator and leaves only that token finite.

    ``generate`` then runs greedy, which picks the sampled token, so all of its machinery (cache, stopping criteria,
    finished rows) is reused while the randomness stays per row. A row's token is drawn by inverting its cumulative
    distribution in vocabulary order with one uniform draw from its generator: no sort and no ``multinomial``, the
    two costliest steps of sampling over a large vocabulary.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            if top_p < 1.0:
                probs = _nucleus(probs, top_p)
            cumulative = probs.cumsum(dim=-1)
            draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
            threshold = (draws.to(cumulative.device) * cumulative[:, -1].double()).to(cumulative.dtype)
            tokens = torch.searchsorted(cumulative, threshold.unsqueeze(-1)).clamp(max=cumulative.shape[-1] - 1)
            forced = torch.full_like(scores, float("-inf"))
            return forced.scatter_(-1, tokens, 0.0)

    return RowSampler()


_NUCLEUS_CANDIDATES = (64, 1024)
"""How many of the most likely tokens are examined for a row's nucleus before more are (finally, all of them): most
nuclei are narrow, and a partial top-k is many times cheaper than sorting the whole vocabulary."""


def _nucleus(probs, top_p: float):
    """``probs`` with every token outside each row's top-``top_p`` nucleus zeroed.

    A token is in the nucleus when the tokens more likely than it hold less than ``top_p`` of the mass. Tied tokens
    are in or out together, so the result depends on the row's probabilities only, never on the order of ties.
    """
    import torch

    vocabulary = probs.shape[-1]
    floor = torch.empty(probs.shape[0], dtype=probs.dtype, device=probs.device)
    pending = torch.arange(probs.shape[0], device=probs.device)
    for size in (*(min(c, vocabulary) for c in _NUCLEUS_CANDIDATES), vocabulary):
        top = probs[pending].topk(size, dim=-1).values
        inside = (top.cumsum(dim=-1) - top) < top_p
        # A row whose every candidate is inside may have more nucleus beyond them: look again with more candidates.
        settled = ~inside[:, -1] if size < vocabulary else torch.ones_like(inside[:, -1])
        floor[pending[settled]] = top[settled].masked_fill(~inside[settled], float("inf")).amin(dim=-1)
        pending = pending[~settled]
        if not len(pending):
            break
    return probs * (probs >= floor.unsqueeze(-1))


class TransformersBackend:
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
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
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
                raise ValueError(
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
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
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
            raise ValueError("without_adapter() needs a backend whose model carries a PEFT adapter")
        base = copy.copy(self)
        base._adapters_disabled = True
        base.identity = {**self.identity, "adapter": None, "adapters_disabled": True}
        return base

    # ------------------------------------------------------------------ protocol
    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """The next assistant reply to each conversation (see :class:`~hf_cai.backends.GenerationBackend`).

        Args:
            seeds: Optional explicit seed per row, overriding ``seed`` (used by servers that batch requests which
                each carry their own seed).
        """
        generations = self.generate_detailed(
            conversations,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            seeds=seeds,
        )
        return [generation.text for generation in generations]

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
        """:meth:`generate`'s replies, each with the reason it ended (see :class:`~hf_cai.backends.Generation`)."""
        import torch

        check_generation_args(max_new_tokens, temperature, top_p)
        if not conversations:
            return []
        if seeds is None:
            base = resolve_seed(seed)
            seeds = [row_seed(base, index) for index in range(len(conversations))]
        elif len(seeds) != len(conversations):
            raise ValueError(f"got {len(seeds)} seeds for {len(conversations)} conversations")
        stop = [s for s in (stop or ()) if s]
        encoded = self._encode(conversations, self._input_limit(max_new_tokens))
        results: list[Generation | None] = [None] * len(conversations)
        batches = self._batches([len(e.ids) for e in encoded], extra_tokens=max_new_tokens)
        progress = tqdm(batches, desc="generating", unit="batch", leave=False, disable=len(batches) < 2)
        with _evaluating(self.model, adapters_disabled=self._adapters_disabled):
            for batch in progress:
                prepared = self._prepare_batch([encoded[i].ids for i in batch])
                kwargs: dict[str, Any] = {}
                if prepared.cache is not None:
                    kwargs["past_key_values"] = prepared.cache
                if temperature > 0:
                    generators = [torch.Generator().manual_seed(seeds[i]) for i in batch]
                    kwargs["logits_processor"] = [_make_row_sampler(generators, temperature, top_p)]
                if stop:
                    kwargs["tokenizer"] = self.tokenizer
                with torch.inference_mode():
                    output = self.model.generate(
                        input_ids=prepared.input_ids,
                        attention_mask=prepared.attention_mask,
                        generation_config=self._generation_config(max_new_tokens, stop),
                        **kwargs,
                    )
                generated = output[:, prepared.input_ids.shape[1] :]
                ended = torch.isin(generated, torch.tensor(self._eos_ids, device=generated.device)).any(dim=-1)
                texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
                for index, text, end_of_turn in zip(batch, texts, ended.tolist()):
                    results[index] = _finished(text, stop, end_of_turn)
        return results

    def option_logprobs(self, prompts: Sequence[Conversation], options: Sequence[str]) -> list[list[float]]:
        """Log-probability of each option as the start of the assistant reply to each prompt.

        One forward pass per batch of prompts gives every option's first token; when options are longer, the prompt's
        key/value cache is repeated per option and one more short pass scores the remaining tokens.
        """
        if not options or any(not option for option in options):
            raise ValueError(f"options must be non-empty strings, got {list(options)!r}")
        if not prompts:
            return []
        standalone = [self.tokenizer(option, add_special_tokens=False)["input_ids"] for option in options]
        encoded = self._encode(prompts, self._input_limit(max(len(ids) for ids in standalone) + 4))
        option_ids = [self._option_ids(item, options, standalone) for item in encoded]
        scores: list[list[float]] = [[] for _ in prompts]
        batches = self._batches([len(item.ids) for item in encoded], extra_tokens=0)
        progress = tqdm(batches, desc="scoring options", unit="batch", leave=False, disable=len(batches) < 2)
        with _evaluating(self.model, adapters_disabled=self._adapters_disabled):
            for batch in progress:
                values = self._score_options([encoded[i].ids for i in batch], [option_ids[i] for i in batch])
                for index, row in zip(batch, values):
                    scores[index] = row
        return scores

    def _score_options(self, prompts: list[list[int]], options: list[list[list[int]]]) -> list[list[float]]:
        import torch

        prepared = self._prepare_batch(prompts)
        input_ids, attention_mask = prepared.input_ids, prepared.attention_mask
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        start = prepared.cached_length
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self._keeps_logits else {}
        if prepared.cache is not None:
            kwargs["past_key_values"] = prepared.cache
        with torch.inference_mode():
            output = self.model(
                input_ids=input_ids[:, start:],
                attention_mask=attention_mask,
                position_ids=position_ids[:, start:],
                use_cache=True,
                **kwargs,
            )
        first = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
        count = len(options[0])
        scores = [[float(first[b, row[o][0]]) for o in range(count)] for b, row in enumerate(options)]
        tail = max(len(ids) for row in options for ids in row) - 1
        if tail == 0:
            return scores
        cache = output.past_key_values
        if not hasattr(cache, "batch_repeat_interleave"):
            raise BackendError(
                f"option scoring needs a transformers Cache from the model, got {type(cache).__name__}; "
                "upgrade transformers or use single-token options"
            )
        cache.batch_repeat_interleave(count)
        rows = [ids for row in options for ids in row]
        device = input_ids.device
        feed = torch.tensor(
            [ids[:-1] + [self._pad_id] * (tail - len(ids) + 1) for ids in rows], dtype=torch.long, device=device
        )
        mask = torch.cat(
            [attention_mask.repeat_interleave(count, dim=0), torch.ones(len(rows), tail, dtype=torch.long, device=device)],
            dim=-1,
        )
        positions = position_ids[:, -1:].repeat_interleave(count, dim=0) + 1 + torch.arange(tail, device=device)
        with torch.inference_mode():
            logits = self.model(
                input_ids=feed, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
            ).logits
        rest = torch.log_softmax(logits.float(), dim=-1)
        for r, ids in enumerate(rows):
            if len(ids) > 1:
                targets = torch.tensor(ids[1:], device=rest.device)
                scores[r // count][r % count] += float(rest[r, : len(ids) - 1].gather(-1, targets.unsqueeze(-1)).sum())
        return scores

    # ------------------------------------------------------------------ encoding
    def encode(self, conversations: Sequence[Conversation], *, max_new_tokens: int = 0) -> list[list[int]]:
        """Token ids of each conversation rendered with the chat template and a generation prompt, fitted to the
        input limit that generating ``max_new_tokens`` leaves."""
        return [item.ids for item in self._encode(conversations, self._input_limit(max_new_tokens))]

    def _render(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)

    def _encode(self, conversations: Sequence[Conversation], limit: int | None) -> list[_Encoded]:
        texts = [self._render(conversation) for conversation in conversations]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        encoded = [_Encoded(list(i), t) for i, t in zip(ids, texts)]
        if limit is None:
            return encoded
        too_long = [index for index, item in enumerate(encoded) if len(item.ids) > limit]
        for index in too_long:
            encoded[index] = self._fit(conversations[index], limit)
        if too_long:
            logger.warning(
                "%d of %d conversations are longer than %d tokens; kept their end (earliest messages dropped first, "
                "the system message kept). Set max_input_tokens or shorten the prompts to avoid this.",
                len(too_long),
                len(conversations),
                limit,
            )
        return encoded

    def _fit(self, conversation: Conversation, limit: int) -> _Encoded:
        """Drop the earliest messages (keeping a leading system message and the last message), then the earliest
        tokens, until the rendered conversation fits ``limit`` tokens."""
        messages = list(conversation)
        head = messages[:1] if messages and messages[0].get("role") == "system" else []
        body = messages[len(head) :]
        while len(body) > 1:
            body = body[1:]
            while len(body) > 1 and body[0].get("role") == "assistant":
                body = body[1:]
            text = self._render(head + body)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= limit:
                return _Encoded(list(ids), text, truncated=True)
        text = self._render(head + body)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return _Encoded(list(ids[-limit:]), None, truncated=True)

    def _option_ids(self, item: _Encoded, options: Sequence[str], standalone: list[list[int]]) -> list[list[int]]:
        """Option tokens as they are tokenized right after this prompt (tokenizers may merge across the boundary or
        add a prefix space when an option is tokenized alone)."""
        if item.text is None:
            return standalone
        together = self.tokenizer([item.text + option for option in options], add_special_tokens=False)["input_ids"]
        prompt_length = len(item.ids)
        result = []
        for ids, fallback in zip(together, standalone):
            if len(ids) > prompt_length and list(ids[:prompt_length]) == item.ids:
                result.append(list(ids[prompt_length:]))
            else:
                result.append(fallback)
        return result

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
            raise ValueError(
                f"no room for the prompt: the model context is {self._context_length} tokens and {reserved} are "
                "reserved for the reply; lower max_new_tokens"
            )
        return limit

    # ------------------------------------------------------------------ batching
    def _batches(self, lengths: list[int], *, extra_tokens: int) -> list[list[int]]:
        """Indices grouped into batches, longest first, bounded by ``batch_size`` and ``max_batch_tokens``."""
        order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            if current:
                width = lengths[current[0]] + extra_tokens
                over_budget = self.max_batch_tokens is not None and (len(current) + 1) * width > self.max_batch_tokens
                if len(current) >= self.batch_size or over_budget:
                    batches.append(current)
                    current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    def _prepare_batch(self, sequences: list[list[int]]) -> _Batch:
        """Tensors for a batch, with prefix caching: the longest token prefix shared by every row (the system prompt
        and few-shot demonstrations) is run once and its key/value cache repeated per row; the rows' own suffixes
        follow it, padded on their left."""
        import torch

        shared = min(_common_prefix_length(sequences), min(len(ids) for ids in sequences) - 1)
        if len(sequences) < 2 or shared < MIN_SHARED_PREFIX:
            return _Batch(*self._left_pad(sequences))
        device = self.model.device
        prefix = torch.tensor([sequences[0][:shared]], dtype=torch.long, device=device)
        kwargs = {"logits_to_keep": 1} if self._keeps_logits else {}
        with torch.inference_mode():
            cache = self.model(input_ids=prefix, use_cache=True, **kwargs).past_key_values
        if not hasattr(cache, "batch_repeat_interleave"):
            return _Batch(*self._left_pad(sequences))
        cache.batch_repeat_interleave(len(sequences))
        suffix_ids, suffix_mask = self._left_pad([ids[shared:] for ids in sequences])
        return _Batch(
            input_ids=torch.cat([prefix.expand(len(sequences), -1), suffix_ids], dim=1),
            attention_mask=torch.cat([torch.ones_like(prefix).expand(len(sequences), -1), suffix_mask], dim=1),
            cache=cache,
            cached_length=shared,
        )

    def _left_pad(self, sequences: list[list[int]]):
        import torch

        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        device = self.model.device
        return input_ids.to(device), attention_mask.to(device)

    def _generation_config(self, max_new_tokens: int, stop: list[str]):
        from transformers import GenerationConfig

        # Greedy over the row sampler's output, with the penalties set explicitly: the model's own generation_config
        # (sampling, repetition penalty) must not change what the protocol arguments describe.
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            stop_strings=stop or None,
            eos_token_id=self._eos_ids,
            pad_token_id=self._pad_id,
        )


# ---------------------------------------------------------------------- helpers
def _finished(text: str, stop: list[str], end_of_turn: bool) -> Generation:
    """A decoded reply cut at its first stop string, with the reason it ended. A stop string counts first: the
    reply ends there even when the model went on to end its turn within the same step."""
    reply, stopped = cut_at_stop(text, stop)
    if stopped:
        return Generation(reply, "stop_string")
    return Generation(reply, "stop" if end_of_turn else "length")


def _tokenizer_source(model: str | Path) -> str:
    """Where the tokenizer of a model path/id lives: an adapter folder without tokenizer files uses its base's."""
    path = Path(model)
    if is_peft_adapter(path) and not (path / "tokenizer_config.json").is_file():
        from peft import PeftConfig

        return PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    return str(model)


def _prepare_tokenizer(tokenizer: Any, *, trust_remote_code: bool):
    if isinstance(tokenizer, (str, Path)):
        return load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            "the tokenizer has no chat template. Use an instruct/chat model's tokenizer, or set one before use: "
            "`tokenizer.chat_template = open('template.jinja').read()` (hf_cai.tiny.CHAT_TEMPLATE is a ChatML template)."
        )
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ModelLoadError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first")
    return tokenizer


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and item not in ids:
                ids.append(int(item))
    return ids


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
