"""Anthropic-style transcripts (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) as chat messages.

The paper's few-shot files and many prompt sets are written this way; the importers and the prompt loaders read them.
"""

from __future__ import annotations

import re

from hf_cai.conversation import Conversation

_TRANSCRIPT_ROLES = {
    "Human": "user",
    "Assistant": "assistant",
    "CritiqueRequest": "user",
    "Critique": "assistant",
    "RevisionRequest": "user",
    "Revision": "assistant",
}
_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant|CritiqueRequest|Critique|RevisionRequest|Revision):")


def parse_transcript(text: str) -> Conversation:
    """Split an Anthropic-style transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) into chat messages.

    Speaker labels are only recognised at the start of the text or after a blank line, so a ``": "`` inside a
    turn stays part of it. Empty trailing turns (a transcript ending in ``"Assistant:"``) are dropped.
    """
    matches = list(_SPEAKER.finditer(text))
    if not matches:
        stripped = text.strip()
        return [{"role": "user", "content": stripped}] if stripped else []
    messages: Conversation = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        content = text[match.end() : end].strip()
        if content:
            messages.append({"role": _TRANSCRIPT_ROLES[match.group(1)], "content": content})
    return messages
