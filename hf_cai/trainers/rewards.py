"""``ConstitutionalReward``: a TRL reward function that scores completions against a constitution.

Online trainers (TRL's ``GRPOTrainer``, ``RLOOTrainer``, ``OnlineDPOTrainer``) call a reward function with the batch's
prompts and completions, where each prompt appears once per generated completion. ``ConstitutionalReward`` groups
the completions of the same prompt and compares them pairwise (round robin): a completion's reward is its average
probability of being the better reply against the other completions of its group, in [0, 1]. A completion alone in
its group (the trainer generates one per prompt) gets 0.5.

Under several processes TRL's ``GRPOTrainer`` may split one prompt's group across processes (its sampler deals the
``num_generations`` copies of a prompt out in order, so a process's slice can end mid-group) and calls the reward
function on each process with its own slice. ``ConstitutionalReward`` therefore gathers every process's completions
first, so each group is ranked whole, shares the comparisons out among the processes, and returns each process the
rewards of its own slice.

The pairwise probability comes from one of two judges:

* a feedback model (any :class:`~hf_cai.backends.GenerationBackend`) asked the constitution's multiple-choice
  questions, as the RL-CAI builder does (:class:`hf_cai.builders.ai_feedback.PreferenceScorer`: both option orders,
  averaged; ``num_principles`` sampled principles per comparison, averaged);
* a preference model trained with :class:`~hf_cai.trainers.CAIRewardTrainer`: P(a better than b) =
  sigmoid(r(a) - r(b)), the Bradley-Terry model it was trained under, with one forward pass per completion.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from hf_cai.constitution import Constitution
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError

logger = logging.getLogger(__name__)

Pair = tuple[int, int]


class PairwiseJudge(Protocol):
    """Compares replies to the same conversation."""

    def compare(
        self, conversations: Sequence[Conversation], replies: Sequence[str], pairs: Sequence[Pair]
    ) -> list[float]:
        """For each pair ``(i, j)``: the probability that ``replies[i]`` is a better reply than ``replies[j]`` to
        ``conversations[i]`` (which equals ``conversations[j]``)."""
        ...


class FeedbackModelJudge:
    """Pairwise preferences from a feedback model answering the constitution's multiple-choice questions.

    Args:
        backend: The feedback model.
        constitution: Supplies the preference questions (principles with a ``preference`` text).
        num_principles: Principles sampled (by weight, with replacement) per comparison; their probabilities are
            averaged.
        seed: Seed of the principle sampling.
        few_shot: Put the constitution's preference demonstrations before each question.
        chain_of_thought: Let the feedback model reason before answering (its probabilities are then clamped).
    """

    def __init__(
        self,
        backend: Any,
        constitution: Constitution,
        *,
        num_principles: int = 1,
        seed: int = 0,
        few_shot: bool = True,
        chain_of_thought: bool = False,
    ):
        from hf_cai.builders.ai_feedback import PreferenceScorer

        if num_principles < 1:
            raise InputError(f"num_principles must be >= 1, got {num_principles}")
        constitution.principles_for("preference")  # fails early when the constitution has no preference questions
        self.scorer = PreferenceScorer(backend, constitution, few_shot=few_shot, chain_of_thought=chain_of_thought)
        self.constitution = constitution
        self.num_principles = num_principles
        self._rng = random.Random(seed)

    def compare(
        self, conversations: Sequence[Conversation], replies: Sequence[str], pairs: Sequence[Pair]
    ) -> list[float]:
        questions = [
            (i, j, principle)
            for i, j in pairs
            for principle in self.constitution.sample(self.num_principles, seed=self._rng, stage="preference")
        ]
        probabilities = self.scorer.prob_first_better(
            [conversations[i] for i, _, _ in questions],
            [replies[i] for i, _, _ in questions],
            [replies[j] for _, j, _ in questions],
            [principle for _, _, principle in questions],
        )
        per_pair = [
            probabilities[k : k + self.num_principles] for k in range(0, len(probabilities), self.num_principles)
        ]
        return [sum(values) / len(values) for values in per_pair]


class RewardModelJudge:
    """Pairwise preferences from a one-score preference model: P(i better than j) = sigmoid(r_i - r_j).

    Args:
        model: A sequence-classification model with one output (``num_labels=1``), e.g. a
            ``CAIRewardTrainer`` output loaded with :meth:`load`.
        tokenizer: Its tokenizer; conversations are rendered with its chat template.
        batch_size: Completions scored per forward pass.
        max_length: Longest scored sequence in tokens. A longer one loses its oldest prompt text (a leading BOS
            token is kept), so the whole reply is scored with as much of the recent conversation as fits. A reply
            that alone is longer is scored on its first ``max_length`` tokens without the prompt, and a warning
            says so once. ``None`` scores everything.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8, max_length: int | None = 1024):
        if max_length is not None and max_length < 1:
            raise InputError(f"max_length must be a positive number of tokens (or None), got {max_length}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self._warned_long_reply = False

    @classmethod
    def load(
        cls, path: str | Path, *, load_in_4bit: bool | None = None, trust_remote_code: bool = False, **kwargs: Any
    ) -> RewardModelJudge:
        """Load a preference model folder: full weights, or a PEFT adapter (its base is read from the adapter).

        ``load_in_4bit=None`` and an unset ``max_length`` follow the training record (``cai_training.json``) of a
        ``CAIRewardTrainer`` output: NF4 exactly when its base was quantised in training, and the ``max_length`` it
        was trained with; without a record, 16-bit weights and 1024 tokens.
        """
        from hf_cai.modeling import (
            ModelLoadError,
            adapter_base_model,
            is_peft_adapter,
            load_sequence_classifier,
            load_tokenizer,
            missing_base_model_error,
        )
        from hf_cai.trainers.qlora import process_device_map

        trained = _training_record(path)
        if load_in_4bit is None:
            load_in_4bit = trained.get("quantization") is not None
        trained_length = (trained.get("hyperparameters") or {}).get("max_length")
        if trained_length and "max_length" not in kwargs:
            kwargs["max_length"] = trained_length
        adapter = is_peft_adapter(path)
        base = str(path)
        if adapter:
            base = adapter_base_model(path)
        try:
            model = load_sequence_classifier(
                base, load_in_4bit=load_in_4bit, device_map=process_device_map(), trust_remote_code=trust_remote_code
            )
        except ModelLoadError as error:
            if not adapter:
                raise
            raise missing_base_model_error(path, base, error) from None
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path))
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, require_chat_template=False)
        model.config.pad_token_id = tokenizer.pad_token_id
        return cls(model, tokenizer, **kwargs)

    def scores(self, conversations: Sequence[Conversation], replies: Sequence[str]) -> list[float]:
        """The model's score of each reply to its conversation (fitted to ``max_length`` as the class says)."""
        import torch

        sequences = [
            self.encode(conversation, reply) for conversation, reply in zip(conversations, replies, strict=True)
        ]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(sequences), self.batch_size):
            # Padded on the right, as TRL pads when it trains and applies reward models: every sequence starts at
            # position 0, which matters to models with absolute position embeddings.
            batch = self.tokenizer.pad(
                {"input_ids": sequences[start : start + self.batch_size]}, padding_side="right", return_tensors="pt"
            ).to(device)
            with torch.inference_mode():
                scores.extend(self.model(**batch).logits[:, 0].float().tolist())
        return scores

    def encode(self, conversation: Conversation, reply: str) -> list[int]:
        """The token ids scored for one reply: the rendered conversation and reply, cut to ``max_length``."""
        text = self._render(conversation, reply)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.max_length is None or len(ids) <= self.max_length:
            return ids
        reply_start = self._reply_start(conversation, text, ids)
        bos = self.tokenizer.bos_token_id
        head = ids[:1] if bos is not None and reply_start > 0 and ids[0] == bos else []
        room = self.max_length - len(head)
        if len(ids) - reply_start <= room:
            return head + ids[len(ids) - room :]
        if not self._warned_long_reply:
            logger.warning(
                "a reply of %d tokens is longer than the preference model's max_length=%d: it is scored on its first "
                "%d tokens without the prompt. Raise max_length, or generate shorter completions "
                "(max_completion_length).",
                len(ids) - reply_start,
                self.max_length,
                room,
            )
            self._warned_long_reply = True
        return head + ids[reply_start : reply_start + room]

    def _reply_start(self, conversation: Conversation, text: str, ids: list[int]) -> int:
        """Index in ``ids`` (the tokens of ``text``) of the first token that belongs to the reply."""
        # Rendering the same conversation with an empty reply marks where the reply's text begins, whatever the
        # template puts around it. Token boundaries are taken from the joint tokenization, so a token that merges the
        # end of the prompt with the start of the reply counts as reply.
        prompt_text = os.path.commonprefix([text, self._render(conversation, "")])
        prompt_ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        return len(os.path.commonprefix([ids, prompt_ids]))

    def compare(
        self, conversations: Sequence[Conversation], replies: Sequence[str], pairs: Sequence[Pair]
    ) -> list[float]:
        import math

        involved = sorted({index for pair in pairs for index in pair})
        scored = dict(
            zip(
                involved, self.scores([conversations[i] for i in involved], [replies[i] for i in involved]), strict=True
            )
        )
        return [1.0 / (1.0 + math.exp(scored[j] - scored[i])) for i, j in pairs]

    def _render(self, conversation: Conversation, reply: str) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                [*conversation, {"role": "assistant", "content": reply}], tokenize=False
            )
        return "".join(message["content"] for message in conversation) + reply


def _training_record(path: str | Path) -> dict[str, Any]:
    """The ``cai_training.json`` of a local trainer output folder; empty for a Hub id or a folder without one."""
    from hf_cai.artifact_files import TRAINING_RECORD

    record = Path(path) / TRAINING_RECORD
    return json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}


class ConstitutionalReward:
    """A TRL reward function: each completion's average win probability against the other completions of its prompt.

    Build it with :meth:`from_feedback_model` (a feedback model + a constitution) or :meth:`from_reward_model` (a
    trained preference model), then pass it to the trainer::

        reward = ConstitutionalReward.from_feedback_model(TransformersBackend("Qwen/Qwen2.5-7B-Instruct"), "harmless")
        trainer = GRPOTrainer(model=..., reward_funcs=reward, args=GRPOConfig(num_generations=4, ...), ...)

    Prompts and completions may be conversational (lists of messages) or plain text. TRL logs the rewards under
    ``rewards/<name>/mean``.

    Args:
        judge: Gives the pairwise probabilities (:class:`FeedbackModelJudge`, :class:`RewardModelJudge`, or any
            object with the :class:`PairwiseJudge` method).
        name: The function's ``__name__``, used by TRL in its logs.
    """

    def __init__(self, judge: PairwiseJudge, *, name: str = "constitutional_reward"):
        self.judge = judge
        self.__name__ = name

    @classmethod
    def from_feedback_model(
        cls,
        backend: Any,
        constitution: Constitution | str | Path,
        *,
        num_principles: int = 1,
        seed: int = 0,
        few_shot: bool = True,
        chain_of_thought: bool = False,
        name: str = "constitutional_reward",
    ) -> ConstitutionalReward:
        """Judge with a feedback model (a :class:`~hf_cai.backends.GenerationBackend`) and a constitution (object,
        built-in name or file); see :class:`FeedbackModelJudge` for the options."""
        judge = FeedbackModelJudge(
            backend,
            Constitution.resolve(constitution),
            num_principles=num_principles,
            seed=seed,
            few_shot=few_shot,
            chain_of_thought=chain_of_thought,
        )
        return cls(judge, name=name)

    @classmethod
    def from_reward_model(
        cls, path: str | Path, *, load_in_4bit: bool | None = None, name: str = "constitutional_reward", **kwargs: Any
    ) -> ConstitutionalReward:
        """Judge with a preference model folder (a ``CAIRewardTrainer`` output: adapter or full weights).

        Args:
            path: The folder or Hub id; an adapter's base model is read from its ``adapter_config.json``.
            load_in_4bit: Load the (base) model NF4-quantised, as a QLoRA profile loads it for training, so the
                judge takes a quarter of the memory of 16-bit weights; the score head stays in full precision.
                ``None``: as the model was trained, by its ``cai_training.json`` (16-bit without one).
            name: The function's ``__name__`` in the trainer's logs.
            **kwargs: ``trust_remote_code``, ``batch_size`` and ``max_length`` of :class:`RewardModelJudge`.
        """
        return cls(RewardModelJudge.load(path, load_in_4bit=load_in_4bit, **kwargs), name=name)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """One reward in [0, 1] per completion (extra keyword arguments from the trainer are ignored).

        Under ``torch.distributed`` (several processes) every process must call it together, as TRL's trainers do:
        the groups are gathered from all processes before they are ranked.
        """
        if len(prompts) != len(completions):
            raise InputError(
                f"got {len(prompts)} prompts for {len(completions)} completions; expected one per completion"
            )
        local = [(as_conversation(p), reply_text(c)) for p, c in zip(prompts, completions, strict=True)]
        processes = _ProcessGroup.current()
        everyone, offset = processes.gather(local)
        conversations = [conversation for conversation, _ in everyone]
        replies = [reply for _, reply in everyone]
        pairs = round_robin_pairs(group_by_prompt(conversations))
        probabilities = processes.share_out(pairs, lambda share: self.judge.compare(conversations, replies, share))
        wins: dict[int, list[float]] = defaultdict(list)
        for (i, j), probability in zip(pairs, probabilities, strict=True):
            wins[i].append(probability)
            wins[j].append(1.0 - probability)
        return [sum(wins[i]) / len(wins[i]) if wins[i] else 0.5 for i in range(offset, offset + len(local))]


class _ProcessGroup:
    """The processes of a ``torch.distributed`` run as the reward function needs them (one process without one).

    Args:
        rank: This process's index.
        world_size: Number of processes.
    """

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank = rank
        self.world_size = world_size

    @classmethod
    def current(cls) -> _ProcessGroup:
        """The default process group of ``torch.distributed`` when one is initialised, else this process alone."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def gather(self, items: list) -> tuple[list, int]:
        """Every process's ``items`` concatenated in rank order, and where this process's items start in it."""
        if self.world_size == 1:
            return list(items), 0
        parts = self._all_gather(items)
        return [item for part in parts for item in part], sum(len(part) for part in parts[: self.rank])

    def share_out(self, work: list, compute: Any) -> list:
        """``compute(work)`` with the work split into one contiguous share per process; every process gets all
        results. ``compute`` maps a list of items to one result per item."""
        if self.world_size == 1:
            return list(compute(work))
        bounds = [len(work) * rank // self.world_size for rank in range(self.world_size + 1)]
        share = work[bounds[self.rank] : bounds[self.rank + 1]]
        return [result for part in self._all_gather(list(compute(share))) for result in part]

    def _all_gather(self, obj: Any) -> list:
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, obj)
        return parts


def as_conversation(prompt: Any) -> Conversation:
    """A prompt as a chat: conversational prompts as they are, plain text as one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise TypeError(f"a prompt must be a string or a list of {{'role', 'content'}} messages, got {prompt!r:.80}")


def reply_text(completion: Any) -> str:
    """The text of a completion: plain text as it is, a conversational completion's assistant messages joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) and "content" in m for m in completion):
        return "\n".join(str(m["content"]) for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion must be a string or a list of messages, got {completion!r:.80}")


def group_by_prompt(conversations: Sequence[Conversation]) -> list[list[int]]:
    """Indices of identical prompts, grouped, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, conversation in enumerate(conversations):
        groups.setdefault(json.dumps(conversation, sort_keys=True), []).append(index)
    return list(groups.values())


def round_robin_pairs(groups: Sequence[Sequence[int]]) -> list[Pair]:
    """Every unordered pair of indices within each group."""
    return [(group[a], group[b]) for group in groups for a in range(len(group)) for b in range(a + 1, len(group))]
