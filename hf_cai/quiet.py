"""Third-party messages that hf_cai's own calls trigger and a user can do nothing about, silenced where hf_cai
triggers them, so that library use is as quiet as the command line.

* :data:`KNOWN_WARNINGS`: warnings libraries raise about each other's code (peft and TRL calling methods transformers
  renamed); the trainers ignore them while they build and train, the command line for a whole command.
* :func:`import_bitsandbytes`: bitsandbytes' CPU backend asks the Hub for an optional faster kernel when imported and,
  offline or without it, warns to ``pip install kernels`` (installed or not) while its own kernel works.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

logger = logging.getLogger(__name__)

KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # peft and TRL call `model.is_gradient_checkpointing` and `model.gradient_checkpointing_enable/disable()`, which
    # transformers renamed (`..._activation_checkpointing...`).
    (FutureWarning, r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is "),
)
"""``(category, regular expression matching the start of the message)`` of each warning hidden."""

IMPORT_TIME_LOGGERS = ("bitsandbytes", "kernels")
"""Loggers that speak while bitsandbytes is imported: about the optional kernel it fetches from the Hub."""


@contextmanager
def known_warnings_ignored() -> Iterator[None]:
    """Ignore the :data:`KNOWN_WARNINGS` inside the block; every other warning shows as usual."""
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextmanager
def loggers_at_error(names: tuple[str, ...]) -> Iterator[None]:
    """Only errors from the loggers ``names`` (and their children) inside the block; their levels are restored."""
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def import_bitsandbytes() -> ModuleType:
    """``import bitsandbytes`` without the warnings of its optional Hub kernel (its built-in CPU kernel is used).

    Raises what the import raises (bitsandbytes fails in various ways on unsupported platforms).
    """
    import sys

    loaded = sys.modules.get("bitsandbytes")
    if loaded is not None:
        return loaded
    with loggers_at_error(IMPORT_TIME_LOGGERS):
        import bitsandbytes
    logger.debug("imported bitsandbytes %s", bitsandbytes.__version__)
    return bitsandbytes
