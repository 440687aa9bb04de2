"""The secrets hf_cai must never write or say, and hiding them in a text.

A Hugging Face access token is known by its shape (:data:`TOKEN_PATTERN`). Other secrets have none: the API key of an
OpenAI-compatible endpoint may be any string. The code that reads such a key registers it
(:func:`register_secret`); from then on, in this process, :func:`redact` hides it in every message that passes
through it (errors and log lines of the endpoint client and of the Hub layer), and the secrets scan of a publication
(:mod:`hf_cai.hub.secrets`) refuses a file that holds it, as it refuses the Hub token in use.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
"""What a Hugging Face access token looks like: ``hf_`` and at least 30 letters and digits."""

MIN_SECRET_LENGTH = 8
"""Shorter values are not registered: they are placeholders such as vLLM's ``EMPTY`` rather than keys, and would
match ordinary words in the data."""

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a secret for the rest of the process (see the module docstring); ``None``, empty and
    placeholder-short values are ignored."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value)


def registered_secrets() -> frozenset[str]:
    """The secrets registered so far in this process."""
    with _lock:
        return frozenset(_registered)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given and the registered secrets, and anything shaped like a Hugging Face token, replaced
    by ``***``."""
    # Longest first, so that a secret containing another is hidden whole.
    for secret in sorted({s for s in (*secrets, *registered_secrets()) if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return TOKEN_PATTERN.sub("***", text)
