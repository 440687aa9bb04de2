"""Key/value caches of the Space's recent conversations, so that a visitor's next turn computes only its new tokens.

A chat turn's prompt is the previous turn's prompt and reply followed by the new message. Computing the whole prompt
again is most of a batch's work on a CPU (the prompt pass grows with every turn and with every visitor; the decoding
steps much less), so after each batch every finished reply's keys and values (prompt + reply) are kept here, by
adapter and token ids, least recently used first out within a memory budget. A new prompt that starts with at least
``MIN_SHARED_PREFIX`` tokens of a kept entry takes that entry's keys and values, and the batch computes only the rest.

In a batch, each row is laid out as ``[padding][reused tokens][padding][new tokens]``: the reused part comes as the
cache of the first columns (each row's entry padded on its left to the longest), the new tokens follow, and the
attention mask hides the padding, whose positions the model skips when it numbers the tokens. Only models whose cache
is a plain (not sliding-window) ``DynamicCache`` take part; for others nothing is reused.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

from hf_cai.backends.batching import MIN_SHARED_PREFIX, common_prefix_length, left_pad


@dataclass(eq=False)
class CachedPrefix:
    """The keys and values of a token sequence: per layer ``(keys, values)``, each ``[heads, len(ids), dim]``."""

    adapter: str | None
    ids: list[int]
    layers: list[tuple[Any, Any]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


class PrefixCache:
    """The recent conversations' keys and values of one model, within ``max_bytes`` (see the module docstring)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.reused_tokens = 0
        """Prompt tokens that were not computed again thanks to the cache, so far."""
        self._entries: collections.OrderedDict[int, CachedPrefix] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def find(self, adapter: str | None, ids: list[int]) -> tuple[int, CachedPrefix | None]:
        """The kept entry sharing the longest prefix with ``ids`` under ``adapter``, and how many of its tokens to
        reuse (at least one token of ``ids`` is left to compute); ``(0, None)`` below ``MIN_SHARED_PREFIX``."""
        with self._lock:
            best, found = 0, None
            for entry in self._entries.values():
                if entry.adapter == adapter:
                    shared = min(common_prefix_length([entry.ids, ids]), len(ids) - 1)
                    if shared > best:
                        best, found = shared, entry
            if found is None or best < MIN_SHARED_PREFIX:
                return 0, None
            self._entries.move_to_end(id(found))
            return best, found

    def keep(self, entry: CachedPrefix, *, replacing: CachedPrefix | None = None) -> None:
        """Keep ``entry`` (dropping ``replacing``, the entry it grew from), then drop the least recently used entries
        until the cache fits its budget."""
        with self._lock:
            if replacing is not None and self._entries.pop(id(replacing), None) is not None:
                self._bytes -= replacing.nbytes
            if entry.nbytes > self.max_bytes:
                return
            self._entries[id(entry)] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes


def batch_inputs(
    model: Any, sequences: list[list[int]], reused: list[tuple[int, CachedPrefix | None]], tokenizer: Any
) -> tuple[Any, Any, Any]:
    """``input_ids``, ``attention_mask`` and the cache of the reused columns for a batch (``None`` when no row reuses
    anything): each row ``[padding][reused][padding][new tokens]``, as the module docstring describes."""
    import torch
    from transformers import DynamicCache

    device = model.device
    width = max(count for count, _ in reused)
    if width == 0:
        input_ids, attention_mask = left_pad(sequences, tokenizer, device)
        return input_ids, attention_mask, None
    pad_id = tokenizer.pad_token_id
    new = max(len(ids) - count for ids, (count, _) in zip(sequences, reused))
    rows, masks = [], []
    for ids, (count, _) in zip(sequences, reused):
        gap, fresh = new - (len(ids) - count), ids[count:]
        rows.append([pad_id] * (width - count) + ids[:count] + [pad_id] * gap + fresh)
        masks.append([0] * (width - count) + [1] * count + [0] * gap + [1] * len(fresh))
    template = next(entry for _, entry in reused if entry is not None).layers
    layers = []
    for index, (keys, values) in enumerate(template):
        batch_keys = keys.new_zeros((len(sequences), keys.shape[0], width, keys.shape[2]))
        batch_values = values.new_zeros((len(sequences), values.shape[0], width, values.shape[2]))
        for row, (count, entry) in enumerate(reused):
            if count:
                batch_keys[row, :, width - count :] = entry.layers[index][0][:, :count]
                batch_values[row, :, width - count :] = entry.layers[index][1][:, :count]
        layers.append((batch_keys.to(device), batch_values.to(device)))
    cache = DynamicCache(ddp_cache_data=layers, config=model.config)
    return (torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(masks, dtype=torch.long, device=device), cache)


def reusable(cache: Any) -> bool:
    """Whether a cache ``generate`` returned can be cut into per-row entries: a ``DynamicCache`` of full-attention
    layers holding ``keys`` and ``values`` tensors."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    return (
        isinstance(cache, DynamicCache)
        and bool(layers)
        and not any(getattr(cache, "is_sliding", [True]))
        and all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers)
    )


def row_prefix(cache: Any, row: int, columns: Any, adapter: str | None, ids: list[int]) -> CachedPrefix:
    """Row ``row``'s keys and values at ``columns`` (its tokens, in order, without padding), as an entry for ``ids``."""
    layers = [
        (layer.keys[row].index_select(1, columns).clone(), layer.values[row].index_select(1, columns).clone())
        for layer in cache.layers
    ]
    return CachedPrefix(adapter, list(ids), layers)
