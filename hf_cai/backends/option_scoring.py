"""Log-probabilities of option strings as the start of a reply, for one batch of prompts on a loaded model.

One forward pass over the batch gives every option's first token; when options are longer, the prompts' key/value
cache is repeated per option and one more short pass scores the options' remaining tokens.
"""

from __future__ import annotations

from typing import Any

from hf_cai.backends.base import BackendError
from hf_cai.backends.batching import Batch, cache_name, output_cache


def score_options(
    model: Any, batch: Batch, options: list[list[list[int]]], *, pad_id: int, keeps_logits: bool
) -> list[list[float]]:
    """Per row of ``batch``, the summed log-probability of each of its options' token ids (``options[row][option]``,
    the same number of options per row). ``keeps_logits``: the model's forward takes ``logits_to_keep``."""
    import torch

    input_ids, attention_mask = batch.input_ids, batch.attention_mask
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    start = batch.cached_length
    kwargs: dict[str, Any] = {"logits_to_keep": 1} if keeps_logits else {}
    if batch.cache is not None:
        kwargs[cache_name()] = batch.cache
    with torch.inference_mode():
        output = model(
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
    cache = output_cache(output)
    if not hasattr(cache, "batch_repeat_interleave"):
        raise BackendError(
            f"option scoring needs a transformers Cache from the model, got {type(cache).__name__}; "
            "upgrade transformers or use single-token options"
        )
    cache.batch_repeat_interleave(count)
    rows = [ids for row in options for ids in row]
    device = input_ids.device
    feed = torch.tensor([ids[:-1] + [pad_id] * (tail - len(ids) + 1) for ids in rows], dtype=torch.long, device=device)
    mask = torch.cat(
        [attention_mask.repeat_interleave(count, dim=0), torch.ones(len(rows), tail, dtype=torch.long, device=device)],
        dim=-1,
    )
    positions = position_ids[:, -1:].repeat_interleave(count, dim=0) + 1 + torch.arange(tail, device=device)
    with torch.inference_mode():
        logits = model(
            input_ids=feed, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_name(): cache}
        ).logits
    rest = torch.log_softmax(logits.float(), dim=-1)
    for r, ids in enumerate(rows):
        if len(ids) > 1:
            targets = torch.tensor(ids[1:], device=rest.device)
            scores[r // count][r % count] += float(rest[r, : len(ids) - 1].gather(-1, targets.unsqueeze(-1)).sum())
    return scores
