"""How the transformers backend picks each reply token and tells why a reply ended.

``generate`` runs greedy over a logits processor that has already sampled each row with the row's own
``torch.Generator`` (:func:`make_row_sampler`), so a row's reply depends on its seed only, never on the rows that share
its batch.
"""

from __future__ import annotations

from typing import Any

from hf_cai.backends.base import Generation, cut_at_stop

NUCLEUS_CANDIDATES = (64, 1024)
"""How many of the most likely tokens are examined for a row's nucleus before more are (finally, all of them): most
nuclei are narrow, and a partial top-k is many times cheaper than sorting the whole vocabulary."""


def make_row_sampler(generators: list, temperature: float, top_p: float):
    """A logits processor that samples each row with its own generator and leaves only that token finite.

    ``generate`` then runs greedy, which picks the sampled token, so all of its machinery (cache, stopping criteria,
    finished rows) is reused while the randomness stays per row. A row's token is drawn by inverting its cumulative
    distribution in vocabulary order with one uniform draw from its generator: no sort and no ``multinomial``, the
    two costliest steps of sampling over a large vocabulary.

    The distribution, its nucleus and its cumulative sum are float64, and so is the draw (53 random bits): in float32
    a token less likely than about 3e-8 adds nothing to a cumulative sum near 1 and could never be drawn, and the
    nucleus cut-off moves with the sum's rounding.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids, scores):
            probs = torch.softmax(scores.double() / temperature, dim=-1)
            if top_p < 1.0:
                probs = nucleus(probs, top_p)
            cumulative = probs.cumsum(dim=-1)
            draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
            threshold = draws.to(cumulative.device) * cumulative[:, -1]
            tokens = torch.searchsorted(cumulative, threshold.unsqueeze(-1)).clamp(max=cumulative.shape[-1] - 1)
            forced = torch.full_like(scores, float("-inf"))
            return forced.scatter_(-1, tokens, 0.0)

    return RowSampler()


def nucleus(probs, top_p: float):
    """``probs`` with every token outside each row's top-``top_p`` nucleus zeroed.

    A token is in the nucleus when the tokens more likely than it hold less than ``top_p`` of the mass. Tied tokens
    are in or out together, so the result depends on the row's probabilities only, never on the order of ties. The
    cut-off is as exact as ``probs``' dtype: the sampler passes float64.
    """
    import torch

    vocabulary = probs.shape[-1]
    floor = torch.empty(probs.shape[0], dtype=probs.dtype, device=probs.device)
    pending = torch.arange(probs.shape[0], device=probs.device)
    for size in (*(min(c, vocabulary) for c in NUCLEUS_CANDIDATES), vocabulary):
        top = probs[pending].topk(size, dim=-1).values
        inside = (top.cumsum(dim=-1) - top) < top_p
        # A row whose every candidate is inside may have more nucleus beyond them: look again with more candidates.
        settled = ~inside[:, -1] if size < vocabulary else torch.ones_like(inside[:, -1])
        floor[pending[settled]] = top[settled].masked_fill(~inside[settled], float("inf")).amin(dim=-1)
        pending = pending[~settled]
        if not len(pending):
            break
    return probs * (probs >= floor.unsqueeze(-1))


def greedy_generation_config(max_new_tokens: int, stop: list[str], eos_ids: list[int], pad_id: int) -> Any:
    """The ``GenerationConfig`` of every batch: greedy over the row sampler's output, with the penalties set
    explicitly, so the model's own generation_config (sampling, repetition penalty) cannot change what the protocol
    arguments describe."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        stop_strings=stop or None,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )


def finished_generation(text: str, stop: list[str], end_of_turn: bool) -> Generation:
    """A decoded reply cut at its first stop string, with the reason it ended. A stop string counts first: the
    reply ends there even when the model went on to end its turn within the same step."""
    reply, stopped = cut_at_stop(text, stop)
    if stopped:
        return Generation(reply, "stop_string")
    return Generation(reply, "stop" if end_of_turn else "length")
