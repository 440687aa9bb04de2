"""Keeping the paths of this machine out of what is published.

Records written during a run name the folders they were made from (the evaluation's ``models.cai`` is the trained
model's folder, a training record names the base model's cache folder). A published repository is read elsewhere,
where such a path means nothing and tells only how the author's disk is laid out: :func:`strip_local_paths` replaces
each absolute path in a record with the path relative to the run (when it lies inside it) or with its last name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

_SEGMENT = r"[^\s\"'`<>|,;()\[\]{}\\/]+"
ABSOLUTE_PATH = re.compile(
    rf"(?<![\w.:/~-])(?:/{_SEGMENT}(?:/{_SEGMENT})+/?|[A-Za-z]:[\\/]{_SEGMENT}(?:[\\/]{_SEGMENT})*)"
)
"""An absolute POSIX path of two or more parts (``/tmp/run``; not a URL's path, a fraction or ``and/or``), or a Windows
one (``C:\\runs\\x``)."""


def is_local_path(value: Any) -> bool:
    """Whether ``value`` is a string naming an absolute path, or a relative one that exists on this machine."""
    if not isinstance(value, str) or not value or "\n" in value:
        return False
    if ABSOLUTE_PATH.fullmatch(value):
        return True
    try:
        return ("/" in value or "\\" in value) and Path(value).expanduser().exists()
    except OSError:
        return False


def _replacement(path: str, root: Path | None) -> str:
    if root is not None:
        try:
            relative = Path(path).resolve().relative_to(root)
            return relative.as_posix() or root.name
        except (OSError, ValueError):
            pass
    pure = PureWindowsPath(path) if re.match(r"[A-Za-z]:[\\/]", path) else PurePosixPath(path)
    return pure.name or path


def strip_local_paths(value: Any, *, root: str | Path | None = None) -> Any:
    """``value`` (strings, mappings and lists of them, nested) with every absolute path replaced: by the path relative
    to ``root`` when it lies inside it, else by its last name. Other values are returned as they are."""
    base = Path(root).resolve() if root is not None else None
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(lambda match: _replacement(match.group(0), base), value)
    if isinstance(value, Mapping):
        return {key: strip_local_paths(item, root=base) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strip_local_paths(item, root=base) for item in value]
    return value


def readable_model_id(name: str | None) -> str | None:
    """How a published record names a model: its Hub id (an embedded alias's or a converted folder's, see
    :func:`hf_cai.gguf.hub_id_of`), else the name as given unless it is a local path, in which case its folder's
    name."""
    from hf_cai.gguf import hub_id_of

    if not name:
        return None
    try:
        hub_id = hub_id_of(name)
    except (OSError, ValueError):
        hub_id = None
    if hub_id:
        return hub_id
    if is_local_path(name) or ABSOLUTE_PATH.search(name):
        return f"local model '{Path(name).name}'"
    return name
