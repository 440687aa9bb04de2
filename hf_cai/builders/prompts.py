"""Prompt sources for the dataset builders, and the built-in prompt sets.

A prompt is a chat that ends with the user's turn. Sources: a ``datasets.Dataset``, a list of strings or chats, a
JSONL / JSON / CSV / Parquet / text file or a ``save_to_disk`` folder, a Hub dataset id (files, folders and ids all
read by :func:`hf_cai.dataset_reader.read_dataset`), or ``"builtin:red_team"`` / ``"builtin:helpful"``. Strings written
as Anthropic-style transcripts (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) become multi-turn chats; trailing
assistant turns are dropped, since the builders generate that reply.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from hf_cai.constitution.transcript import parse_transcript
from hf_cai.conversation import Conversation
from hf_cai.dataset_reader import looks_like_file, read_dataset
from hf_cai.errors import InputError

logger = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
_TRANSCRIPT_MARK = re.compile(r"(?:^|\n\n)Human:")

PromptSource = str | Path | Sequence[Any] | Any
"""Anything :func:`load_prompts` accepts."""


def list_builtin_prompts() -> list[str]:
    """Names of the prompt sets shipped with hf_cai."""
    folder = resources.files("hf_cai") / "prompts"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def builtin_prompts(name: str):
    """A built-in prompt set as a ``datasets.Dataset`` with columns ``prompt`` and ``category``.

    ``"red_team"``: requests an assistant should not simply comply with, across harm categories (for SL-CAI,
    RL-CAI and harmlessness evaluation). ``"helpful"``: ordinary requests (for helpfulness mixing and evaluation).
    """
    from datasets import Dataset

    available = list_builtin_prompts()
    if name not in available:
        raise InputError(f"no built-in prompt set '{name}'; available: {', '.join(available)}")
    text = (resources.files("hf_cai") / "prompts" / f"{name}.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return Dataset.from_list([{"prompt": row["prompt"], "category": row.get("category", "")} for row in rows])


def load_prompts(source: PromptSource, *, column: str = "prompt", split: str = "train") -> list[Conversation]:
    """Read prompts from ``source`` as chats ending with a user turn.

    Args:
        source: A ``datasets.Dataset`` / ``DatasetDict``, a list of strings or of chats (lists of
            ``{"role", "content"}``), a path to a ``.jsonl`` / ``.json`` / ``.csv`` / ``.txt`` file (one prompt per
            line), ``"builtin:<name>"`` (see :func:`builtin_prompts`), or a Hub dataset id.
        column: Column / key holding the prompt (a string, a transcript or a chat) in datasets and files.
        split: Split to read from a ``DatasetDict`` or a Hub dataset.

    Raises:
        ValueError: The source holds no prompts, or an entry is empty or malformed (the message names the entry).
        FileNotFoundError: ``source`` looks like a file path but does not exist.
    """
    name, entries = _read(source, column=column, split=split)
    prompts = [_to_conversation(value, where=where) for where, value in entries]
    if not prompts:
        raise InputError(f"{name}: no prompts found; give at least one prompt")
    return prompts


def prompts_sha256(prompts: Sequence[Conversation]) -> str:
    """sha256 of the prompts' canonical JSON, for run fingerprints."""
    canonical = json.dumps(list(prompts), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_text(conversation: Conversation) -> str:
    """The text of the last user turn: the request a row answers."""
    for message in reversed(conversation):
        if message["role"] == "user":
            return message["content"]
    return ""


# ---------------------------------------------------------------------- reading
_NAME_THE_COLUMN = "Name the column that holds the prompts (column=... in Python, prompt_column in a recipe)."


def _numbered(name: str, values: list[Any]) -> list[tuple[str, Any]]:
    return [(f"{name}, entry {index}", value) for index, value in enumerate(values)]


def _read(source: PromptSource, *, column: str, split: str) -> tuple[str, list[tuple[str, Any]]]:
    """The source's name and its prompts, each with where it is (file line, CSV row or entry number) for errors."""
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        if split not in source:
            raise InputError(f"the DatasetDict has no split '{split}'; splits: {', '.join(source)}")
        source = source[split]
    if isinstance(source, Dataset):
        if column not in source.column_names:
            raise InputError(
                f"the dataset has no column '{column}'; columns: {', '.join(source.column_names)}. {_NAME_THE_COLUMN}"
            )
        name = f"dataset column '{column}'"
        return name, _numbered(name, list(source[column]))
    if isinstance(source, Path) or (isinstance(source, str) and looks_like_file(source)):
        return _read_file(Path(source), column)
    if isinstance(source, str):
        if source.startswith(BUILTIN_PREFIX):
            return source, _numbered(source, list(builtin_prompts(source[len(BUILTIN_PREFIX) :])["prompt"]))
        return _read_hub(source, column=column, split=split)
    if isinstance(source, Sequence):
        values = [_pick(item, column, f"prompt list, entry {i}") for i, item in enumerate(source)]
        return "prompt list", _numbered("prompt list", values)
    raise TypeError(
        f"cannot read prompts from a {type(source).__name__}; pass a Dataset, a list, a file path, "
        "'builtin:<name>' or a Hub dataset id"
    )


def _read_file(path: Path, column: str) -> tuple[str, list[tuple[str, Any]]]:
    path = path.expanduser()
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    dataset = read_dataset(path)
    if path.suffix.lower() == ".txt":
        return str(path), [(f"{path}, line {n}", line) for n, line in enumerate(dataset["text"], 1) if line.strip()]
    if column not in dataset.column_names and dataset.column_names == ["text"] and path.suffix.lower() == ".json":
        column = "text"  # a JSON list of plain strings
    if column not in dataset.column_names:
        raise InputError(f"{path}: no column '{column}'; columns: {', '.join(dataset.column_names)}. {_NAME_THE_COLUMN}")
    entries = []
    for number, value in enumerate(dataset[column], start=1):
        if value is None:
            raise InputError(f"{path}, row {number}: no value in column '{column}'. {_NAME_THE_COLUMN}")
        entries.append((f"{path}, row {number}", value))
    return str(path), entries


def _pick(item: Any, column: str, where: str) -> Any:
    if isinstance(item, Mapping):
        if column not in item:
            raise InputError(f"{where}: no key '{column}'; keys: {', '.join(item)}. {_NAME_THE_COLUMN}")
        return item[column]
    return item


def _read_hub(repo_id: str, *, column: str, split: str) -> tuple[str, list[Any]]:
    name, entries = _read(read_dataset(repo_id, split=split), column=column, split=split)
    return f"Hub dataset '{repo_id}' {name}", [(f"Hub dataset '{repo_id}' {where}", value) for where, value in entries]


def _to_conversation(value: Any, *, where: str) -> Conversation:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InputError(f"{where}: empty prompt")
        messages = parse_transcript(value) if _TRANSCRIPT_MARK.search(value) else [{"role": "user", "content": text}]
    elif isinstance(value, Sequence) and all(isinstance(m, Mapping) for m in value):
        messages = []
        for message in value:
            if message.get("role") not in ("system", "user", "assistant") or not isinstance(message.get("content"), str):
                raise InputError(f"{where}: each message needs a role (system/user/assistant) and a string content")
            messages.append({"role": message["role"], "content": message["content"]})
    else:
        raise InputError(f"{where}: expected a string or a list of messages, got {type(value).__name__}")
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise InputError(f"{where}: no user turn to answer")
    return messages
