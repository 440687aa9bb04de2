"""The row sampler draws from the exact distribution: checked against probabilities and nuclei computed here in
float64 from the logits, with the per-row seeds the transformers backend uses."""

from __future__ import annotations

import math
from collections import Counter

import torch

from hf_cai.backends.base import row_seed
from hf_cai.backends.decoding import make_row_sampler

SIGNIFICANCE = 1e-6
"""A goodness-of-fit test fails below this p-value: generous, since the seeds are fixed and a correct sampler must
not fail by bad luck."""

VOCABULARY = 151_936


def _draws(
    logits: torch.Tensor, rows: int | list[int], temperature: float = 1.0, top_p: float = 1.0, chunk: int = 4096
):
    """The token the sampler draws for each of ``rows`` rows (or for each row listed) that all have ``logits``, row
    ``i`` seeded as the backend seeds it; rows go through the sampler ``chunk`` at a time to bound memory."""
    indices = list(range(rows)) if isinstance(rows, int) else rows
    tokens: list[int] = []
    for start in range(0, len(indices), chunk):
        seeds = [row_seed(11, index) for index in indices[start : start + chunk]]
        sampler = make_row_sampler([torch.Generator().manual_seed(s) for s in seeds], temperature, top_p)
        forced = sampler(None, logits.expand(len(seeds), -1))
        assert (torch.isfinite(forced).sum(dim=-1) == 1).all()
        tokens += forced.argmax(dim=-1).tolist()
    return tokens


def _exact_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> list[float]:
    values = [value / temperature for value in logits.tolist()]
    top = max(values)
    weights = [math.exp(value - top) for value in values]
    total = math.fsum(weights)
    return [weight / total for weight in weights]


def _exact_nucleus(probabilities: list[float], top_p: float) -> set[int]:
    """The tokens whose more likely tokens hold less than ``top_p`` of the mass."""
    order = sorted(range(len(probabilities)), key=lambda token: -probabilities[token])
    inside, more_likely, above = set(), [], 0.0
    for position, token in enumerate(order):
        if position and probabilities[token] < probabilities[order[position - 1]]:
            above = math.fsum(more_likely)
        if above >= top_p:
            break
        inside.add(token)
        more_likely.append(probabilities[token])
    return inside


def _chi_square_p_value(counts: Counter, probabilities: dict[int, float]) -> float:
    """The p-value of Pearson's goodness-of-fit test of ``counts`` against ``probabilities`` (which sum to 1)."""
    rows = sum(counts.values())
    statistic = sum((counts[token] - rows * p) ** 2 / (rows * p) for token, p in probabilities.items())
    degrees = len(probabilities) - 1
    # The chi-square upper tail by its recurrence in steps of two degrees of freedom from one or two.
    half = statistic / 2
    tail = math.erfc(math.sqrt(half)) if degrees % 2 else math.exp(-half)
    for k in range(2 - degrees % 2, degrees, 2):
        tail += math.exp(k / 2 * math.log(half) - half - math.lgamma(k / 2 + 1))
    return tail


def test_draws_follow_the_exact_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.3, 0.0, -0.5, -1.0, -1.7, -2.5])
    probabilities = _exact_probabilities(logits, temperature=0.8)
    counts = Counter(_draws(logits, rows=10_000, temperature=0.8))
    assert _chi_square_p_value(counts, dict(enumerate(probabilities))) > SIGNIFICANCE


def test_nucleus_draws_follow_the_exact_nucleus():
    logits = torch.tensor([2.0, 1.5, 1.0, 1.0, 0.3, 0.0, -0.5, -1.0, -1.7, -2.5])
    probabilities = _exact_probabilities(logits)
    inside = _exact_nucleus(probabilities, 0.8)
    assert 2 < len(inside) < len(probabilities)
    counts = Counter(_draws(logits, rows=10_000, top_p=0.8))
    assert set(counts) <= inside
    mass = math.fsum(probabilities[token] for token in inside)
    assert _chi_square_p_value(counts, {token: probabilities[token] / mass for token in inside}) > SIGNIFICANCE


def test_tokens_rarer_than_float32_resolution_are_drawn_exactly():
    # One likely token, then 151,935 tokens of probability 2.5e-8 each: together 0.38% of the mass, but each below
    # half a float32 step of a cumulative sum near 1.
    share = 2.5e-8
    logits = torch.full((VOCABULARY,), math.log(share / (1 - (VOCABULARY - 1) * share)), dtype=torch.float32)
    logits[0] = 0.0
    probabilities = _exact_probabilities(logits)
    likely, rare = probabilities[0], probabilities[1]
    assert 2.4e-8 < rare < 2.6e-8 and 0.9961 < likely < 0.9963
    # A row draws the token where its generator's first float64 uniform u falls in the cumulative distribution: past
    # the likely token that is rare token 1 + floor((u - likely) / rare). Rows whose u falls within 1% of a rare
    # token's width from its edges are left out, so the rounding of a float64 sum cannot decide the token.
    expected = {}
    for row in range(8192):
        u = torch.rand((), generator=torch.Generator().manual_seed(row_seed(11, row)), dtype=torch.float64).item()
        position = (u - likely) / rare
        if position > 0 and 0.01 < position % 1 < 0.99:
            expected[row] = 1 + int(position)
    assert len(expected) >= 16
    assert _draws(logits, list(expected), chunk=64) == list(expected.values())


def test_nucleus_cut_off_is_exact_on_a_large_vocabulary():
    # Two likely tokens and a candidate with 25% of the mass, the other 15% spread thinly over the vocabulary.
    weights = torch.rand(VOCABULARY, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.05
    weights *= 0.15 / weights.sum()
    candidate = 1000
    for token, share in ((5, 0.3), (70_000, 0.3), (candidate, 0.25)):
        weights[token] = share
    logits = weights.log().float()
    probabilities = _exact_probabilities(logits)
    above_candidate = math.fsum(p for p in probabilities if p > probabilities[candidate])
    assert 0.55 < above_candidate < 0.65 and 0.2 < probabilities[candidate] < 0.3
    # A top_p just above the mass of the more likely tokens takes the candidate in; just below, leaves it out.
    for top_p in (above_candidate * (1 + 1e-10), above_candidate * (1 - 1e-10)):
        inside = _exact_nucleus(probabilities, top_p)
        assert (candidate in inside) == (top_p > above_candidate) and len(inside) >= 2
        counts = Counter(_draws(logits, rows=64, top_p=top_p))
        assert set(counts) <= inside
        # With the candidate inside, 64 rows without it would have a probability below 1e-9.
        assert (candidate in counts) == (candidate in inside)
