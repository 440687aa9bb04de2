"""SL-CAI: critique → revision datasets (Bai et al. 2022, section 3).

For each prompt the model first answers the prompt as the row stores it (the constitution's system prompt frames only
the critique and revision requests; builds of format 2 put it before the first reply too); then, for ``rounds``
rounds, a principle is drawn from the constitution (with replacement, seeded per prompt), the model critiques its
latest reply under that principle and rewrites it. Each round's revision is the reply the next round critiques; the
last revision is the training target. Every step runs batched across all prompts of a shard (one ``generate`` call
for all of a shard's round-k critiques); each step is saved as it finishes and each shard when it is complete, so an
interrupted build resumes after its last finished step (see :mod:`hf_cai.builders.sharding`).

Output splits: ``train_sft`` / ``test_sft`` (every prompt) and ``train_prefs`` / ``test_prefs`` (revised prompts whose
final revision differs from the first reply). Every split has the same columns and trains unchanged with TRL:

* ``prompt``: the chat up to the user's last turn (list of messages); ``completion``: ``[final reply]``;
  ``messages``: ``prompt + completion`` — ``SFTTrainer`` trains on the completion given the prompt.
* ``chosen`` = ``[final revision]`` and ``rejected`` = ``[first reply]`` (assistant messages) — ``DPOTrainer``'s
  explicit-prompt conversational format.
* Provenance: ``initial_response``, ``revisions`` (``[{round, principle_id, critique, revision}]``), ``kind``
  (``"revised"``, or ``"helpful"`` for mixed-in helpfulness prompts, answered but not revised), ``constitution_sha256``.

TRL reads ``prompt`` as the start of a conversation, so it is a list of messages rather than the plain string of
``HuggingFaceH4/cai-conversation-harmless`` (a string prompt next to message lists fails in TRL's SFT and DPO
trainers); :func:`~hf_cai.builders.prompts.prompt_text` gives the request as text.

Every split also has a ``quality_flags`` column: the quality gates' verdict on each row
(:mod:`hf_cai.builders.quality_gates`, ``[]`` for a row that passed), which ``CAISFTTrainer`` reads to leave the
flagged rows out. The gates' counts ride on the result as its ``quality`` attribute and are saved as ``quality.json``
beside the dataset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.backends.base import (
    GenerationBackend,
    check_generation_args,
    describe_backend,
    generate_with_reasons,
    row_seed,
)
from hf_cai.builders.prompts import PromptSource, load_prompts, prompts_sha256
from hf_cai.builders.quality_gates import (
    QUALITY_FILE,
    QualityGateConfig,
    SLQualityReport,
    gate_sl_splits,
    with_quality_flags,
)
from hf_cai.builders.sharding import (
    Record,
    ShardSteps,
    ShardStore,
    atomic_write_text,
    check_split_and_shards,
    held_out_indices,
    messages_feature,
    model_fingerprint,
    records_to_dataset,
    run_shards,
    save_dataset,
)
from hf_cai.constitution import Constitution
from hf_cai.conversation import Conversation
from hf_cai.errors import InputError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
MAX_ROUNDS = 4

_META_PREFIX = re.compile(
    r"""^\s*
    (?:(?:sure|certainly|okay|ok|of\ course|absolutely)\b[\s,!.:-]*)?
    (?:
        here(?:'s|\ is|\ are)\b[^:\n]{0,60}?
            (?:response|reply|answer|version|revision|rewrite|critique)\b[^:\n]{0,40}:
      | (?:(?:my|the|a)\s+)?(?:revised|rewritten|new|updated|improved|edited|final)\s+
            (?:response|reply|answer|version)\s*:
      | (?:revision|critique|response|answer)\s*:
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_QUOTES = {'"': '"', "“": "”", "'": "'"}


def clean_response(text: str) -> str:
    """Strip what small models wrap around a reply: a leading "Sure, here is a revised response:" (and the like),
    surrounding whitespace and quotes enclosing the whole reply."""
    text = text.strip()
    previous = None
    while previous != text:
        previous = text
        text = _META_PREFIX.sub("", text, count=1).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


@dataclass
class CritiqueRevisionConfig:
    """Settings of :class:`CritiqueRevisionBuilder`. Every field is part of the build fingerprint."""

    rounds: int = field(default=2, metadata={"help": f"Critique→revision rounds per prompt (1–{MAX_ROUNDS})."})
    seed: int = field(default=42, metadata={"help": "Seeds principle sampling, generation and the test split."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest reply, critique or revision, in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (0: greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    few_shot: bool = field(
        default=True, metadata={"help": "Put the constitution's critique/revision demonstrations before each request."}
    )
    stop: list[str] = field(default_factory=list, metadata={"help": "Extra stop strings for every generation."})
    clean_responses: bool = field(
        default=True, metadata={"help": "Strip meta-prefixes such as 'Sure, here is a revised response:'."}
    )
    max_prompts: int | None = field(
        default=None,
        metadata={
            "help": "Use only the first N of the prompts given to build() (None: all): a quick, small run. It enters "
            "the fingerprint through the prompts it selects. In a recipe, set the top-level `max_prompts`."
        },
    )
    helpful_prompts: Any = field(
        default=None,
        metadata={
            "help": "Optional helpfulness prompts (any load_prompts source, e.g. 'builtin:helpful'), answered but not "
            "revised, mixed into the SFT splits so the model stays helpful."
        },
    )
    num_helpful_prompts: int | None = field(
        default=None, metadata={"help": "Use only the first N helpful prompts (None: all)."}
    )
    test_size: float = field(default=0.1, metadata={"help": "Fraction of prompts held out in the test splits."})
    shard_size: int = field(
        default=16,
        metadata={
            "help": "Prompts per shard: the unit of batching and seeding. A kill loses at most one step of one shard "
            "(e.g. its round-2 critiques), so keep it near the generation batch size."
        },
    )

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise InputError(f"rounds must be between 1 and {MAX_ROUNDS}, got {self.rounds}")
        check_generation_args(self.max_new_tokens, self.temperature, self.top_p)
        check_split_and_shards(self.test_size, self.shard_size)
        if self.max_prompts is not None and self.max_prompts < 1:
            raise InputError(f"max_prompts must be >= 1 or None, got {self.max_prompts}")
        if self.num_helpful_prompts is not None and self.num_helpful_prompts < 0:
            raise InputError(f"num_helpful_prompts must be >= 0, got {self.num_helpful_prompts}")
        self.stop = list(self.stop or [])


class CritiqueRevisionBuilder:
    """Build an SL-CAI dataset with ``backend`` under ``constitution``, its rows checked by the quality gates.

    Args:
        backend: The model that answers, critiques and revises.
        constitution: Its principles' critique and revision requests.
        config: Rounds, sizes, sampling and shards.
        quality: Thresholds of the quality gates run on the finished rows (:class:`QualityGateConfig`'s defaults
            when ``None``). They flag rows and warn; they never stop the build: ``CAISFTTrainer`` is what refuses to
            train on too few kept rows.

    >>> builder = CritiqueRevisionBuilder(TransformersBackend("Qwen/Qwen2.5-0.5B-Instruct"),  # doctest: +SKIP
    ...                                   Constitution.builtin("harmless"), CritiqueRevisionConfig(rounds=2))
    >>> dataset = builder.build("builtin:red_team", output_dir="runs/sl")  # doctest: +SKIP
    """

    def __init__(
        self,
        backend: GenerationBackend,
        constitution: Constitution,
        config: CritiqueRevisionConfig | None = None,
        *,
        quality: QualityGateConfig | None = None,
    ):
        self.backend = backend
        self.constitution = constitution
        self.config = config or CritiqueRevisionConfig()
        self.quality = quality or QualityGateConfig()
        constitution.principles_for("critique")  # fail now, not mid-run, when no principle has critique texts

    def build(self, prompts: PromptSource, output_dir: str | Path | None = None, *, overwrite: bool = False):
        """Generate the dataset; with ``output_dir``, resumable from its shards and saved to ``output_dir/dataset``.

        Args:
            prompts: Any source :func:`~hf_cai.builders.load_prompts` accepts (the first ``config.max_prompts`` of
                it when that is set).
            output_dir: Where shards, the fingerprint and the final ``DatasetDict`` go. ``None`` keeps everything
                in memory (no resume).
            overwrite: Discard shards of a different build found in ``output_dir`` instead of raising.

        Returns:
            A ``DatasetDict`` with splits ``train_sft``, ``test_sft``, ``train_prefs``, ``test_prefs``, each with a
            ``quality_flags`` column, and a ``quality`` attribute: the :class:`~hf_cai.builders.SLQualityReport` of
            the gates (also saved as ``output_dir/quality.json``). The gates' counts are logged, with a warning when
            fewer than ``min_kept_share`` of the rows pass.
        """
        config = self.config
        revised = load_prompts(prompts)[: config.max_prompts]
        helpful: list[Conversation] = []
        if config.helpful_prompts is not None:
            helpful = load_prompts(config.helpful_prompts)[: config.num_helpful_prompts]
        items = [(c, "revised") for c in revised] + [(c, "helpful") for c in helpful]
        store = None
        if output_dir is not None:
            store = ShardStore(output_dir, self._fingerprint(revised, helpful), overwrite=overwrite)
        records = run_shards(
            len(items),
            config.shard_size,
            lambda shard_index, indices, steps: self._build_shard(items, shard_index, indices, steps),
            store,
            description="SL-CAI",
            # Every prompt is answered; a revised one is then critiqued and revised in every round.
            shard_work=lambda indices: sum(1 + 2 * config.rounds * (items[i][1] == "revised") for i in indices),
        )
        dataset = assemble_sl_dataset(records, test_size=config.test_size, seed=config.seed)
        report = gate_sl_splits(dataset, self.constitution, self.quality)
        dataset = with_quality_flags(dataset, report)
        if output_dir is not None:
            # The gates' record first: a dataset on disk always has the record of its flags beside it.
            atomic_write_text(Path(output_dir) / QUALITY_FILE, json.dumps(report.to_dict(), indent=2) + "\n")
            save_dataset(dataset, output_dir)
        dataset.quality = report
        _log_summary(dataset)
        _log_quality(report, self.backend)
        return dataset

    def _fingerprint(self, revised: list[Conversation], helpful: list[Conversation]) -> dict[str, Any]:
        # The prompts enter by content (their hash), not as the source or the limit that chose them: a build of the
        # first 10 prompts is the same whether it was given 10 prompts or max_prompts=10, and keeps its shards.
        config = {
            f.name: getattr(self.config, f.name)
            for f in dataclasses.fields(self.config)
            if f.name not in ("helpful_prompts", "max_prompts")
        }
        return {
            "builder": "critique_revision",
            "format_version": FORMAT_VERSION,
            "config": config,
            "constitution_sha256": self.constitution.sha256,
            "prompts_sha256": prompts_sha256(revised),
            "helpful_prompts_sha256": prompts_sha256(helpful) if helpful else None,
            "model": model_fingerprint(self.backend),
        }

    # ------------------------------------------------------------------ one shard
    def _build_shard(
        self, items: list[tuple[Conversation, str]], shard_index: int, indices: range, steps: ShardSteps
    ) -> list[Record]:
        config, constitution = self.config, self.constitution
        conversations = [items[i][0] for i in indices]
        kinds = [items[i][1] for i in indices]

        def generate(chats: Sequence[Conversation], step: str) -> tuple[list[str], list[str | None]]:
            """The cleaned replies of one step and why each ended (see ``Generation.finish_reason``)."""

            def compute() -> list[dict[str, Any]]:
                replies = generate_with_reasons(
                    self.backend,
                    chats,
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    seed=row_seed(config.seed, f"{step}:{shard_index}"),
                    stop=config.stop or None,
                )
                return [
                    {
                        "text": clean_response(r.text) if config.clean_responses else r.text.strip(),
                        "finish_reason": r.finish_reason,
                    }
                    for r in replies
                ]

            saved = steps.run(step, compute, prompts=len(chats))
            return [r["text"] for r in saved], [r["finish_reason"] for r in saved]

        # The first reply answers the prompt as it is stored (no system prompt): it is the model's own reply to the
        # ``prompt`` of the row, which ``rejected`` holds and DPO on the SL-CAI pairs trains against.
        initial, initial_reasons = generate(conversations, "initial")
        current = list(initial)
        to_revise = [j for j, kind in enumerate(kinds) if kind == "revised"]
        principles = {
            j: constitution.sample(config.rounds, seed=row_seed(config.seed, f"principles:{indices[j]}"))
            for j in to_revise
        }
        revisions: list[list[dict[str, Any]]] = [[] for _ in indices]
        for round_index in range(config.rounds):
            if not to_revise:
                break
            replied = {j: [*conversations[j], {"role": "assistant", "content": current[j]}] for j in to_revise}
            critique_chats = [
                constitution.critique_messages(replied[j], principles[j][round_index], few_shot=config.few_shot)
                for j in to_revise
            ]
            critiques, critique_reasons = generate(critique_chats, f"critique-{round_index + 1}")
            revision_chats = [
                constitution.revision_messages(
                    replied[j], principles[j][round_index], critique, few_shot=config.few_shot
                )
                for j, critique in zip(to_revise, critiques)
            ]
            rewrites, rewrite_reasons = generate(revision_chats, f"revision-{round_index + 1}")
            for j, critique, critique_reason, rewrite, rewrite_reason in zip(
                to_revise, critiques, critique_reasons, rewrites, rewrite_reasons
            ):
                revisions[j].append(
                    {
                        "round": round_index + 1,
                        "principle_id": principles[j][round_index].id,
                        "critique": critique,
                        "critique_finish_reason": critique_reason,
                        "revision": rewrite,
                        "revision_finish_reason": rewrite_reason,
                    }
                )
                if rewrite:
                    current[j] = rewrite
        sha = constitution.sha256
        return [
            sl_record(conversations[j], initial[j], current[j], revisions[j], kinds[j], sha, initial_reasons[j])
            for j in range(len(indices))
        ]


def sl_record(
    conversation: Conversation,
    initial: str,
    final: str,
    revisions: list[dict[str, Any]],
    kind: str,
    constitution_sha256: str,
    initial_finish_reason: str | None = None,
) -> Record:
    """One row of the SL-CAI contract.

    ``initial_finish_reason`` (and each revision's ``critique_finish_reason`` / ``revision_finish_reason``) says why
    that generation ended: ``"stop"`` (end of turn), ``"length"`` (cut at ``max_new_tokens``), ``"stop_string"``, or
    ``None`` when the backend cannot tell.
    """
    final_message = [{"role": "assistant", "content": final}]
    return {
        "prompt": [dict(m) for m in conversation],
        "completion": final_message,
        "messages": [*conversation, *final_message],
        "chosen": final_message,
        "rejected": [{"role": "assistant", "content": initial}],
        "initial_response": initial,
        "initial_finish_reason": initial_finish_reason,
        "revisions": revisions,
        "kind": kind,
        "constitution_sha256": constitution_sha256,
    }


def sl_features():
    """``datasets.Features`` of the SL-CAI splits."""
    from datasets import Features, Value

    return Features(
        {
            "prompt": messages_feature(),
            "completion": messages_feature(),
            "messages": messages_feature(),
            "chosen": messages_feature(),
            "rejected": messages_feature(),
            "initial_response": Value("string"),
            "initial_finish_reason": Value("string"),
            "revisions": [
                {
                    "round": Value("int32"),
                    "principle_id": Value("string"),
                    "critique": Value("string"),
                    "critique_finish_reason": Value("string"),
                    "revision": Value("string"),
                    "revision_finish_reason": Value("string"),
                }
            ],
            "kind": Value("string"),
            "constitution_sha256": Value("string"),
        }
    )


def assemble_sl_dataset(records: list[Record | None], *, test_size: float, seed: int):
    """The SL-CAI ``DatasetDict`` from per-prompt records, split into train/test and SFT/preference splits."""
    from datasets import DatasetDict

    held_out = held_out_indices(len(records), test_size, seed)
    split_rows: dict[str, list[Record]] = {"train_sft": [], "test_sft": [], "train_prefs": [], "test_prefs": []}
    for index, record in enumerate(records):
        if record is None:
            continue
        part = "test" if index in held_out else "train"
        split_rows[f"{part}_sft"].append(record)
        if record["kind"] == "revised" and record["chosen"] != record["rejected"]:
            split_rows[f"{part}_prefs"].append(record)
    features = sl_features()
    return DatasetDict({name: records_to_dataset(rows, features) for name, rows in split_rows.items()})


def _log_summary(dataset) -> None:
    logger.info(
        "SL-CAI dataset: %s",
        ", ".join(f"{name} {len(split)} rows" for name, split in dataset.items()),
    )


def _log_quality(report: SLQualityReport, backend: GenerationBackend) -> None:
    for line in report.summary_lines():
        logger.info("%s", line)
    logger.info("SL-CAI quality gates per split: %s", report.split_counts())
    sft = report.sft
    if sft.kept_share < report.config.min_kept_share:
        model = describe_backend(backend).get("model")
        writer = f"the model that wrote them ({model})" if model else "the model that wrote them"
        logger.warning(
            "only %d of %d SL-CAI rows (%.0f%%) passed the quality gates, less than min_kept_share %.0f%%: %s is "
            "likely not up to critiquing and revising its own replies. CAISFTTrainer refuses to train on so few kept "
            "rows unless its own min_kept_share is lowered; generate them with a larger or stronger instruct model "
            "(see the dataset's quality.json)",
            sft.kept,
            sft.total,
            100 * sft.kept_share,
            100 * report.config.min_kept_share,
            writer,
        )
