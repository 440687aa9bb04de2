"""Chats as a model's tokens: rendering with the chat template, fitting a token budget, and the tokens that end a turn.

Shared by :class:`~hf_cai.backends.TransformersBackend` and the side-by-side Space, so both cut a long conversation
and stop a reply the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hf_cai.conversation import Conversation

logger = logging.getLogger(__name__)


@dataclass
class EncodedChat:
    """A chat rendered with the chat template and a generation prompt, as token ids."""

    ids: list[int]
    text: str | None
    """The rendered chat, or ``None`` when the ids were cut inside it (they are then no longer its tokenization)."""
    truncated: bool = False


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """The token ids that end a reply: the tokenizer's end-of-sequence token, then those of the model's generation
    config (chat models often add their end-of-turn token there)."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and item not in ids:
                ids.append(int(item))
    return ids


def render_chat(tokenizer: Any, conversation: Conversation) -> str:
    """``conversation`` rendered with the tokenizer's chat template, ending with the assistant's generation prompt."""
    return tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)


def chat_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids of a rendered chat (its template already holds the special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_conversation(conversation: Conversation, tokenizer: Any, max_tokens: int) -> Conversation:
    """``conversation`` without its earliest messages, as few as needed for its rendering to fit ``max_tokens``.

    A leading system message and the last message are always kept, and an assistant message is never left first
    after the system message. When only the last message is left the result may still be too long.
    """
    messages = [dict(message) for message in conversation]
    head = messages[:1] if messages and messages[0].get("role") == "system" else []
    body = messages[len(head) :]
    while len(body) > 1 and len(chat_token_ids(tokenizer, render_chat(tokenizer, head + body))) > max_tokens:
        body = body[1:]
        while len(body) > 1 and body[0].get("role") == "assistant":
            body = body[1:]
    return head + body


def encode_chats(tokenizer: Any, conversations: Sequence[Conversation], limit: int | None) -> list[EncodedChat]:
    """Each conversation rendered and tokenized; one longer than ``limit`` tokens loses its earliest messages (see
    :func:`fit_conversation`), then, when its last message alone is too long, its earliest tokens, with a warning."""
    texts = [render_chat(tokenizer, conversation) for conversation in conversations]
    batch_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    encoded = [EncodedChat(list(ids), text) for ids, text in zip(batch_ids, texts)]
    if limit is None:
        return encoded
    too_long = [index for index, item in enumerate(encoded) if len(item.ids) > limit]
    for index in too_long:
        text = render_chat(tokenizer, fit_conversation(conversations[index], tokenizer, limit))
        ids = chat_token_ids(tokenizer, text)
        if len(ids) <= limit:
            encoded[index] = EncodedChat(ids, text, truncated=True)
        else:
            encoded[index] = EncodedChat(ids[-limit:], None, truncated=True)
    if too_long:
        logger.warning(
            "%d of %d conversations are longer than %d tokens; kept their end (earliest messages dropped first, "
            "the system message kept). Set max_input_tokens or shorten the prompts to avoid this.",
            len(too_long),
            len(conversations),
            limit,
        )
    return encoded


def option_token_ids(
    tokenizer: Any, prompt: EncodedChat, options: Sequence[str], standalone: list[list[int]]
) -> list[list[int]]:
    """Each option's tokens as they are tokenized right after ``prompt`` (tokenizers may merge across the boundary or
    add a prefix space when an option is tokenized alone); ``standalone``, its tokens alone, where they are not."""
    if prompt.text is None:
        return standalone
    together = tokenizer([prompt.text + option for option in options], add_special_tokens=False)["input_ids"]
    prompt_length = len(prompt.ids)
    result = []
    for ids, fallback in zip(together, standalone):
        if len(ids) > prompt_length and list(ids[:prompt_length]) == prompt.ids:
            result.append(list(ids[prompt_length:]))
        else:
            result.append(fallback)
    return result
