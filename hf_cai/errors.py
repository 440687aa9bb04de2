"""The base of every error hf_cai raises on purpose, so that one ``except HFCAIError`` catches them all and the command
line can tell a user's mistake (one line) from a bug (a traceback).

Each error of the package also subclasses the built-in it stands for (``ValueError`` for bad input, ``RuntimeError``
for a failed step, ``ImportError`` for a missing extra), so code catching the built-in keeps working.
"""

from __future__ import annotations


class HFCAIError(Exception):
    """Base class of the errors hf_cai raises: the message says what is wrong and what to do."""


class InputError(HFCAIError, ValueError):
    """A value, file or setting given to hf_cai cannot be used; the message names it."""


class MissingExtraError(HFCAIError, ImportError):
    """A feature needs an optional extra that is not installed; the message gives the ``pip install`` line."""


__all__ = ["HFCAIError", "InputError", "MissingExtraError"]
