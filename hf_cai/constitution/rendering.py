"""The texts a constitution puts in front of a model: plain transcripts and the multiple-choice feedback question."""

from __future__ import annotations

from collections.abc import Sequence

from hf_cai.conversation import Conversation, Message

PREFERENCE_OPTIONS = ("(A)", "(B)")
"""The answers of the feedback question, as the feedback model writes them; their log-probabilities give the label."""


def without_system(conversation: Sequence[Message]) -> Conversation:
    """Copies of the messages of ``conversation`` other than system messages."""
    return [dict(m) for m in conversation if m.get("role") != "system"]


def render_transcript(conversation: Sequence[Message]) -> str:
    """A conversation as a plain ``Human: ... / Assistant: ...`` transcript."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in conversation)


def render_preference_question(
    conversation: Sequence[Message], response_a: str, response_b: str, question: str
) -> str:
    """The multiple-choice feedback question over a conversation and two candidate replies."""
    return (
        "Consider the following conversation between a human and an AI assistant:\n\n"
        f"{render_transcript(without_system(conversation))}\n\n"
        f"{question.strip()}\n\n"
        f"Options:\n(A) {response_a.strip()}\n(B) {response_b.strip()}\n\n"
        "Answer with (A) or (B) only."
    )
