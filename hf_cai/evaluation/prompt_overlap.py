"""Guarding against scoring a model on the prompts it was trained on.

:func:`check_disjoint` compares evaluation prompts with training prompts after :func:`normalize_prompt` (case,
typographic quotes, punctuation and spacing do not count) and stops a run whose evaluation would reuse training prompts,
unless the recipe allows it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hf_cai.errors import HFCAIError
from hf_cai.evaluation.harm_sets import EvalPrompt

ALLOW_OVERLAP_KEY = "eval.allow_train_overlap"
"""The recipe key that lets evaluation prompts overlap the training prompts."""
_QUOTES = str.maketrans(
    {
        "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    }
)  # fmt: skip
_APOSTROPHE_IN_WORD = re.compile(r"(?<=\w)'(?=\w)")


def normalize_prompt(text: str) -> str:
    """``text`` lowercased, with typographic quotes made plain, punctuation removed and whitespace collapsed.

    Apostrophes inside words are dropped ("don't" and "don’t" become "dont"); other punctuation becomes a space, so
    "well-known" and "well known" compare equal.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    text = _APOSTROPHE_IN_WORD.sub("", text)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def _prompt_text(item: Any) -> str:
    """The user's text of a prompt given as a string, an EvalPrompt, a row with ``prompt`` or a chat."""
    if isinstance(item, str):
        return item
    if isinstance(item, EvalPrompt):
        return item.prompt
    if isinstance(item, Mapping):
        if "prompt" in item:
            return _prompt_text(item["prompt"])
        if "content" in item:
            return str(item["content"])
    if isinstance(item, Sequence):  # a chat: the last user turn
        users = [turn.get("content", "") for turn in item if isinstance(turn, Mapping) and turn.get("role") == "user"]
        if users:
            return str(users[-1])
    raise TypeError(f"cannot read a prompt from {type(item).__name__}: {item!r:.80}")


def find_overlap(eval_prompts: Iterable[Any], training_prompts: Iterable[Any]) -> list[str]:
    """The evaluation prompts whose :func:`normalize_prompt` text equals a training prompt's, once each, in order.

    Prompts may be strings, :class:`EvalPrompt`, rows with a ``prompt`` field (a ``datasets.Dataset`` iterates as
    such), or chats (the last user turn counts).
    """
    seen_in_training = {normalize_prompt(_prompt_text(item)) for item in training_prompts}
    overlap: list[str] = []
    reported: set[str] = set()
    for item in eval_prompts:
        text = _prompt_text(item)
        key = normalize_prompt(text)
        if key in seen_in_training and key not in reported:
            reported.add(key)
            overlap.append(text)
    return overlap


class PromptOverlapError(HFCAIError, ValueError):
    """Evaluation prompts also appear among the training prompts."""

    def __init__(self, overlap: list[str], total: int):
        self.overlap = overlap
        examples = "; ".join(repr(text if len(text) <= 80 else text[:77] + "...") for text in overlap[:3])
        super().__init__(
            f"{len(overlap)} of {total} evaluation prompts also appear in the training prompts (compared after "
            f"lowercasing and removing punctuation), e.g. {examples}. A model scored on prompts it was trained on "
            f"looks better than it is: remove them from the evaluation set, or set `{ALLOW_OVERLAP_KEY}: true` in the "
            f"recipe (allow=True) to evaluate anyway."
        )


def check_disjoint(eval_prompts: Iterable[Any], training_prompts: Iterable[Any], *, allow: bool = False) -> list[str]:
    """Raise :class:`PromptOverlapError` when evaluation prompts appear among the training prompts.

    Returns the overlapping evaluation prompts (empty when disjoint); with ``allow=True`` they are returned rather
    than raised, for the caller to report.
    """
    eval_prompts = list(eval_prompts)
    overlap = find_overlap(eval_prompts, training_prompts)
    if overlap and not allow:
        raise PromptOverlapError(overlap, len(eval_prompts))
    return overlap
