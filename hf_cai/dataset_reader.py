"""The one reader of tabular data for prompts, evaluation sets and training data: :func:`read_dataset`.

Everything goes through ``datasets``: a local ``.json`` / ``.jsonl`` / ``.csv`` / ``.parquet`` / ``.txt`` file
(``load_dataset`` with that file's builder; a ``.txt`` file gives one ``text`` row per line), a folder written by
``save_to_disk`` (``load_from_disk``; a run folder holding it as ``dataset/`` too), a local data folder, or a Hub
dataset id. Offline (``HF_HUB_OFFLINE=1``) a Hub id that is not in the local cache fails with a message that names
the id and says to download it once while online.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cai.errors import InputError

__all__ = ["DATA_FILE_BUILDERS", "DatasetReadError", "looks_like_file", "read_dataset"]

DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
"""The ``datasets`` builder that reads each local file type."""


class DatasetReadError(InputError):
    """A dataset could not be read: the message names the source, the split and what to do."""


def looks_like_file(source: str | Path) -> bool:
    """Whether ``source`` names a local file or folder rather than a Hub id."""
    text = str(source)
    return Path(text).expanduser().exists() or text.lower().endswith(tuple(DATA_FILE_BUILDERS)) or text.startswith(
        (".", "/", "~")
    )


def read_dataset(
    source: str | Path,
    *,
    split: str | Sequence[str] | None = None,
    config_name: str | None = None,
):
    """One split of a dataset, as a ``datasets.Dataset``.

    Args:
        source: A local file (see :data:`DATA_FILE_BUILDERS`), a ``save_to_disk`` folder (or a folder holding one as
            ``dataset/``), a local data folder, or a Hub dataset id.
        split: The split's name, or candidates tried in order; ``None``: ``train`` if there is one, else the only
            split. A single file or a saved ``Dataset`` is the split ``train``.
        config_name: The Hub dataset's configuration (subset), where it has several.

    Raises:
        FileNotFoundError: ``source`` looks like a local file but does not exist.
        DatasetReadError: The file cannot be read by its builder, the Hub dataset cannot be loaded (offline and not
            cached, unknown id, missing configuration), or it has no such split.
    """
    from datasets import Dataset, DatasetDict

    data = _load(source, config_name)
    if isinstance(data, Dataset):
        data = DatasetDict({"train": data})
    candidates = [split] if isinstance(split, str) else list(split or [])
    if not candidates:
        candidates = ["train"] if "train" in data or len(data) != 1 else list(data)
    for name in candidates:
        if name in data:
            return data[name]
    raise DatasetReadError(
        f"dataset '{source}' has no split {' / '.join(candidates)}; its splits are: {', '.join(data)}"
    )


def _load(source: str | Path, config_name: str | None) -> Any:
    from datasets import load_dataset, load_from_disk

    location = Path(source).expanduser()
    if location.is_dir() and (location / "dataset" / "dataset_dict.json").is_file():
        location = location / "dataset"
    if location.is_dir() and ((location / "dataset_dict.json").is_file() or (location / "state.json").is_file()):
        return load_from_disk(str(location))
    builder = DATA_FILE_BUILDERS.get(location.suffix.lower())
    if builder is not None and looks_like_file(source):
        if not location.is_file():
            raise FileNotFoundError(f"data file not found: {location}")
        options = {"keep_default_na": False} if builder == "csv" else {}  # "NA" or "None" is a prompt, not a gap
        try:
            data = load_dataset(builder, data_files=str(location), split="train", **options)
            if builder == "json" and data.column_names == ["data"] and len(data) == 1:
                data = load_dataset(builder, data_files=str(location), split="train", field="data")
        except Exception as error:  # datasets raises many types for a malformed file
            raise DatasetReadError(f"{location}: cannot be read as {builder}: {type(error).__name__}: {error}") from None
        return data
    if location.is_dir():
        return load_dataset(str(location), config_name)
    try:
        return load_dataset(str(source), config_name)
    except Exception as error:  # connection, offline mode, unknown repository, missing configuration
        if _offline():
            raise DatasetReadError(
                f"could not load the Hub dataset '{source}': the Hub is offline here (HF_HUB_OFFLINE is set) and the "
                f"dataset is not in the local cache. Download it once while online "
                f"(python -c \"import datasets; datasets.load_dataset('{source}')\"), or give a local file."
            ) from None
        raise DatasetReadError(
            f"could not load the Hub dataset '{source}': {type(error).__name__}: {error}. "
            "If it is a local file, check the path."
        ) from None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE", "") in ("1", "true", "True")
