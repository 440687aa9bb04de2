"""Resumable, sharded dataset building.

The prompts of a build are cut into fixed shards of ``shard_size`` consecutive prompts. Each finished shard is written
to ``<output_dir>/shards/shard-NNNNN.jsonl`` atomically (a temporary file, flushed and fsynced, then ``os.replace``),
so a process killed at any moment leaves only complete shards behind. ``<output_dir>/fingerprint.json`` records what
the shards were built from (builder, config, constitution, prompts, models); a rerun with the same fingerprint skips
the finished shards, and a rerun with a different one stops with an error instead of mixing data from two runs.

Builders seed each shard from the global seed and the shard's position, so a shard computed after a resume is the
shard an uninterrupted run computes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hf_cai.backends.base import row_seed

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
SHARDS_DIR = "shards"
DATASET_DIR = "dataset"
Record = dict[str, Any]


class FingerprintMismatchError(ValueError):
    """An output folder holds shards of a different build (other config, constitution, prompts or model)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def shard_ranges(count: int, shard_size: int) -> list[range]:
    """Consecutive index ranges of at most ``shard_size`` covering ``range(count)``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [range(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


class ShardStore:
    """The finished shards of one build in ``output_dir``.

    Args:
        output_dir: Folder of the build; created when missing.
        fingerprint: JSON-serialisable description of everything the shards depend on.
        overwrite: When the folder holds shards of a different fingerprint, delete them instead of raising
            :class:`FingerprintMismatchError`.
    """

    def __init__(self, output_dir: str | Path, fingerprint: Mapping[str, Any], *, overwrite: bool = False):
        self.output_dir = Path(output_dir)
        self.shards_dir = self.output_dir / SHARDS_DIR
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        fingerprint_path = self.output_dir / FINGERPRINT_FILE
        existing = self._read_fingerprint(fingerprint_path)
        has_shards = self.shards_dir.is_dir() and any(self.shards_dir.glob("shard-*.jsonl"))
        if (existing is not None and existing != self.fingerprint) or (existing is None and has_shards):
            if not overwrite:
                raise FingerprintMismatchError(self._mismatch_message(existing))
            logger.warning("discarding the shards in %s: they were built from a different configuration", self.output_dir)
            shutil.rmtree(self.shards_dir, ignore_errors=True)
        atomic_write_text(fingerprint_path, json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n")
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.shards_dir.glob(".shard-*.tmp-*"):
            leftover.unlink(missing_ok=True)

    def path(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:05d}.jsonl"

    def load(self, index: int, indices: range) -> list[Record | None] | None:
        """The records of shard ``index`` when it is complete and covers ``indices``; ``None`` otherwise."""
        path = self.path(index)
        if not path.is_file():
            return None
        try:
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except json.JSONDecodeError:
            logger.warning("shard %s is unreadable; building it again", path)
            return None
        if [line.get("index") for line in lines] != list(indices):
            logger.warning("shard %s does not cover prompts %d-%d; building it again", path, indices.start, indices.stop - 1)
            return None
        return [line["record"] for line in lines]

    def save(self, index: int, indices: range, records: list[Record | None]) -> None:
        lines = [
            json.dumps({"index": i, "record": record}, ensure_ascii=False, sort_keys=True)
            for i, record in zip(indices, records)
        ]
        atomic_write_text(self.path(index), "\n".join(lines) + "\n")

    def _read_fingerprint(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {"unreadable": str(path)}

    def _mismatch_message(self, existing: dict[str, Any] | None) -> str:
        if existing is None:
            changed = "it has shards but no fingerprint.json"
        else:
            old, new = _flatten(existing), _flatten(self.fingerprint)
            keys = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
            shown = ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys[:6])
            more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
            changed = f"changed: {shown}{more}"
        return (
            f"{self.output_dir} holds shards of a different build ({changed}). Use another output_dir to keep them, "
            "or pass overwrite=True (CLI: --overwrite) to discard them; shards of two builds are never mixed."
        )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def run_shards(
    count: int,
    shard_size: int,
    build_shard: Callable[[int, range], list[Record | None]],
    store: ShardStore | None,
    *,
    description: str,
) -> list[Record | None]:
    """Records for ``range(count)``: loaded for finished shards, built (and saved) for the others, in order.

    ``build_shard(shard_index, indices)`` returns one record per index (``None`` for a prompt that yields no row).
    """
    ranges = shard_ranges(count, shard_size)
    loaded = {index: store.load(index, indices) for index, indices in enumerate(ranges)} if store else {}
    done = sum(records is not None for records in loaded.values())
    if done:
        logger.info("resuming: %d of %d shards already built in %s", done, len(ranges), store.output_dir)
    records: list[Record | None] = []
    with tqdm(total=len(ranges), initial=done, desc=description, unit="shard") as bar:
        for index, indices in enumerate(ranges):
            shard = loaded.get(index)
            if shard is None:
                shard = build_shard(index, indices)
                if len(shard) != len(indices):
                    raise RuntimeError(f"shard {index} built {len(shard)} records for {len(indices)} prompts")
                if store is not None:
                    store.save(index, indices, shard)
                bar.update()
            records.extend(shard)
    return records


def held_out_indices(count: int, test_size: float, seed: int) -> set[int]:
    """The prompt indices held out for testing: a seeded draw of ``round(test_size * count)`` (at least one when
    ``test_size > 0`` and there are two or more prompts)."""
    if test_size <= 0 or count < 2:
        return set()
    size = min(count - 1, max(1, round(test_size * count)))
    order = list(range(count))
    random.Random(row_seed(seed, "test-split")).shuffle(order)
    return set(order[:size])


def records_to_dataset(records: list[Record], features):
    """A ``datasets.Dataset`` of ``records`` with the given features (also when there are no records)."""
    from datasets import Dataset

    return Dataset.from_dict({name: [record[name] for record in records] for name in features}, features=features)
