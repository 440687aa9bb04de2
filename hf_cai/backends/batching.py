"""Batches of token sequences for one model: length-sorted grouping, left padding, and prefix caching."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

MIN_SHARED_PREFIX = 32
"""Shortest token prefix shared by a whole batch that is computed once and reused (prefix caching)."""


@dataclass
class Batch:
    """The tensors of one batch, left-padded; with prefix caching, the key/value cache of its shared prefix."""

    input_ids: Any
    attention_mask: Any
    cache: Any = None
    """Key/value cache of the first ``cached_length`` columns, the prefix shared by every row."""
    cached_length: int = 0


@functools.cache
def cache_name() -> str:
    """The name transformers gives the key/value cache, as a model argument and an output field: ``cache`` since
    transformers renamed it (the old ``past_key_values`` then warns on every use), ``past_key_values`` before."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
    return "cache" if "cache" in fields else "past_key_values"


def output_cache(output: Any) -> Any:
    """The key/value cache a model's forward returned (see :func:`cache_name`)."""
    return getattr(output, cache_name())


def length_sorted_batches(
    lengths: list[int], *, batch_size: int, max_batch_tokens: int | None, extra_tokens: int
) -> list[list[int]]:
    """Indices grouped into batches, longest first, of at most ``batch_size`` rows and, when ``max_batch_tokens`` is
    set, at most that many ``rows * (longest + extra_tokens)`` tokens."""
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current:
            width = lengths[current[0]] + extra_tokens
            over_budget = max_batch_tokens is not None and (len(current) + 1) * width > max_batch_tokens
            if len(current) >= batch_size or over_budget:
                batches.append(current)
                current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many leading tokens every sequence shares."""
    first = sequences[0]
    length = min(len(ids) for ids in sequences)
    for position in range(length):
        token = first[position]
        if any(ids[position] != token for ids in sequences):
            return position
    return length


def ensure_pad_token(tokenizer: Any) -> Any:
    """``tokenizer``, given its end-of-sequence token as pad token when it has none (as TRL's trainers and
    :func:`hf_cai.modeling.load_tokenizer` do); padded positions are masked, so the choice does not change outputs.

    Raises:
        ModelLoadError: The tokenizer has neither a pad nor an end-of-sequence token.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            from hf_cai.modeling import ModelLoadError

            raise ModelLoadError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def left_pad(sequences: list[list[int]], tokenizer: Any, device: Any) -> tuple[Any, Any]:
    """``input_ids`` and ``attention_mask`` of ``sequences`` padded on their left to the longest (by the tokenizer,
    which needs a pad token: see :func:`ensure_pad_token`), on ``device``."""
    padded = tokenizer.pad({"input_ids": sequences}, padding_side="left", return_tensors="pt")
    return padded["input_ids"].to(device), padded["attention_mask"].to(device)


def prepare_batch(model: Any, sequences: list[list[int]], *, tokenizer: Any, keeps_logits: bool) -> Batch:
    """Tensors for a batch, with prefix caching: the longest token prefix shared by every row (the system prompt
    and few-shot demonstrations) is run once and its key/value cache repeated per row; the rows' own suffixes
    follow it, padded on their left by ``tokenizer``. ``keeps_logits``: the model's forward takes ``logits_to_keep``."""
    import torch

    shared = min(common_prefix_length(sequences), min(len(ids) for ids in sequences) - 1)
    device = model.device
    if len(sequences) < 2 or shared < MIN_SHARED_PREFIX:
        return Batch(*left_pad(sequences, tokenizer, device))
    prefix = torch.tensor([sequences[0][:shared]], dtype=torch.long, device=device)
    kwargs = {"logits_to_keep": 1} if keeps_logits else {}
    with torch.inference_mode():
        cache = output_cache(model(input_ids=prefix, use_cache=True, **kwargs))
    if not hasattr(cache, "batch_repeat_interleave"):
        return Batch(*left_pad(sequences, tokenizer, device))
    cache.batch_repeat_interleave(len(sequences))
    suffix_ids, suffix_mask = left_pad([ids[shared:] for ids in sequences], tokenizer, device)
    return Batch(
        input_ids=torch.cat([prefix.expand(len(sequences), -1), suffix_ids], dim=1),
        attention_mask=torch.cat([torch.ones_like(prefix).expand(len(sequences), -1), suffix_mask], dim=1),
        cache=cache,
        cached_length=shared,
    )
