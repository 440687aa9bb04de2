"""The chat message types every part of hf_cai passes around (constitutions, backends, builders, rewards)."""

from __future__ import annotations

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

Conversation = list[Message]
"""A chat in order, as chat templates take it."""
