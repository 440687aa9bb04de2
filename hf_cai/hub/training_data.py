"""Reading the provenance that SL-CAI and RL-CAI datasets carry, for model and dataset cards.

The SL-CAI dataset records, per row, the critique → revision rounds (``revisions: [{round, principle_id, critique,
revision}]``); the RL-CAI preference dataset records the principles each label was asked under (``principle_ids``) and
the soft label (``chosen_prob``). Both record the ``constitution_sha256`` they were generated under.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hf_cai.hub.errors import PublishError

DatasetKind = Literal["sl-cai", "rl-cai", "other"]
_TRAIN_SPLITS: dict[str, tuple[str, ...]] = {"sl-cai": ("train_sft", "train"), "rl-cai": ("train_prefs", "train")}


def load_dataset_dict(source: Any):
    """A ``DatasetDict`` from a ``Dataset`` (as split ``train``), a ``DatasetDict``, or a ``save_to_disk`` folder."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if isinstance(source, DatasetDict):
        return source
    if isinstance(source, Dataset):
        return DatasetDict({"train": source})
    path = Path(source)
    if not path.exists():
        raise PublishError(f"{path}: no such dataset folder (expected a folder written by DatasetDict.save_to_disk)")
    if (path / "dataset_dict.json").is_file():
        return _load_dataset_dict_folder(path)
    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise PublishError(f"{path}: not a dataset saved with save_to_disk ({error})") from error
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def _load_dataset_dict_folder(path: Path):
    """Load a ``DatasetDict.save_to_disk`` folder split by split.

    ``load_from_disk`` fails on a split saved with no rows (an empty ``test_prefs``, say): such a split has no Arrow
    file, so it is rebuilt empty from its recorded features instead.
    """
    from datasets import Dataset, DatasetDict, Features

    try:
        names = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
        splits = {}
        for name in names:
            folder = path / name
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
            if state.get("_data_files"):
                splits[name] = Dataset.load_from_disk(str(folder))
            else:
                info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
                features = Features.from_dict(info["features"])
                splits[name] = Dataset.from_dict({column: [] for column in features}, features=features)
    except (OSError, KeyError, ValueError) as error:
        raise PublishError(
            f"{path}: not a dataset saved with DatasetDict.save_to_disk ({type(error).__name__}: {error})"
        ) from error
    return DatasetDict(splits)


def dataset_kind(dataset) -> DatasetKind:
    """``"sl-cai"`` when rows carry critique → revision rounds, ``"rl-cai"`` when they carry soft preference labels."""
    columns = set(next(iter(dataset.values())).column_names) if len(dataset) else set()
    if "revisions" in columns:
        return "sl-cai"
    if "chosen_prob" in columns or "principle_ids" in columns:
        return "rl-cai"
    return "other"


def training_split(dataset, kind: DatasetKind):
    """The split a trainer learns from: ``train_sft`` / ``train_prefs`` / ``train``, else the first split; ``None`` when
    that split is empty."""
    chosen = next((dataset[name] for name in _TRAIN_SPLITS.get(kind, ("train",)) if name in dataset), None)
    if chosen is None and len(dataset):
        chosen = next(iter(dataset.values()))
    return chosen if chosen is not None and chosen.num_rows else None


def constitution_hashes(dataset) -> set[str]:
    """The constitution hashes recorded in any split (empty when the dataset does not record them)."""
    hashes: set[str] = set()
    for split in dataset.values():
        # An empty split loaded from disk has no Arrow table to read a column from.
        if split.num_rows and "constitution_sha256" in split.column_names:
            hashes.update(value for value in split.unique("constitution_sha256") if value)
    return hashes


def principle_row_counts(dataset) -> Counter[str]:
    """How many training rows each principle produced (a row counts once per principle it used)."""
    kind = dataset_kind(dataset)
    split = training_split(dataset, kind)
    counts: Counter[str] = Counter()
    if split is None:
        return counts
    if kind == "sl-cai":
        for revisions in split["revisions"]:
            counts.update({r["principle_id"] for r in revisions or () if r.get("principle_id")})
    elif kind == "rl-cai" and "principle_ids" in split.column_names:
        for ids in split["principle_ids"]:
            counts.update(set(ids or ()))
    return counts


def revision_rounds(dataset) -> int | None:
    """The largest number of critique → revision rounds a row of the SL-CAI training split went through."""
    split = training_split(dataset, "sl-cai")
    if split is None or "revisions" not in split.column_names:
        return None
    return max((len(r or ()) for r in split["revisions"]), default=0)


@dataclass(frozen=True)
class RevisionChain:
    """One SL-CAI example: the prompt, the first reply and each critique → revision round."""

    prompt: str
    initial_response: str
    rounds: tuple[Mapping[str, Any], ...]
    quality_flags: tuple[str, ...] = ()
    """The SL-CAI quality gates' flags of the row (empty: the gates kept it)."""


def sample_revision_chains(dataset, k: int = 3, *, seed: int = 0) -> list[RevisionChain]:
    """Up to ``k`` reproducibly sampled rows of the SL-CAI training split that went through at least one round,
    rows the quality gates kept first (flagged rows fill up only when too few were kept, and show their flags)."""
    split = training_split(dataset, "sl-cai")
    if split is None or "revisions" not in split.column_names:
        return []
    flags = split["quality_flags"] if "quality_flags" in split.column_names else [[]] * len(split)
    rng = random.Random(seed)
    candidates = [i for i, revisions in enumerate(split["revisions"]) if revisions]
    kept = [i for i in candidates if not flags[i]]
    chosen = rng.sample(kept, min(k, len(kept)))
    flagged = [i for i in candidates if flags[i]]
    chosen = sorted(chosen + rng.sample(flagged, min(k - len(chosen), len(flagged))))
    chains = []
    for index in chosen:
        row = split[index]
        chains.append(
            RevisionChain(
                prompt=message_text(row.get("prompt")),
                initial_response=message_text(row.get("initial_response")),
                rounds=tuple(sorted(row["revisions"], key=lambda r: r.get("round", 0))),
                quality_flags=tuple(flags[index] or ()),
            )
        )
    return chains


def uses_soft_labels(dataset) -> bool:
    """Whether the preference rows carry graded labels (some ``chosen_prob`` strictly between 0 and 1)."""
    split = training_split(dataset, "rl-cai")
    if split is None or "chosen_prob" not in split.column_names:
        return False
    return any(0.0 < float(p) < 1.0 for p in split["chosen_prob"] if p is not None)


def message_text(value: Any) -> str:
    """Text of a field that is a string or a chat message list (the last message's content)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return str(value.get("content", ""))
    if isinstance(value, Sequence) and value:
        return message_text(value[-1])
    return str(value)


def split_sizes(dataset) -> dict[str, int]:
    return {name: split.num_rows for name, split in dataset.items()}
