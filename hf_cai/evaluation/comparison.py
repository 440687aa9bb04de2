"""Base vs CAI model, judged by the feedback model: pairwise win rates on held-out prompts (harmlessness against the
constitution, helpfulness against the built-in ``helpful-honest`` constitution), each asked in both option orders so
position bias cancels, with Wilson 95% intervals; the rate of evasive refusals of each model; and the feedback model's
multiple-choice accuracy. :func:`evaluate_models` runs them and returns an :class:`EvaluationReport`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.conversation import Conversation
from hf_cai.evaluation.multiple_choice import backend_option_scorer, load_multiple_choice, multiple_choice_accuracy
from hf_cai.evaluation.refusal import is_evasive_refusal
from hf_cai.evaluation.stats import Proportion

logger = logging.getLogger(__name__)


@dataclass
class EvaluationConfig:
    """Options of :func:`evaluate_models`.

    Args:
        harmful_prompts: Held-out red-team prompts; defaults to the built-in red-team set.
        helpful_prompts: Held-out benign prompts; defaults to the built-in helpfulness set.
        max_prompts: Cap on prompts of each kind (``None``: all).
        max_new_tokens: Length of the generated replies.
        temperature: Sampling temperature of the replies (0 for greedy).
        seed: Seed for prompt selection, principle sampling and generation.
        helpfulness_constitution: Constitution whose preference questions judge helpfulness.
        multiple_choice_files: Files in the paper's multiple-choice format to measure the feedback model on.
        max_multiple_choice_items: Cap on items per multiple-choice file (``None``: all).
    """

    harmful_prompts: Sequence[str] | None = None
    helpful_prompts: Sequence[str] | None = None
    max_prompts: int | None = 32
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    helpfulness_constitution: str = "helpful-honest"
    multiple_choice_files: Sequence[str] = ()
    max_multiple_choice_items: int | None = None


@dataclass
class EvaluationReport:
    """Results of :func:`evaluate_models`; saved as ``results.json`` and a chart by :meth:`save`."""

    harmlessness_win_rate: Proportion
    helpfulness_win_rate: Proportion
    evasive_rate_base: Proportion
    evasive_rate_cai: Proportion
    feedback_accuracy: dict[str, Proportion] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)
    constitution_sha256: str = ""

    def metrics(self) -> list[dict[str, Any]]:
        """Flat metric list with intervals (the shape ``results.json`` stores and model cards read)."""
        rows = [
            {**self.harmlessness_win_rate.to_dict(), "type": "win_rate", "dataset": "hf-cai red-team prompts"},
            {**self.helpfulness_win_rate.to_dict(), "type": "win_rate", "dataset": "hf-cai helpfulness prompts"},
            {**self.evasive_rate_base.to_dict(), "type": "evasive_refusal_rate", "dataset": "hf-cai red-team prompts"},
            {**self.evasive_rate_cai.to_dict(), "type": "evasive_refusal_rate", "dataset": "hf-cai red-team prompts"},
        ]
        for file_name, accuracy in self.feedback_accuracy.items():
            rows.append({**accuracy.to_dict(), "type": "accuracy", "dataset": file_name})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"constitution_sha256": self.constitution_sha256, "metrics": self.metrics(), "samples": self.samples}

    def save(self, output_dir: str | Path) -> Path:
        """Write ``results.json`` and ``chart.png`` (before/after bars with 95% intervals) into ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        self.plot(output_dir / "chart.png")
        return output_dir / "results.json"

    def plot(self, path: str | Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
        wins = [self.harmlessness_win_rate, self.helpfulness_win_rate]
        _bars(left, ["harmlessness", "helpfulness"], wins, ["#4c72b0", "#55a868"])
        left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        left.set_title("CAI model win rate vs base")
        _bars(right, ["base", "CAI"], [self.evasive_rate_base, self.evasive_rate_cai], ["#8c8c8c", "#c44e52"])
        right.set_title("Evasive refusals (red-team prompts)")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return Path(path)


def _bars(axis, labels: list[str], values: list[Proportion], colors: list[str]) -> None:
    heights = [0.0 if math.isnan(v.value) else v.value for v in values]
    errors = [[h - v.interval[0] for h, v in zip(heights, values)], [v.interval[1] - h for h, v in zip(heights, values)]]
    axis.bar(labels, heights, yerr=errors, color=colors, capsize=6)
    axis.set_ylim(0, 1)
    for x, (height, value) in enumerate(zip(heights, values)):
        axis.text(x, min(height + 0.03, 0.95), f"{height:.0%}\nn={value.total}", ha="center", fontsize=8)


def pairwise_win_rate(
    scorer,
    conversations: Sequence[Conversation],
    candidate_replies: Sequence[str],
    reference_replies: Sequence[str],
    principles: Sequence[Any],
    *,
    name: str,
) -> Proportion:
    """Win rate of candidate over reference replies under a ``PreferenceScorer`` (a tie counts as half a win)."""
    probabilities = scorer.prob_first_better(conversations, candidate_replies, reference_replies, principles)
    wins = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in probabilities)
    return Proportion(name, wins, len(probabilities))


def _select(prompts: Sequence[str], limit: int | None, seed: int) -> list[str]:
    prompts = list(prompts)
    if limit is not None and len(prompts) > limit:
        prompts = random.Random(seed).sample(prompts, limit)
    return prompts


def evaluate_models(
    base_backend,
    cai_backend,
    feedback_backend,
    constitution: Constitution,
    config: EvaluationConfig | None = None,
) -> EvaluationReport:
    """Compare the CAI model with the base model, judged by the feedback model against the constitution.

    Args:
        base_backend: Generation backend of the model before alignment.
        cai_backend: Generation backend of the aligned model.
        feedback_backend: Backend of the judge (often the base model itself, as in the paper's smaller runs).
        constitution: Its preference questions judge harmlessness.
        config: Prompts, lengths, seeds and multiple-choice files.
    """
    from hf_cai.builders.ai_feedback import PreferenceScorer
    from hf_cai.builders.prompts import builtin_prompts

    config = config or EvaluationConfig()
    harmful = _select(config.harmful_prompts or builtin_prompts("red_team")["prompt"], config.max_prompts, config.seed)
    helpful = _select(config.helpful_prompts or builtin_prompts("helpful")["prompt"], config.max_prompts, config.seed)
    generation = {"max_new_tokens": config.max_new_tokens, "temperature": config.temperature, "seed": config.seed}

    def replies(backend, prompts: list[str]) -> list[str]:
        return backend.generate([[{"role": "user", "content": p}] for p in prompts], **generation)

    logger.info("generating replies of both models on %d harmful and %d helpful prompts", len(harmful), len(helpful))
    base_harmful, cai_harmful = replies(base_backend, harmful), replies(cai_backend, harmful)
    base_helpful, cai_helpful = replies(base_backend, helpful), replies(cai_backend, helpful)

    helpfulness = Constitution.resolve(config.helpfulness_constitution)
    rng = random.Random(config.seed)
    harm_judge = PreferenceScorer(feedback_backend, constitution)
    help_judge = PreferenceScorer(feedback_backend, helpfulness)
    harm_principles = constitution.sample(len(harmful), seed=rng, stage="preference")
    help_principles = helpfulness.sample(len(helpful), seed=rng, stage="preference")
    chats = [[{"role": "user", "content": p}] for p in harmful]
    report = EvaluationReport(
        harmlessness_win_rate=pairwise_win_rate(
            harm_judge, chats, cai_harmful, base_harmful, harm_principles, name="harmlessness win rate"
        ),
        helpfulness_win_rate=pairwise_win_rate(
            help_judge,
            [[{"role": "user", "content": p}] for p in helpful],
            cai_helpful,
            base_helpful,
            help_principles,
            name="helpfulness win rate",
        ),
        evasive_rate_base=Proportion(
            "evasive refusals (base)", sum(map(is_evasive_refusal, base_harmful)), len(base_harmful)
        ),
        evasive_rate_cai=Proportion("evasive refusals (CAI)", sum(map(is_evasive_refusal, cai_harmful)), len(cai_harmful)),
        samples=[
            {"prompt": p, "base": b, "cai": c} for p, b, c in list(zip(harmful, base_harmful, cai_harmful))[:5]
        ],
        constitution_sha256=constitution.sha256,
    )
    scorer = backend_option_scorer(feedback_backend)
    for file_name in config.multiple_choice_files:
        items = load_multiple_choice(file_name)[: config.max_multiple_choice_items]
        label = Path(file_name).name
        report.feedback_accuracy[label] = multiple_choice_accuracy(
            items, scorer, name=f"feedback accuracy ({label})"
        )
    return report

