"""Assistant-only loss for chat templates without ``{% generation %}`` markers.

TRL learns only the assistant's tokens when the chat template marks them with ``{% generation %}`` blocks, and patches
the templates of a few model families; any other template (SmolLM2's ChatML, Llama 3.1 / 3.2, ...) stops it. Here the
mask is computed from the template as it is, by rendering growing prefixes of each conversation:

* an assistant reply starts where the conversation before it, rendered with ``add_generation_prompt=True``, ends, so
  the assistant header is not learned;
* it ends where the rendering of the conversation through that reply stops agreeing with the same conversation
  followed by one more message, less trailing whitespace: the reply plus whatever the template emits to close the turn
  (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, ``<|end|>``, ...), without the separator before the next turn.

Both rules need a prefix-preserving template: one that renders a turn the same whatever follows it, so that the
tokens learned are those the model sees and emits at inference. Every conversation is checked as it is tokenised.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hf_cai.errors import HFCAIError
from hf_cai.trainers.data import DatasetFormatError

logger = logging.getLogger(__name__)

PROBE_CONVERSATION = (
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
)
"""The conversation a template is tried on before training (no system message: some templates reject one)."""

_FOLLOW_UP = {"role": "user", "content": "Thanks."}


class ChatTemplateError(HFCAIError, ValueError):
    """A chat template cannot give assistant-only loss masks; the message names the tokenizer and what to do."""


def needs_computed_assistant_masks(processing_class: Any) -> bool:
    """Whether assistant-only loss on this tokenizer needs the masks computed here instead of TRL's.

    ``True`` when the template has no ``{% generation %}`` markers and is prefix-preserving on
    :data:`PROBE_CONVERSATION`. ``False`` when TRL's path runs unchanged: the template has markers, or it is not
    prefix-preserving but TRL ships a training version of it that it swaps in, or the processing class is a
    multimodal processor or has no chat template.

    Raises:
        ChatTemplateError: The template has no markers, TRL has no training version of it, and it is not
            prefix-preserving (or the tokenizer gives no character offsets).
    """
    from transformers import ProcessorMixin
    from trl.chat_template_utils import has_generation_markers

    if isinstance(processing_class, ProcessorMixin) or not processing_class.chat_template:
        return False
    if has_generation_markers(processing_class.chat_template):
        return False
    try:
        check_chat_template_masks(processing_class)
    except ChatTemplateError:
        if _trl_training_template(processing_class) is not None:
            return False
        raise
    return True


def check_chat_template_masks(tokenizer: Any) -> None:
    """Raise :class:`ChatTemplateError` unless assistant masks can be computed for the tokenizer's chat template.

    Tries the template on :data:`PROBE_CONVERSATION` and logs a warning when a reply's masked span does not end on a
    special token: the template then emits no end-of-turn token, and the model does not learn to stop.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError(
            f"the tokenizer of '{_name(tokenizer)}' is a slow (Python) tokenizer; assistant-only loss on a template "
            "without {% generation %} markers needs the character offsets of a fast tokenizer. Load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True), or set assistant_only_loss=False."
        )
    try:
        encoding = tokenize_conversation(tokenizer, list(PROBE_CONVERSATION))
    except ChatTemplateError as error:
        raise ChatTemplateError(f"on a test conversation, {error}") from error
    special_ids = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    ids, masks = encoding["input_ids"], encoding["assistant_masks"]
    span_ends = [ids[i] for i in range(len(ids)) if masks[i] and (i + 1 == len(ids) or not masks[i + 1])]
    unclosed = [token_id for token_id in span_ends if token_id not in special_ids]
    if unclosed:
        logger.warning(
            "the chat template of '%s' closes an assistant turn with no special token (a masked reply ends with "
            "%r): the model learns the replies but not to stop after them",
            _name(tokenizer),
            tokenizer.decode(unclosed[:1]),
        )


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], *, prompt_length: int | None = None, **template_kwargs: Any
) -> dict[str, list[int]]:
    """Tokenise a conversation with its chat template and mark the tokens of every assistant reply.

    Args:
        tokenizer: A fast tokenizer with a chat template.
        messages: The conversation, a list of ``{"role", "content", ...}`` messages.
        prompt_length: For a prompt-completion row, the number of messages in the prompt: a ``completion_mask``
            is then added (1 from the completion's first token on), as TRL does for prompt-completion data.
        **template_kwargs: Passed to ``apply_chat_template`` (``tools``, template variables).

    Returns:
        ``input_ids`` (exactly what ``apply_chat_template`` tokenises), ``assistant_masks`` (1 on each assistant
        reply and its end-of-turn token) and, with ``prompt_length``, ``completion_mask``.

    Raises:
        ChatTemplateError: The template renders a turn differently depending on what follows it.
    """
    text, spans = assistant_spans(tokenizer, messages, **template_kwargs)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    result = {
        "input_ids": list(encoding["input_ids"]),
        # A token that straddles a span's edge (a header's trailing space merged into the reply's first word) is
        # learned with the reply, as transformers does for {% generation %} spans.
        "assistant_masks": [int(any(start < b and stop > a for a, b in spans)) for start, stop in offsets],
    }
    if prompt_length is not None:
        completion_start = _prompt_end(tokenizer, messages, prompt_length, text, **template_kwargs)
        result["completion_mask"] = [int(start >= completion_start) for start, _ in offsets]
    return result


def assistant_spans(
    tokenizer: Any, messages: list[dict[str, Any]], **template_kwargs: Any
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, for each assistant message, the character span of its reply and end-of-turn.

    Raises:
        ChatTemplateError: The template renders a turn differently depending on what follows it.
        DatasetFormatError: The conversation starts with an assistant message (there is no prompt to answer).
    """
    text = _render(tokenizer, messages, **template_kwargs)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if index == 0:
            raise DatasetFormatError(
                "the conversation starts with an assistant message; assistant-only loss learns replies to a prompt, "
                "so each conversation needs a user (or system) message first"
            )
        start = _prompt_end(tokenizer, messages, index, text, **template_kwargs)
        turn = _render(tokenizer, messages[: index + 1], **template_kwargs)
        followed = _render(tokenizer, [*messages[: index + 1], _FOLLOW_UP], **template_kwargs)
        end = _turn_end(tokenizer, turn, followed)
        if end <= start:
            raise _not_prefix_preserving(tokenizer, index + 1, turn, followed, "once another message follows")
        if not text.startswith(turn[:end]):
            raise _not_prefix_preserving(tokenizer, index + 1, turn, text, "in the whole conversation")
        spans.append((start, end))
    return text, spans


def add_assistant_masks(dataset: Any, tokenizer: Any, *, dataset_name: str, num_proc: int | None = None) -> Any:
    """Tokenise a conversational dataset with assistant masks, for TRL's ``SFTTrainer`` to take as already tokenised.

    Adds ``input_ids`` and ``assistant_masks`` (and ``completion_mask`` for prompt-completion rows), from which TRL
    builds labels that learn only the replies. Rows are ``messages`` conversations or conversational ``prompt`` + ``completion`` pairs; a ``tools`` column and a
    ``chat_template_kwargs`` column are passed to the template, as TRL does.
    """
    from datasets import Dataset

    def tokenize_row(example: dict[str, Any], index: int) -> dict[str, list[int]]:
        tools = example.get("tools")
        template_kwargs = {
            "tools": json.loads(tools) if isinstance(tools, str) else tools,
            **(example.get("chat_template_kwargs") or {}),
        }
        try:
            if "prompt" in example:
                prompt = example["prompt"]
                messages = [*prompt, *example["completion"]]
                row = tokenize_conversation(tokenizer, messages, prompt_length=len(prompt), **template_kwargs)
            else:
                row = tokenize_conversation(tokenizer, example["messages"], **template_kwargs)
        except (ChatTemplateError, DatasetFormatError) as error:
            raise type(error)(f"row {index} of the {dataset_name} dataset: {error}") from error
        if 1 not in row["assistant_masks"]:
            raise DatasetFormatError(
                f"row {index} of the {dataset_name} dataset has no assistant message, so nothing to learn with "
                "assistant_only_loss=True; drop such rows (dataset.filter) or set assistant_only_loss=False"
            )
        return row

    map_kwargs: dict[str, Any] = {"with_indices": True}
    if isinstance(dataset, Dataset):  # IterableDataset.map takes neither
        map_kwargs.update(num_proc=num_proc, desc=f"Tokenizing {dataset_name} dataset with assistant masks")
    return dataset.map(tokenize_row, **map_kwargs)


def _render(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def _prompt_end(tokenizer: Any, messages: list[dict[str, Any]], length: int, text: str, **template_kwargs: Any) -> int:
    """Where the first ``length`` messages, rendered with the generation prompt, end in ``text``."""
    prompt = _render(tokenizer, messages[:length], add_generation_prompt=True, **template_kwargs)
    if not text.startswith(prompt):
        raise _not_prefix_preserving(tokenizer, length, prompt, text, "in the whole conversation", prompt=True)
    return len(prompt)


def _turn_end(tokenizer: Any, turn: str, followed: str) -> int:
    """The end of the text that ``turn`` and ``followed`` share, in whole tokens, less trailing whitespace."""
    encoding = tokenizer(turn, add_special_tokens=False, return_offsets_mapping=True)
    turn_ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    followed_ids = tokenizer(followed, add_special_tokens=False)["input_ids"]
    shared = 0
    while shared < min(len(turn_ids), len(followed_ids)) and turn_ids[shared] == followed_ids[shared]:
        shared += 1
    # What the turn ends with before the next message is its end-of-turn token plus, often, a newline separator.
    while shared and not turn[offsets[shared - 1][0] : offsets[shared - 1][1]].strip():
        shared -= 1
    return offsets[shared - 1][1] if shared else 0


def _trl_training_template(tokenizer: Any) -> str | None:
    """TRL's training version of the tokenizer's template (with generation markers), if TRL ships one."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except ValueError:  # TRL raises for templates it cannot patch
        return None


def _not_prefix_preserving(
    tokenizer: Any, count: int, alone: str, other: str, where: str, *, prompt: bool = False
) -> ChatTemplateError:
    subject = f"the first {count} message(s)" + (" with the generation prompt" if prompt else "")
    at = next((i for i, (a, b) in enumerate(zip(alone, other)) if a != b), min(len(alone), len(other)))
    window = slice(max(0, at - 30), at + 30)
    return ChatTemplateError(
        f"the chat template of '{_name(tokenizer)}' is not prefix-preserving: {subject} render as "
        f"...{alone[window]!r}... on their own, but as ...{other[window]!r}... {where}. "
        "Assistant-only loss needs each turn to render the same whatever follows it, so that the tokens learned are "
        "the ones the model sees when it answers. Either give the trainer a template that is prefix-preserving or has "
        "{% generation %} markers (`chat_template_path=` in the training config), or set assistant_only_loss=False: "
        "a dataset with 'prompt' and 'completion' columns (like the SL-CAI splits) then still learns only the "
        "completion."
    )


def _name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
