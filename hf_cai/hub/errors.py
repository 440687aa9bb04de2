"""Errors of the Hub layer, and turning the Hub's HTTP failures into messages that say what to do.

Every message that leaves this package passes through :func:`~hf_cai.redaction.redact`, so a token (or another
registered secret, such as an endpoint's API key) never ends up in a log line or an exception text, whatever the
server or a library put in its own message.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from hf_cai.errors import HFCAIError
from hf_cai.redaction import redact

_SECRET_NAME = re.compile(r"(?:^|[._-])(?:token|api[_-]?key|apikey|password|secret)$", re.IGNORECASE)
_TOKENIZER_TOKENS = {"bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}


def is_secret_name(name: str) -> bool:
    """Whether a setting or option name holds a secret (``token``, ``hub_token``, ``api-key``, ``publish.token``, ...);
    a tokenizer's special-token settings (``eos_token``, ``pad_token``, ...) are not secrets."""
    leaf = name.lstrip("-").rsplit(".", 1)[-1].lower()
    return bool(_SECRET_NAME.search(name.lstrip("-"))) and leaf not in _TOKENIZER_TOKENS


class HubError(HFCAIError, RuntimeError):
    """A Hub operation failed; the message names the repository, the Hub's answer and what to do."""


class PublishError(HubError):
    """Publishing failed; the message names the file, field or Hub answer and what to do. Nothing local was changed."""


class ModelCardError(HFCAIError, ValueError):
    """A model or dataset card could not be built (bad metadata value, broken template, unreadable training record)."""


def describe_hub_failure(error: Exception, *, action: str, token: str | None) -> str:
    """One clear sentence for a failed Hub call: what failed, the HTTP status and server message, and the fix.

    Args:
        error: The exception raised by ``huggingface_hub`` (HTTP, connection, offline mode or validation error).
        action: What we were doing, e.g. ``"creating model repo alice/cai-tiny"``.
        token: The token in use, removed from the text.
    """
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return redact(
            f"{action} failed: offline mode is on (HF_HUB_OFFLINE=1). Publishing needs the Hub: unset HF_HUB_OFFLINE "
            "and run again.",
            [token],
        )
    if not isinstance(error, HfHubHTTPError) or error.response is None:
        kind = type(error).__name__
        return redact(
            f"{action} failed: could not reach the Hub ({kind}: {error}). Check the network (and HF_ENDPOINT if you "
            "set it), then run the same command again; files that already arrived are not sent twice.",
            [token],
        )
    response = error.response
    status = response.status_code
    server_message = response.headers.get("X-Error-Message") or _body_error(response)
    detail = f" The Hub said: {server_message}" if server_message else ""
    advice = {
        401: "The token was refused (401 Unauthorized). Use a valid token: token=... from Python, or the HF_TOKEN "
        "environment variable or `hf auth login` for the command line.",
        403: "The token may not write here (403 Forbidden). Use a token with the 'write' role that can write to this "
        "namespace, or publish under your own namespace.",
        404: "The repository or revision was not found (404). Check the repo id, the repo type and the revision.",
        409: "The Hub reported a conflict (409): another operation on this repository is in progress or the name is "
        "taken. Wait a moment and run the same command again; unchanged files are skipped.",
        412: "The branch moved while we were committing (412). Run the same command again to publish on top of it.",
        429: f"The Hub is rate-limiting requests (429). Wait {_retry_after(response)} and run the same command "
        "again; files that already arrived are not sent twice.",
    }.get(status)
    if advice is None:
        if status >= 500:
            advice = (
                f"The Hub had a server error ({status}). Nothing was published in this attempt; run the same command "
                "again later, unchanged files are skipped."
            )
        else:
            advice = f"The Hub answered {status}."
    return redact(f"{action} failed. {advice}{detail}", [token])


def _retry_after(response) -> str:
    """How long the Hub asked us to wait (its ``Retry-After`` header, in seconds), or a minute when it did not say."""
    value = response.headers.get("Retry-After", "")
    return f"{int(value)} seconds" if value.isdigit() else "a minute"


def _body_error(response) -> str | None:
    try:
        data = response.json()
    except Exception:  # a body that is not JSON carries no structured message
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return str(error) if error else None


@contextmanager
def hub_errors(action: str, token: str | None, error_class: type[HubError] = HubError) -> Iterator[None]:
    """Turn failures of Hub calls inside the block into ``error_class`` with a message saying what to do.

    Catches the Hub's HTTP errors, offline mode, connection errors and the client's own request validation
    (``ValueError``, e.g. invalid card metadata); the token is removed from the message and the original exception is
    not chained (its request headers would carry the token).
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        yield
    except (HfHubHTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, *_transport_errors()) as error:
        raise error_class(describe_hub_failure(error, action=action, token=token)) from None
    except ValueError as error:
        if isinstance(error, ModelCardError):
            raise
        raise error_class(redact(f"{action} failed: the Hub client refused the request: {error}", [token])) from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of the HTTP clients huggingface_hub may use (httpx2 or httpx)."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)
