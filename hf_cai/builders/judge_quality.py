"""How good the AI-feedback judge is, measured before it labels preference data.

RL-CAI's preference labels are only as good as the feedback model that gives them. A model near chance still
produces a dataset that looks fine (soft labels, both orders averaged), and a policy trained on it learns nothing or
worse. :func:`measure_judge_quality` asks the judge questions whose answers are known, in the paper's multiple-choice
format, each one in both option orders (as :class:`~hf_cai.builders.ai_feedback.PreferenceScorer` asks them), and
returns a :class:`JudgeQualityReport`; :func:`check_judge_quality` turns it into plain warnings and, with a
``min_judge_accuracy`` threshold, stops a run whose judge is not good enough (:mod:`hf_cai.builders.judge_check` runs
both before labelling).

The built-in items are ``hf_cai/prompts/judge_calibration.jsonl``; users add their own files in the same format,
e.g. the paper's ``438HHHEvaluations.jsonl``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hf_cai.backends.base import progress_bar
from hf_cai.builders.multiple_choice import MultipleChoiceItem, load_multiple_choice, swap_options
from hf_cai.errors import HFCAIError, InputError
from hf_cai.stats import Proportion

logger = logging.getLogger(__name__)

BUILTIN_SOURCE = "builtin"
"""The source name of the built-in calibration items in :attr:`JudgeQualityReport.sources`."""

_BUILTIN_FILE = "judge_calibration.jsonl"
_LABEL_A, _LABEL_B = "(A)", "(B)"
_TIE = 1e-9


class JudgeQualityError(HFCAIError, RuntimeError):
    """The feedback model's accuracy on the calibration items is below the run's ``min_judge_accuracy``."""


def builtin_calibration_items() -> list[MultipleChoiceItem]:
    """The built-in calibration set (``hf_cai/prompts/judge_calibration.jsonl``): pairs of replies, one clearly better,
    asked in the paper's multiple-choice format."""
    resource = resources.files("hf_cai") / "prompts" / _BUILTIN_FILE
    with resources.as_file(resource) as path:
        return load_multiple_choice(path)


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _with_interval(proportion: Proportion) -> str:
    low, high = proportion.interval
    return f"{_percent(proportion.value)} [{_percent(low)}, {_percent(high)}]"


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class JudgeQualityReport:
    """How well a feedback model judges, on questions whose answers are known.

    Attributes:
        accuracy: Items whose correct option got more than half of the order-averaged probability, normalised over
            the options (as :class:`~hf_cai.builders.ai_feedback.PreferenceScorer` normalises ``(A)``/``(B)``);
            exactly half counts as half an item. Items with more than two options count when the correct option
            is the most probable one.
        order_consistency: Items whose preferred reply is the same in both option orders, over the items that could
            be asked both ways (:func:`swap_options`); a tie in one order counts half.
        option_mass: Mean, over all presentations, of the probability the judge puts on the option strings at all
            (low means it does not answer the question in the expected form).
        label_entropy: Mean binary entropy, in bits, of the order-averaged probability of the correct option: 0.0
            is a judge that always decides, 1.0 one that never does.
        position_bias: Share of the two-way presentations where option (A) got more probability than (B) (ties count
            half); 0.5 is no bias. NaN when no item could be asked both ways.
        n: Number of items.
        sources: Items per source (``"builtin"`` for the built-in set, a file's name for a user's file).
        source_accuracy: :attr:`accuracy` per source.
        option_labels: The distinct option strings the items used, sorted.
        chance: The accuracy of a judge that picks an option at random: the mean over the items of 1/k for an item
            with k options (0.5 when every item has two).
    """

    accuracy: Proportion
    order_consistency: Proportion
    option_mass: float
    label_entropy: float
    position_bias: float
    n: int
    sources: dict[str, int] = field(default_factory=dict)
    source_accuracy: dict[str, Proportion] = field(default_factory=dict)
    option_labels: tuple[str, ...] = ()
    chance: float = 0.5

    @property
    def near_chance(self) -> bool:
        """Whether chance (:attr:`chance`) is not ruled out: the low end of the accuracy's 95% interval is at or
        below it. The accuracy itself may be well above chance (9 of 12 is 75% [47%, 91%]): the items are too few to
        tell it from chance."""
        return self.accuracy.interval[0] <= self.chance

    def warnings(self, min_option_mass: float = 0.5, min_order_consistency: float = 0.6) -> list[str]:
        """Plain sentences on what is wrong with this judge, for a user deciding whether to trust its labels."""
        messages = []
        low, high = self.accuracy.interval
        measured = f"the judge's accuracy was {_with_interval(self.accuracy)} on {self.n} calibration items"
        small = f" (with only {self.n} items the interval is wide: measure more items)" if self.n < 50 else ""
        if high < self.chance:
            messages.append(
                f"{measured}: it is worse than chance ({_percent(self.chance)}), so its preference labels point the "
                f"wrong way{small}"
            )
        elif self.near_chance:
            messages.append(
                f"{measured}: its interval reaches chance ({_percent(self.chance)}), so it is not distinguishable from "
                f"chance and its preference labels may carry no signal{small}"
            )
        if self.option_mass < min_option_mass:
            mass = "less than 1%" if self.option_mass < 0.005 else f"only {_percent(self.option_mass)}"
            options = "/".join(self.option_labels) if 0 < len(self.option_labels) <= 4 else "the answer options"
            messages.append(
                f"{mass} of the judge's probability falls on {options}: it is not "
                f"answering the question, so its labels rest on a sliver of its output (check the feedback model's "
                f"chat template, or use an instruction-tuned feedback model)"
            )
        if self.order_consistency.total and self.order_consistency.value < min_order_consistency:
            bias = ""
            if not math.isnan(self.position_bias):
                bias = f"; (A) got more probability in {_percent(self.position_bias)} of the presentations"
            messages.append(
                f"the judge chose the same reply in both option orders for only {_with_interval(self.order_consistency)}"
                f" of {self.order_consistency.total} items: its answer depends on where a reply is shown rather than "
                f"on what it says{bias} (averaging both orders cancels the bias but leaves labels near 0.5)"
            )
        return messages

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (``eval/results.json``'s ``judge_quality``); NaN becomes ``None``."""
        low, high = self.accuracy.interval
        consistency_low, consistency_high = self.order_consistency.interval
        return {
            "accuracy": _finite_or_none(self.accuracy.value),
            "accuracy_ci95": [low, high],
            "order_consistency": _finite_or_none(self.order_consistency.value),
            "order_consistency_ci95": [consistency_low, consistency_high],
            "order_consistency_n": self.order_consistency.total,
            "option_mass": _finite_or_none(self.option_mass),
            "label_entropy": _finite_or_none(self.label_entropy),
            "position_bias": _finite_or_none(self.position_bias),
            "near_chance": self.near_chance,
            "chance": self.chance,
            "n": self.n,
            "sources": dict(self.sources),
            "source_accuracy": {name: p.to_dict() for name, p in self.source_accuracy.items()},
            "warnings": self.warnings(),
        }

    def __str__(self) -> str:
        consistency = _with_interval(self.order_consistency) if self.order_consistency.total else "n/a"
        return (
            f"judge accuracy {_with_interval(self.accuracy)} on {self.n} items; order consistency {consistency}; "
            f"option mass {_percent(self.option_mass)}; label entropy {self.label_entropy:.2f} bits"
        )


@dataclass(frozen=True)
class _Presentation:
    """One way of asking one item: the item as shown, and which item and order it stands for."""

    item: MultipleChoiceItem
    index: int
    swapped: bool


@dataclass
class _Scores:
    """What the judge said to one presentation."""

    correct_probability: float  # normalised over the options
    winner: float  # 1 correct option most probable, 0 an incorrect one, 0.5 a tie
    mass: float  # probability on the options at all
    a_first: float | None  # 1 (A) above (B), 0 below, 0.5 tie; None when not a two-way (A)/(B) presentation


def _logsumexp(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    top = max(values, default=-math.inf)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _score(presentation: _Presentation, logprobs: dict[str, float], two_way: bool) -> _Scores:
    item = presentation.item
    correct = [logprobs[o] for o in item.corrects]
    incorrect = [logprobs[o] for o in item.incorrects]
    everything = _logsumexp(correct + incorrect)
    probability = 0.5 if everything == -math.inf else math.exp(_logsumexp(correct) - everything)
    best_correct, best_incorrect = max(correct), max(incorrect)
    winner = 1.0 if best_correct > best_incorrect else 0.0 if best_correct < best_incorrect else 0.5
    mass = min(1.0, math.exp(everything)) if everything > -math.inf else 0.0
    a_first = None
    if two_way:
        a, b = logprobs[_LABEL_A], logprobs[_LABEL_B]
        a_first = 1.0 if a > b else 0.0 if a < b else 0.5
    return _Scores(probability, winner, mass, a_first)


def _binary_entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _credit(probability: float) -> float:
    """1 when the probability is above one half, 0 below, 0.5 at one half (within rounding)."""
    if probability > 0.5 + _TIE:
        return 1.0
    if probability < 0.5 - _TIE:
        return 0.0
    return 0.5


def _source_name(path: Path, taken: set[str]) -> str:
    return path.name if path.name not in taken else str(path)


def _collect(
    items: Sequence[MultipleChoiceItem] | None, files: Sequence[str | Path]
) -> list[tuple[str, MultipleChoiceItem]]:
    if items is None:
        collected = [(BUILTIN_SOURCE, item) for item in builtin_calibration_items()]
    else:
        collected = [("items", item) for item in items]
    taken = {source for source, _ in collected}
    for file in files:
        name = _source_name(Path(file), taken)
        taken.add(name)
        collected += [(name, item) for item in load_multiple_choice(file)]
    return collected


def measure_judge_quality(
    backend: Any,
    items: Sequence[MultipleChoiceItem] | None = None,
    *,
    files: Sequence[str | Path] = (),
    max_items: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> JudgeQualityReport:
    """Ask the judge ``backend`` questions with known answers, each in both option orders, and report how it did.

    Args:
        backend: A generation backend; only its ``option_logprobs`` is used.
        items: The questions; the built-in calibration set when ``None`` (its source is ``"builtin"``; given items'
            source is ``"items"``).
        files: More questions, from files in the paper's ``{"prompt", "corrects", "incorrects"}`` format; each file's
            name is its source.
        max_items: Sample this many of all the items (with ``seed``); all of them when ``None``.
        seed: Seeds the sample.
        batch_size: Prompts per ``option_logprobs`` call. Presentations with the same option strings share a call.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if max_items is not None and max_items < 1:
        raise InputError(f"max_items must be >= 1 or None, got {max_items}")
    collected = _collect(items, files)
    if not collected:
        raise InputError("no calibration items to measure the judge on")
    if max_items is not None and max_items < len(collected):
        chosen = sorted(random.Random(seed).sample(range(len(collected)), max_items))
        collected = [collected[i] for i in chosen]

    presentations: list[_Presentation] = []
    two_way: list[bool] = []
    for index, (_, item) in enumerate(collected):
        presentations.append(_Presentation(item, index, swapped=False))
        swapped = swap_options(item)
        two_way.append(swapped is not None)
        if swapped is not None:
            presentations.append(_Presentation(swapped, index, swapped=True))
    logger.info(
        "measuring the judge on %d calibration items (%d presentations, %d asked in both orders)",
        len(collected),
        len(presentations),
        sum(two_way),
    )

    groups: dict[tuple[str, ...], list[int]] = {}
    for position, presentation in enumerate(presentations):
        groups.setdefault(tuple(sorted(set(presentation.item.options))), []).append(position)
    scores: list[_Scores | None] = [None] * len(presentations)
    with progress_bar(total=len(presentations), description="judge quality", unit="question") as progress:
        for options, positions in groups.items():
            for start in range(0, len(positions), batch_size):
                chunk = positions[start : start + batch_size]
                rows = backend.option_logprobs([presentations[p].item.conversation() for p in chunk], list(options))
                if len(rows) != len(chunk) or any(len(row) != len(options) for row in rows):
                    raise InputError(
                        f"the backend's option_logprobs returned {len(rows)} rows for {len(chunk)} prompts and "
                        f"{len(options)} options {list(options)}"
                    )
                for p, row in zip(chunk, rows):
                    presentation = presentations[p]
                    logprobs = {option: float(value) for option, value in zip(options, row)}
                    scores[p] = _score(presentation, logprobs, two_way[presentation.index])
                progress.update(len(chunk))

    per_item: list[list[_Scores]] = [[] for _ in collected]
    for presentation, score in zip(presentations, scores):
        assert score is not None
        per_item[presentation.index].append(score)

    correct = consistent = 0.0
    entropy = 0.0
    source_counts: dict[str, int] = {}
    source_correct: dict[str, float] = {}
    for (source, item), asked in zip(collected, per_item):
        probability = sum(s.correct_probability for s in asked) / len(asked)
        credit = _credit(probability) if len(item.options) == 2 else sum(s.winner for s in asked) / len(asked)
        correct += credit
        entropy += _binary_entropy(probability)
        if len(asked) == 2:
            consistent += 1.0 - abs(asked[0].winner - asked[1].winner)
        source_counts[source] = source_counts.get(source, 0) + 1
        source_correct[source] = source_correct.get(source, 0.0) + credit

    n = len(collected)
    masses = [s.mass for s in scores if s is not None]
    a_first = [s.a_first for s in scores if s is not None and s.a_first is not None]
    report = JudgeQualityReport(
        accuracy=Proportion("judge accuracy", correct, n),
        order_consistency=Proportion("judge order consistency", consistent, sum(two_way)),
        option_mass=sum(masses) / len(masses),
        label_entropy=entropy / n,
        position_bias=sum(a_first) / len(a_first) if a_first else float("nan"),
        n=n,
        sources=source_counts,
        source_accuracy={
            name: Proportion(f"judge accuracy ({name})", source_correct[name], count)
            for name, count in source_counts.items()
        },
        option_labels=tuple(sorted({option for _, item in collected for option in item.options})),
        chance=sum(1 / len(item.options) for _, item in collected) / n,
    )
    logger.info("%s", report)
    return report


def check_judge_quality(
    report: JudgeQualityReport, *, min_accuracy: float | None = None, min_option_mass: float = 0.5
) -> list[str]:
    """The report's warnings, each also logged; raises :class:`JudgeQualityError` when ``min_accuracy`` (the run's
    ``min_judge_accuracy``) is set and the judge's measured accuracy is below it."""
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise InputError(f"min_judge_accuracy must be between 0 and 1, got {min_accuracy}")
    messages = report.warnings(min_option_mass=min_option_mass)
    for message in messages:
        logger.warning("%s", message)
    if min_accuracy is not None and not report.accuracy.value >= min_accuracy:
        raise JudgeQualityError(
            f"the feedback model's accuracy on {report.n} judge calibration items was "
            f"{_with_interval(report.accuracy)}, below min_judge_accuracy={min_accuracy:g}: its preference labels "
            f"would mislead the training. Use a stronger feedback model (AIFeedbackBuilder's feedback_backend; the "
            f"recipe's feedback_model, or feedback_endpoint for a served one), or lower min_judge_accuracy, or unset "
            f"it to label anyway."
        )
    return messages


__all__ = [
    "BUILTIN_SOURCE",
    "JudgeQualityError",
    "JudgeQualityReport",
    "builtin_calibration_items",
    "check_judge_quality",
    "measure_judge_quality",
    "swap_options",
]
