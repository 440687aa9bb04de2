"""Multiple-choice evaluations in the paper's format: how well a feedback model picks the better response.

Files hold one ``{"prompt", "corrects", "incorrects"}`` object per JSONL line (e.g. ``438HHHEvaluations.jsonl``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_cai.backends.base import progress_bar
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError
from hf_cai.stats import Proportion

OptionScorer = Callable[[Sequence["MultipleChoiceItem"]], list[list[float]]]
"""Scores a batch of items: per item, one log-probability per option of :attr:`MultipleChoiceItem.options`."""


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One question: a prompt and its correct and incorrect continuations."""

    prompt: str
    corrects: tuple[str, ...]
    incorrects: tuple[str, ...]

    @property
    def options(self) -> tuple[str, ...]:
        return self.corrects + self.incorrects

    def conversation(self) -> Conversation:
        """The prompt as a single user turn for a chat model (a trailing ``Assistant:`` cue is dropped)."""
        text = self.prompt.strip()
        text = re.sub(r"\n*\s*(Assistant:|The answer is:)\s*$", "", text).strip()
        return [{"role": "user", "content": text}]


def load_multiple_choice(path: str | Path) -> list[MultipleChoiceItem]:
    """Read a JSONL file of ``{"prompt", "corrects", "incorrects"}`` objects (the paper's evaluation format)."""
    path = Path(path)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not valid JSON ({error.msg})") from error
        for key in ("prompt", "corrects", "incorrects"):
            if key not in record:
                raise InputError(f"{path}:{number}: missing field '{key}' (expected prompt, corrects, incorrects)")
        corrects, incorrects = record["corrects"], record["incorrects"]
        if not corrects or not incorrects:
            raise InputError(f"{path}:{number}: 'corrects' and 'incorrects' must each list at least one option")
        items.append(
            MultipleChoiceItem(
                prompt=record["prompt"],
                corrects=tuple(o.strip() for o in corrects),
                incorrects=tuple(o.strip() for o in incorrects),
            )
        )
    if not items:
        raise InputError(f"{path}: no items")
    return items


def backend_option_scorer(backend) -> OptionScorer:
    """An :data:`OptionScorer` over a generation backend: log-probability of each option as the reply's start.

    Items sharing the same options (all of ``438HHHEvaluations.jsonl`` has ``(A)``/``(B)``) go in one call.
    """

    def score(items: Sequence[MultipleChoiceItem]) -> list[list[float]]:
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(item.options, []).append(index)
        results: list[list[float]] = [[] for _ in items]
        for options, indices in groups.items():
            scores = backend.option_logprobs([items[i].conversation() for i in indices], list(options))
            for i, row in zip(indices, scores):
                results[i] = list(row)
        return results

    return score


def multiple_choice_accuracy(
    items: Sequence[MultipleChoiceItem], scorer: OptionScorer, *, batch_size: int = 32, name: str = "accuracy"
) -> Proportion:
    """Fraction of items whose best-scored correct option beats every incorrect one (ties count as wrong)."""
    correct = 0
    for start in progress_bar(range(0, len(items), batch_size), description=f"multiple choice ({name})", unit="batch"):
        batch = items[start : start + batch_size]
        for item, scores in zip(batch, scorer(batch)):
            split = len(item.corrects)
            if max(scores[:split]) > max(scores[split:]):
                correct += 1
    return Proportion(name, correct, len(items))
