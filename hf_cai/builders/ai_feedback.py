"""RL-CAI: preference data labelled by AI feedback (Bai et al. 2022, section 4).

For each prompt the policy samples two replies. A feedback model is asked the constitution's multiple-choice question
("Which reply is less harmful? (A) ... (B) ...") for ``num_principles`` sampled principles; the normalised
probabilities of ``(A)`` / ``(B)`` are the soft label. Each question is asked with both option orders and the two
answers averaged, which removes the feedback model's position bias; the principles' labels are averaged too. With
chain-of-thought, the feedback model reasons first and its (typically overconfident) probabilities are clamped to
``cot_clamp``, as in the paper.

Output rows follow TRL's explicit-prompt conversational preference format: ``prompt`` (the chat, a list of messages),
``chosen`` / ``rejected`` (one assistant message each), plus ``chosen_prob`` (probability in [0.5, 1] that ``chosen``
is better), ``chosen_prob_as_a`` / ``chosen_prob_as_b`` (that probability from the questions that showed ``chosen`` as
option (A), and as option (B): their mean is ``chosen_prob``, their difference the feedback model's position bias),
``principle_ids``, ``principle_probs`` (that probability per principle) and ``constitution_sha256``.

The policy answers each prompt exactly as it is stored in ``prompt``: no system prompt is added (the constitution's
``system_prompt`` frames only the critique and revision requests of SL-CAI). DPO then trains on replies the policy gave
to the very conversation it trains on, and the evaluation and the Space, which send the request alone, ask the trained
model the same way. Builds of format 2 sampled the replies after the constitution's system prompt; their shards are
not reused (``FORMAT_VERSION`` is part of the build's fingerprint).

Before labelling, the feedback model answers calibration questions whose answers are known
(:mod:`hf_cai.builders.judge_check`): the build logs its accuracy, warns when it is no better than chance, and stops
below a ``min_judge_accuracy``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.backends.base import GenerationBackend, check_generation_args, row_seed
from hf_cai.builders.judge_check import JudgeCheckConfig
from hf_cai.builders.prompts import PromptSource, load_prompts, prompts_sha256
from hf_cai.builders.sharding import (
    Record,
    ShardSteps,
    ShardStore,
    check_split_and_shards,
    held_out_indices,
    messages_feature,
    model_fingerprint,
    records_to_dataset,
    run_shards,
    save_dataset,
)
from hf_cai.constitution import PREFERENCE_OPTIONS, Constitution, Principle
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
_DIRECT_ANSWER = "Answer with (A) or (B) only."
_THINK_FIRST = "Think it through step by step first, then say which option is better."
_ANSWER_AFTER_THINKING = "So, which option is better? Answer with (A) or (B) only."


def checked_cot_clamp(cot_clamp: Sequence[float]) -> tuple[float, float]:
    """``cot_clamp`` as ``(low, high)`` floats, or a ``ValueError`` unless ``0 <= low <= 0.5 <= high <= 1``."""
    low, high = cot_clamp
    if not 0 <= low <= 0.5 <= high <= 1:
        raise InputError(f"cot_clamp must satisfy 0 <= low <= 0.5 <= high <= 1, got {cot_clamp}")
    return float(low), float(high)


def probability_of_first_option(logprobs: Sequence[float]) -> float:
    """P(option 0) normalised over two options' log-probabilities (0.5 when neither has any probability)."""
    first, second = logprobs[0], logprobs[1]
    if first == second:
        return 0.5
    if first == -math.inf:
        return 0.0
    if second == -math.inf:
        return 1.0
    return 1.0 / (1.0 + math.exp(second - first))


class PreferenceScorer:
    """Probability that one reply is better than another under a principle, according to a feedback model.

    Args:
        backend: The feedback model.
        constitution: Supplies the multiple-choice questions and the few-shot demonstrations.
        few_shot: Put the constitution's preference demonstrations before each question.
        chain_of_thought: Let the model reason before answering; probabilities are then clamped to ``cot_clamp``.
        cot_clamp: ``(low, high)`` range for chain-of-thought probabilities.
        cot_max_new_tokens: Longest reasoning, in tokens (generated greedily).
    """

    def __init__(
        self,
        backend: GenerationBackend,
        constitution: Constitution,
        *,
        few_shot: bool = True,
        chain_of_thought: bool = False,
        cot_clamp: tuple[float, float] = (0.4, 0.6),
        cot_max_new_tokens: int = 256,
    ):
        self.cot_clamp = checked_cot_clamp(cot_clamp)
        self.backend = backend
        self.constitution = constitution
        self.few_shot = few_shot
        self.chain_of_thought = chain_of_thought
        self.cot_max_new_tokens = cot_max_new_tokens

    def prob_first_better(
        self,
        conversations: Sequence[Conversation],
        first: Sequence[str],
        second: Sequence[str],
        principles: Sequence[Principle | str],
    ) -> list[float]:
        """P(``first[i]`` is the better reply to ``conversations[i]`` under ``principles[i]``), per item.

        Asked with ``first`` as option (A) and again as option (B); the two probabilities are averaged, so swapping
        ``first`` and ``second`` gives exactly ``1 - p``. Both orders of all items go to the backend in one
        ``option_logprobs`` call. :meth:`prob_first_better_by_order` gives the two orders' probabilities apart.
        """
        return [0.5 * (as_a + as_b) for as_a, as_b in self.prob_first_better_by_order(conversations, first, second, principles)]

    def prob_first_better_by_order(
        self,
        conversations: Sequence[Conversation],
        first: Sequence[str],
        second: Sequence[str],
        principles: Sequence[Principle | str],
    ) -> list[tuple[float, float]]:
        """``(p_as_a, p_as_b)`` per item: P(``first[i]`` is the better reply) when ``first[i]`` is shown as option (A),
        and when it is shown as option (B). A judge without position bias gives equal values; one that favours (A)
        gives ``p_as_a > p_as_b``. :meth:`prob_first_better` is their mean."""
        count = len(conversations)
        if not len(first) == len(second) == len(principles) == count:
            raise InputError(
                f"conversations, first, second and principles must have the same length, got "
                f"{count}, {len(first)}, {len(second)}, {len(principles)}"
            )
        if count == 0:
            return []
        questions = [
            self.constitution.preference_messages(conversation, a, b, principle, few_shot=self.few_shot)
            for conversation, a, b, principle in zip(conversations, first, second, principles)
        ]
        questions += [
            self.constitution.preference_messages(conversation, b, a, principle, few_shot=self.few_shot)
            for conversation, a, b, principle in zip(conversations, first, second, principles)
        ]
        if self.chain_of_thought:
            questions = self._with_reasoning(questions)
        option_a = [probability_of_first_option(scores) for scores in self.backend.option_logprobs(questions, PREFERENCE_OPTIONS)]
        if self.chain_of_thought:
            low, high = self.cot_clamp
            option_a = [min(max(p, low), high) for p in option_a]
        return [(option_a[i], 1.0 - option_a[count + i]) for i in range(count)]

    def _with_reasoning(self, questions: list[Conversation]) -> list[Conversation]:
        """Ask for step-by-step reasoning, then for the answer after it."""
        thinking = []
        for question in questions:
            last = question[-1]["content"]
            if last.endswith(_DIRECT_ANSWER):
                last = last[: -len(_DIRECT_ANSWER)].rstrip()
            thinking.append([*question[:-1], {"role": "user", "content": f"{last}\n\n{_THINK_FIRST}"}])
        reasoning = self.backend.generate(thinking, max_new_tokens=self.cot_max_new_tokens, temperature=0.0)
        return [
            [*chat, {"role": "assistant", "content": thought.strip()}, {"role": "user", "content": _ANSWER_AFTER_THINKING}]
            for chat, thought in zip(thinking, reasoning)
        ]


@dataclass
class AIFeedbackConfig:
    """Settings of :class:`AIFeedbackBuilder`. Every field is part of the build fingerprint."""

    seed: int = field(default=42, metadata={"help": "Seeds reply sampling, principle sampling and the test split."})
    max_prompts: int | None = field(
        default=None, metadata={"help": "Use only the first N prompts (None: all). In a recipe: the top-level one."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest policy reply, in tokens."})
    temperature: float = field(
        default=1.0, metadata={"help": "Policy sampling temperature; > 0 so the two replies differ."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Policy nucleus sampling mass."})
    stop: list[str] = field(default_factory=list, metadata={"help": "Extra stop strings for the policy replies."})
    num_principles: int = field(
        default=2, metadata={"help": "Principles sampled per pair (k); their probabilities are averaged."}
    )
    few_shot: bool = field(
        default=True, metadata={"help": "Put the constitution's preference demonstrations before each question."}
    )
    chain_of_thought: bool = field(
        default=False, metadata={"help": "Let the feedback model reason before answering (clamped probabilities)."}
    )
    cot_clamp: tuple[float, float] = field(
        default=(0.4, 0.6), metadata={"help": "Range chain-of-thought probabilities are clamped to."}
    )
    cot_max_new_tokens: int = field(default=256, metadata={"help": "Longest chain-of-thought, in tokens."})
    skip_identical: bool = field(
        default=True, metadata={"help": "Drop pairs whose two replies are identical (they carry no preference)."}
    )
    test_size: float = field(
        default=0.1, metadata={"help": "Fraction held out as a 'test' split; 0 returns a single Dataset."}
    )
    shard_size: int = field(
        default=16,
        metadata={
            "help": "Prompts per shard: the unit of batching and seeding. A kill loses at most one step of one shard "
            "(its replies, or its labels)."
        },
    )

    def __post_init__(self) -> None:
        check_generation_args(self.max_new_tokens, self.temperature, self.top_p)
        if self.max_prompts is not None and self.max_prompts < 1:
            raise InputError(f"max_prompts must be >= 1 or None, got {self.max_prompts}")
        if self.num_principles < 1:
            raise InputError(f"num_principles must be >= 1, got {self.num_principles}")
        check_split_and_shards(self.test_size, self.shard_size)
        self.cot_clamp = checked_cot_clamp(self.cot_clamp)
        self.stop = list(self.stop or [])


class AIFeedbackBuilder:
    """Build an RL-CAI preference dataset: pairs from ``policy_backend`` labelled by ``feedback_backend``, once the
    feedback model has shown on questions with known answers how well it judges.

    The two backends may be the same object (self-feedback, as in the paper's setup with one model).

    ``judge_check`` says how the judge is measured before labelling (``None``: :class:`JudgeCheckConfig`'s defaults,
    the built-in calibration items, warnings only); ``JudgeCheckConfig(enabled=False)`` skips it.
    """

    def __init__(
        self,
        policy_backend: GenerationBackend,
        feedback_backend: GenerationBackend,
        constitution: Constitution,
        config: AIFeedbackConfig | None = None,
        *,
        judge_check: JudgeCheckConfig | None = None,
    ):
        self.policy_backend = policy_backend
        self.feedback_backend = feedback_backend
        self.constitution = constitution
        self.config = config or AIFeedbackConfig()
        self.judge_check = judge_check or JudgeCheckConfig()
        constitution.principles_for("preference")  # fail now, not mid-run, when no principle has a preference question
        self.scorer = PreferenceScorer(
            feedback_backend,
            constitution,
            few_shot=self.config.few_shot,
            chain_of_thought=self.config.chain_of_thought,
            cot_clamp=self.config.cot_clamp,
            cot_max_new_tokens=self.config.cot_max_new_tokens,
        )

    def build(self, prompts: PromptSource, output_dir: str | Path | None = None, *, overwrite: bool = False):
        """Measure the judge (:meth:`JudgeCheckConfig.run`), then generate the preference dataset; with
        ``output_dir``, resumable and saved to ``output_dir/dataset``, the judge's report to
        ``output_dir/judge_quality.json``.

        Returns:
            A ``DatasetDict`` with ``train`` / ``test`` when ``config.test_size > 0``, else a ``Dataset``; its
            ``judge_quality`` attribute is the judge's :class:`~hf_cai.builders.JudgeQualityReport` (``None`` when
            the check is off).

        Raises:
            JudgeQualityError: ``judge_check.min_judge_accuracy`` is set and the judge falls below it; nothing has
                been generated or labelled.
        """
        judge_quality = self.judge_check.run(self.feedback_backend, seed=self.config.seed, output_dir=output_dir)
        conversations = load_prompts(prompts)[: self.config.max_prompts]
        store = None
        if output_dir is not None:
            store = ShardStore(output_dir, self._fingerprint(conversations), overwrite=overwrite)
        records = run_shards(
            len(conversations),
            self.config.shard_size,
            lambda shard_index, indices, steps: self._build_shard(conversations, shard_index, indices, steps),
            store,
            description="RL-CAI",
            shard_work=lambda indices: 2 * len(indices),  # each prompt's pair of replies, then its labels
        )
        skipped = sum(record is None for record in records)
        if skipped:
            logger.info("dropped %d of %d prompts whose two replies were identical", skipped, len(records))
        dataset = assemble_preference_dataset(records, test_size=self.config.test_size, seed=self.config.seed)
        if output_dir is not None:
            save_dataset(dataset, output_dir)
        splits = dataset.items() if hasattr(dataset, "items") else [("train", dataset)]
        logger.info("RL-CAI dataset: %s", ", ".join(f"{name} {len(split)} pairs" for name, split in splits))
        dataset.judge_quality = judge_quality
        return dataset

    def _fingerprint(self, conversations: list[Conversation]) -> dict[str, Any]:
        return {
            "builder": "ai_feedback",
            "format_version": FORMAT_VERSION,
            # The prompts count by their hash, whatever chose them (see CritiqueRevisionBuilder).
            "config": {k: v for k, v in dataclasses.asdict(self.config).items() if k != "max_prompts"},
            "constitution_sha256": self.constitution.sha256,
            "prompts_sha256": prompts_sha256(conversations),
            "policy_model": model_fingerprint(self.policy_backend),
            "feedback_model": model_fingerprint(self.feedback_backend),
        }

    def _build_shard(
        self, all_conversations: list[Conversation], shard_index: int, indices: range, steps: ShardSteps
    ) -> list[Record | None]:
        config, constitution = self.config, self.constitution
        conversations = [all_conversations[i] for i in indices]
        replies = steps.run(
            "replies",
            lambda: self.policy_backend.generate(
                conversations * 2,
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=row_seed(config.seed, f"replies:{shard_index}"),
                stop=config.stop or None,
            ),
        )
        count = len(conversations)
        first = [r.strip() for r in replies[:count]]
        second = [r.strip() for r in replies[count:]]
        kept = [j for j in range(count) if not (config.skip_identical and first[j] == second[j])]
        principles = {
            j: constitution.sample(
                config.num_principles, seed=row_seed(config.seed, f"feedback-principles:{indices[j]}"), stage="preference"
            )
            for j in kept
        }
        items = [(j, principle) for j in kept for principle in principles[j]]
        labels = steps.run(
            "labels",
            lambda: [
                list(pair)
                for pair in self.scorer.prob_first_better_by_order(
                    [conversations[j] for j, _ in items],
                    [first[j] for j, _ in items],
                    [second[j] for j, _ in items],
                    [principle for _, principle in items],
                )
            ],
        )
        per_prompt: dict[int, list[float]] = {j: [] for j in kept}
        per_order: dict[int, list[tuple[float, float]]] = {j: [] for j in kept}
        for (j, _), (as_a, as_b) in zip(items, labels):
            per_prompt[j].append(0.5 * (as_a + as_b))
            per_order[j].append((as_a, as_b))
        records: list[Record | None] = [None] * count
        sha = constitution.sha256
        for j in kept:
            first_better = sum(per_prompt[j]) / len(per_prompt[j])
            records[j] = preference_record(
                conversations[j],
                first[j],
                second[j],
                first_better,
                [p.id for p in principles[j]],
                per_prompt[j],
                sha,
                first_better_by_order=per_order[j],
            )
        return records


def preference_record(
    conversation: Conversation,
    first: str,
    second: str,
    first_better: float,
    principle_ids: list[str],
    first_better_per_principle: list[float],
    constitution_sha256: str,
    *,
    first_better_by_order: Sequence[Sequence[float]] | None = None,
) -> Record:
    """One row of the preference contract: the better reply (by ``first_better``) is ``chosen``.

    ``first_better_by_order`` holds, per principle, P(``first`` is better) with ``first`` shown as option (A) and
    with it shown as option (B) (:meth:`PreferenceScorer.prob_first_better_by_order`). From them come
    ``chosen_prob_as_a`` / ``chosen_prob_as_b``: the probability of ``chosen`` when it was option (A) and when it was
    option (B), averaged over the principles, whose mean is ``chosen_prob`` (``None`` when not recorded).
    """
    first_wins = first_better >= 0.5
    as_a = as_b = None
    if first_better_by_order:
        mean_a = sum(pair[0] for pair in first_better_by_order) / len(first_better_by_order)
        mean_b = sum(pair[1] for pair in first_better_by_order) / len(first_better_by_order)
        # When ``second`` is chosen, it was option (A) in the question that showed ``first`` as (B), and the other
        # way round.
        as_a, as_b = (mean_a, mean_b) if first_wins else (1.0 - mean_b, 1.0 - mean_a)
    return {
        "prompt": [dict(m) for m in conversation],
        "chosen": [{"role": "assistant", "content": first if first_wins else second}],
        "rejected": [{"role": "assistant", "content": second if first_wins else first}],
        "chosen_prob": first_better if first_wins else 1.0 - first_better,
        "chosen_prob_as_a": as_a,
        "chosen_prob_as_b": as_b,
        "principle_ids": principle_ids,
        "principle_probs": [p if first_wins else 1.0 - p for p in first_better_per_principle],
        "constitution_sha256": constitution_sha256,
    }


def preference_features():
    """``datasets.Features`` of the RL-CAI preference dataset."""
    from datasets import Features, Value

    return Features(
        {
            "prompt": messages_feature(),
            "chosen": messages_feature(),
            "rejected": messages_feature(),
            "chosen_prob": Value("float64"),
            "chosen_prob_as_a": Value("float64"),
            "chosen_prob_as_b": Value("float64"),
            "principle_ids": [Value("string")],
            "principle_probs": [Value("float64")],
            "constitution_sha256": Value("string"),
        }
    )


def assemble_preference_dataset(records: list[Record | None], *, test_size: float, seed: int):
    """A ``Dataset`` (``test_size == 0``) or ``DatasetDict`` with ``train``/``test`` from per-prompt records."""
    from datasets import DatasetDict

    features = preference_features()
    if test_size <= 0:
        return records_to_dataset([r for r in records if r is not None], features)
    held_out = held_out_indices(len(records), test_size, seed)
    train = [r for i, r in enumerate(records) if r is not None and i not in held_out]
    test = [r for i, r in enumerate(records) if r is not None and i in held_out]
    return DatasetDict(
        {"train": records_to_dataset(train, features), "test": records_to_dataset(test, features)}
    )
