"""Multiple-choice evaluations in the paper's format: how well a feedback model picks the better response.

Files hold one ``{"prompt", "corrects", "incorrects"}`` object per JSONL line (e.g. ``438HHHEvaluations.jsonl``).
A two-option ``(A) [[[...]]]`` / ``(B) [[[...]]]`` question is asked in both option orders (:func:`swap_options`), as
:mod:`~hf_cai.builders.judge_quality` asks its calibration items: a judge that always answers "(A)" gets exactly half
of such items right, whatever the file's share of "(A)" answers (228 of the 438 items in ``438HHHEvaluations.jsonl``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_cai.backends.base import progress_bar
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError
from hf_cai.stats import Proportion

_LABEL_A, _LABEL_B = "(A)", "(B)"
_TIE = 1e-9
# " (A) [[[first reply]]]\n (B) [[[second reply]]]": the two-option layout of the paper's comparison questions.
_BLOCK_A = re.compile(r"\(A\) \[\[\[")
_BLOCK_B = re.compile(r"\(B\) \[\[\[")
# (A)'s text ends at the first "]]]" that the (B) block follows, (B)'s at the last "]]]": a reply may end with "]".
_TWO_BLOCKS = re.compile(r"(\(A\) \[\[\[)(.*?)(\]\]\]\s*\(B\) \[\[\[)(.*)(\]\]\])", re.DOTALL)

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


def swap_options(item: MultipleChoiceItem) -> MultipleChoiceItem | None:
    """The same question with the texts of options (A) and (B) exchanged; the correct label moves with its text.

    ``None`` when the item is not a two-option ``(A) [[[...]]]`` / ``(B) [[[...]]]`` comparison (such items count
    for accuracy, not for order consistency).
    """
    if set(item.options) != {_LABEL_A, _LABEL_B} or len(item.options) != 2:
        return None
    if len(_BLOCK_A.findall(item.prompt)) != 1 or len(_BLOCK_B.findall(item.prompt)) != 1:
        return None
    match = _TWO_BLOCKS.search(item.prompt)
    if match is None:
        return None
    open_a, text_a, between, text_b, close = match.groups()
    prompt = item.prompt[: match.start()] + open_a + text_b + between + text_a + close + item.prompt[match.end() :]
    correct = _LABEL_B if item.corrects == (_LABEL_A,) else _LABEL_A
    incorrect = _LABEL_A if correct == _LABEL_B else _LABEL_B
    return MultipleChoiceItem(prompt=prompt, corrects=(correct,), incorrects=(incorrect,))


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

    Items sharing the same options, in any order (all of ``438HHHEvaluations.jsonl`` has ``(A)``/``(B)``), go in one
    call.
    """

    def score(items: Sequence[MultipleChoiceItem]) -> list[list[float]]:
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, item in enumerate(items):
            groups.setdefault(tuple(sorted(set(item.options))), []).append(index)
        results: list[list[float]] = [[] for _ in items]
        for options, indices in groups.items():
            scores = backend.option_logprobs([items[i].conversation() for i in indices], list(options))
            for i, row in zip(indices, scores):
                by_option = dict(zip(options, row))
                results[i] = [float(by_option[option]) for option in items[i].options]
        return results

    return score


@dataclass(frozen=True)
class MultipleChoiceScores:
    """How a judge did on multiple-choice items, each two-option comparison asked in both option orders.

    Attributes:
        accuracy: Items whose correct option got more than half of the probability over the options, averaged over
            both orders (exactly half counts as half an item); an item that cannot be swapped (more options, another
            layout) counts when its best correct option scores above every incorrect one.
        order_consistency: Of the items asked both ways, those where the judge preferred the same reply in both
            orders (a tie in one order counts half).
    """

    accuracy: Proportion
    order_consistency: Proportion


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _correct_probability(item: MultipleChoiceItem, scores: Sequence[float]) -> float:
    split = len(item.corrects)
    everything = _logsumexp(scores)
    return 0.5 if everything == -math.inf else math.exp(_logsumexp(scores[:split]) - everything)


def _credit(probability: float) -> float:
    return 1.0 if probability > 0.5 + _TIE else 0.0 if probability < 0.5 - _TIE else 0.5


def multiple_choice_scores(
    items: Sequence[MultipleChoiceItem], scorer: OptionScorer, *, batch_size: int = 32, name: str = "accuracy"
) -> MultipleChoiceScores:
    """Ask ``scorer`` every item, each two-option comparison in both option orders (:func:`swap_options`), and return
    the judge's accuracy averaged over both orders and its order consistency (:class:`MultipleChoiceScores`)."""
    asked: list[MultipleChoiceItem] = []
    owners: list[int] = []
    for index, item in enumerate(items):
        swapped = swap_options(item)
        for presented in (item,) if swapped is None else (item, swapped):
            asked.append(presented)
            owners.append(index)
    scores: list[list[float]] = []
    for start in progress_bar(range(0, len(asked), batch_size), description=f"multiple choice ({name})", unit="batch"):
        scores += scorer(asked[start : start + batch_size])
    by_item: list[list[tuple[MultipleChoiceItem, list[float]]]] = [[] for _ in items]
    for presented, owner, row in zip(asked, owners, scores):
        by_item[owner].append((presented, list(row)))
    correct = consistent = 0.0
    two_way = 0
    for presentations in by_item:
        if len(presentations) == 2:
            probabilities = [_correct_probability(presented, row) for presented, row in presentations]
            correct += _credit(sum(probabilities) / 2)
            first, second = (_credit(p) for p in probabilities)
            consistent += 1.0 - abs(first - second)
            two_way += 1
        else:
            (presented, row), = presentations
            split = len(presented.corrects)
            correct += 1.0 if max(row[:split]) > max(row[split:]) else 0.0
    return MultipleChoiceScores(
        accuracy=Proportion(name, correct, len(items)),
        order_consistency=Proportion(f"{name} (order consistency)", consistent, two_way),
    )


def multiple_choice_accuracy(
    items: Sequence[MultipleChoiceItem], scorer: OptionScorer, *, batch_size: int = 32, name: str = "accuracy"
) -> Proportion:
    """The judge's accuracy on ``items``, two-option comparisons asked in both option orders
    (:func:`multiple_choice_scores`)."""
    return multiple_choice_scores(items, scorer, batch_size=batch_size, name=name).accuracy
