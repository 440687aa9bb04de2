"""Dataset checks and adapters shared by the CAI trainers.

Everything here runs before the first training step, so bad data fails fast with an error that names the dataset,
the columns found and expected, and the hf_cai builder that makes the right columns. The adapters let the SL-CAI and
RL-CAI datasets (see DESIGN.md, "Contracts") go straight into TRL's trainers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hf_cai.errors import HFCAIError

CHOSEN_PROB = "chosen_prob"

SFT_BUILDER_HINT = (
    "hf_cai.builders.critique_revision (SL-CAI) writes a 'messages' column in its train_sft / test_sft splits"
)
PREFERENCE_BUILDER_HINT = (
    "hf_cai.builders.ai_feedback (RL-CAI) writes 'prompt', 'chosen', 'rejected' and 'chosen_prob'; the SL-CAI "
    "builder (hf_cai.builders.critique_revision) writes 'chosen' and 'rejected' in its train_prefs / test_prefs splits"
)


class DatasetFormatError(HFCAIError, ValueError):
    """A training dataset lacks the columns a trainer needs or holds invalid values; the message says which."""


def column_names(dataset: Any) -> list[str] | None:
    """Column names of a ``datasets`` Dataset / IterableDataset, or ``None`` when they are unknown."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        features = getattr(dataset, "features", None)
        names = list(features) if features is not None else None
    return list(names) if names is not None else None


def first_example(dataset: Any) -> dict[str, Any] | None:
    try:
        return next(iter(dataset))
    except StopIteration:
        return None


def named_splits(train_dataset: Any, eval_dataset: Any) -> dict[str, Any]:
    """``{"train": ..., "eval": ...}`` for messages, with each dataset of a dict of eval datasets under its own name."""
    splits = {"train": train_dataset}
    if isinstance(eval_dataset, dict):
        splits.update({f"eval '{name}'": part for name, part in eval_dataset.items()})
    elif eval_dataset is not None:
        splits["eval"] = eval_dataset
    return splits


def is_conversation(value: Any) -> bool:
    """Whether ``value`` is a list of ``{"role", "content"}`` messages."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def check_sft_columns(dataset: Any, *, split: str, text_field: str) -> None:
    """Raise :class:`DatasetFormatError` unless the dataset has a column layout TRL's SFTTrainer trains on."""
    columns = column_names(dataset)
    if columns is None:
        return
    layouts = ({"messages"}, {text_field}, {"prompt", "completion"}, {"input_ids"})
    if any(layout <= set(columns) for layout in layouts):
        return
    raise DatasetFormatError(
        f"the {split} dataset has columns {sorted(columns)}; SFT expects 'messages' (a conversation), "
        f"'{text_field}' (plain text), 'prompt' + 'completion', or pre-tokenised 'input_ids'. "
        f"{SFT_BUILDER_HINT}."
    )


def check_preference_columns(dataset: Any, *, split: str, stage: str) -> None:
    """Raise :class:`DatasetFormatError` unless the dataset has 'chosen' and 'rejected' columns.

    Args:
        dataset: The dataset to check.
        split: Its name in messages (``"train"``, ``"eval"``).
        stage: ``"dpo"`` or ``"reward"`` (a reward dataset may also be pre-tokenised: 'chosen_ids', 'rejected_ids').
    """
    columns = column_names(dataset)
    if columns is None or {"chosen", "rejected"} <= set(columns):
        return
    if stage == "reward" and {"chosen_ids", "rejected_ids"} <= set(columns):
        return
    label = {"dpo": "DPO", "reward": "reward-model"}.get(stage, stage)
    raise DatasetFormatError(
        f"the {split} dataset has columns {sorted(columns)}; {label} training expects 'chosen' and 'rejected' "
        f"(with an optional 'prompt' and '{CHOSEN_PROB}'). {PREFERENCE_BUILDER_HINT}."
    )


def check_chat_template(processing_class: Any, dataset: Any, *, split: str) -> None:
    """Raise :class:`DatasetFormatError` when a conversational dataset meets a tokenizer without a chat template."""
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    if tokenizer is None or getattr(tokenizer, "chat_template", None):
        return
    example = first_example(dataset)
    if example is None or not any(is_conversation(example.get(key)) for key in ("messages", "prompt", "chosen")):
        return
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise DatasetFormatError(
        f"the {split} dataset is conversational but the tokenizer '{name}' has no chat template. Use a chat/instruct "
        "model's tokenizer, set `tokenizer.chat_template`, or set `chat_template_path` in the training config to a "
        ".jinja file (hf_cai.tiny.CHAT_TEMPLATE is a ChatML template with {% generation %} markers)."
    )


def drop_string_prompt(dataset: Any, *, conversation_column: str) -> Any:
    """Remove a plain-text 'prompt' column that sits beside a conversational column.

    The SL-CAI dataset (like HuggingFaceH4/cai-conversation-harmless) keeps the red-team prompt as a string next to
    full conversations ('messages', 'chosen', 'rejected'). TRL would read that string as the prompt half of a
    prompt-completion pair; without it, TRL trains on the conversations and, for preferences, takes the shared
    first turns of 'chosen' and 'rejected' as the prompt.
    """
    columns = column_names(dataset)
    if columns is None or "prompt" not in columns or conversation_column not in columns or "completion" in columns:
        return dataset
    example = first_example(dataset)
    if example is None or not isinstance(example["prompt"], str) or not is_conversation(example[conversation_column]):
        return dataset
    return dataset.remove_columns("prompt")


def validate_chosen_prob(values: Sequence[Any], *, source: str) -> None:
    """Raise :class:`DatasetFormatError` unless every value is a probability in [0, 1] (not NaN, not missing).

    Args:
        values: The 'chosen_prob' values, in row order.
        source: Where they come from, for the message, e.g. ``"the train dataset"``.
    """
    bad = [(row, value) for row, value in enumerate(values) if not _is_probability(value)]
    if bad:
        row, value = bad[0]
        raise DatasetFormatError(
            f"{source}: '{CHOSEN_PROB}' must be a probability in [0, 1]; row {row} has {value!r} "
            f"({len(bad)} bad row{'s' if len(bad) > 1 else ''} in all). Fix or drop those rows, e.g. "
            f"dataset.filter(lambda row: 0 <= row['{CHOSEN_PROB}'] <= 1), or remove the column to train on hard labels."
        )


def _is_probability(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return not math.isnan(number) and 0.0 <= number <= 1.0


def resolve_soft_labels(setting: bool | None, dataset: Any, *, split: str = "train") -> bool:
    """Whether to train on soft labels: ``None`` means "when the dataset has a 'chosen_prob' column"."""
    columns = column_names(dataset) or []
    present = CHOSEN_PROB in columns
    if setting is True and not present:
        raise DatasetFormatError(
            f"soft_labels=True but the {split} dataset has no '{CHOSEN_PROB}' column (columns: {sorted(columns)}). "
            f"{PREFERENCE_BUILDER_HINT}."
        )
    return present if setting is None else bool(setting)


def check_chosen_prob_column(dataset: Any, *, split: str) -> None:
    """Validate the 'chosen_prob' column of a map-style dataset (iterable datasets are checked batch by batch)."""
    if CHOSEN_PROB not in (column_names(dataset) or []) or not hasattr(dataset, "__len__"):
        return
    validate_chosen_prob(dataset[CHOSEN_PROB], source=f"the {split} dataset")


@dataclass
class ChosenProbCollator:
    """Wrap a preference collator so that every batch also carries the examples' 'chosen_prob' as a float tensor.

    Args:
        collator: The trainer's collator (TRL's, or the user's).
    """

    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        probabilities = [example.pop(CHOSEN_PROB, None) for example in examples]
        batch = self.collator(examples)
        if all(p is None for p in probabilities):
            return batch
        validate_chosen_prob(probabilities, source="a training batch")
        batch[CHOSEN_PROB] = torch.tensor([float(p) for p in probabilities], dtype=torch.float32)
        return batch
