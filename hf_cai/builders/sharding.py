"""Resumable, sharded dataset building.

The prompts of a build are cut into fixed shards of ``shard_size`` consecutive prompts. Each finished shard is written
to ``<output_dir>/shards/shard-NNNNN.jsonl`` atomically (a temporary file, flushed and fsynced, then ``os.replace``),
so a process killed at any moment leaves only complete shards behind. ``<output_dir>/fingerprint.json`` records what
the shards were built from (builder, config, constitution, prompts, models); a rerun with the same fingerprint skips
the finished shards, and a rerun with a different one stops with an error instead of mixing data from two runs. Each
shard also starts with the sha256 of that fingerprint, so a shard is only ever reused by the build that made it.

Within a shard, every step (one batched ``generate`` or scoring call, e.g. the round-2 critiques of the shard's
prompts) is appended to ``shard-NNNNN.steps.jsonl`` and fsynced as soon as it returns. A build killed mid-shard
resumes after the last finished step, so a crash loses at most one step of one shard.

Builders seed each step from the global seed and the shard's position, so a shard computed after a resume is the
shard an uninterrupted run computes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hf_cai.backends.base import describe_backend, row_seed, stage_bar
from hf_cai.errors import HFCAIError, InputError

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
SHARDS_DIR = "shards"
DATASET_DIR = "dataset"
Record = dict[str, Any]
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


class FingerprintMismatchError(HFCAIError, ValueError):
    """An output folder holds shards of a different build (other config, constitution, prompts or model)."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the complete new one, even after a
    power cut: a uniquely named temporary file beside it is written, fsynced and renamed over it, and the rename is
    made durable by fsyncing the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _unique_name(path)
    # os.open with 0o666 keeps the user's umask (mkstemp would make the file private).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _unique_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique across processes and threads, starting with ``.<name>.``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def _fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then every folder from the deepest up, so that renaming ``folder`` into
    place publishes contents that are already on disk."""
    folders = [folder]
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            folders.append(path)
        elif path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for each in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        _fsync_folder(each)


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms (Windows); the rename is still atomic there
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def model_fingerprint(backend: Any) -> dict[str, Any]:
    """What identifies the model behind ``backend``: its identity, with a local folder identified by what it holds
    rather than where it is, so a moved or copied output folder (say, to a bigger disk) keeps its shards.

    A PEFT adapter folder counts by the sha256 of its files (it is small, and retrained in place); a full model
    folder by its config and the names, sizes and modification times of its weight files, which any rewrite changes,
    since hashing gigabytes of weights on every build would cost more than it protects.
    """
    identity = describe_backend(backend)
    for key in ("model", "adapter"):
        value = identity.get(key)
        if not isinstance(value, str) or not Path(value).is_dir():
            continue
        folder = Path(value)
        identity[key] = folder.name
        if (folder / "adapter_config.json").is_file():
            identity[f"{key}_sha256"] = _files_sha256(folder, _ADAPTER_FILES)
        else:
            identity[f"{key}_files"] = _weights_stamp(folder)
    return identity


def _files_sha256(folder: Path, names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in names:
        file = folder / name
        if file.is_file():
            digest.update(name.encode() + b"\0")
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _weights_stamp(folder: Path) -> str:
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for file in sorted(folder.iterdir()):
        if file.suffix in _WEIGHT_SUFFIXES and file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def save_dataset(dataset, output_dir: str | Path) -> Path:
    """Save ``dataset`` to ``output_dir/dataset``, replacing an earlier one only once the new one is complete and on
    disk: its files and folders are fsynced before the rename that puts it in place, and the rename after it."""
    target = Path(output_dir) / DATASET_DIR
    staging = _unique_name(target)
    try:
        dataset.save_to_disk(str(staging))
        _fsync_tree(staging)
        if target.exists():
            logger.debug("replacing the earlier dataset in %s", target)
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_folder(target.parent)
    return target


def check_split_and_shards(test_size: float, shard_size: int) -> None:
    """Raise ``ValueError`` unless ``0 <= test_size < 1`` (the held-out fraction) and ``shard_size >= 1``."""
    if not 0 <= test_size < 1:
        raise InputError(f"test_size must be in [0, 1), got {test_size}")
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")


def shard_ranges(count: int, shard_size: int) -> list[range]:
    """Consecutive index ranges of at most ``shard_size`` covering ``range(count)``."""
    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    return [range(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


class ShardStore:
    """The finished shards of one build in ``output_dir``, and the finished steps of its unfinished shards.

    Args:
        output_dir: Folder of the build; created when missing.
        fingerprint: JSON-serialisable description of everything the shards depend on.
        overwrite: When the folder holds shards of a different fingerprint, delete them (and say so in the log)
            instead of raising :class:`FingerprintMismatchError`.
    """

    def __init__(self, output_dir: str | Path, fingerprint: Mapping[str, Any], *, overwrite: bool = False):
        self.output_dir = Path(output_dir)
        self.shards_dir = self.output_dir / SHARDS_DIR
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        self.sha256 = hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()
        fingerprint_path = self.output_dir / FINGERPRINT_FILE
        existing = self._read_fingerprint(fingerprint_path)
        built = sorted(self.shards_dir.glob("shard-*.jsonl")) if self.shards_dir.is_dir() else []
        if (existing is not None and existing != self.fingerprint) or (existing is None and built):
            if not overwrite:
                raise FingerprintMismatchError(self._mismatch_message(existing))
            logger.warning(
                "deleting %d shard files in %s: they were built from other settings (%s)",
                len(built),
                self.shards_dir,
                self._changes(existing),
            )
            shutil.rmtree(self.shards_dir, ignore_errors=True)
        atomic_write_text(fingerprint_path, json.dumps(self.fingerprint, indent=2, sort_keys=True) + "\n")
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        leftovers = list(self.shards_dir.glob(".shard-*"))
        if leftovers:
            logger.info("removing %d temporary files of interrupted writes in %s", len(leftovers), self.shards_dir)
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)

    def path(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:05d}.jsonl"

    def steps_path(self, index: int) -> Path:
        return self.shards_dir / f"shard-{index:05d}.steps.jsonl"

    def load(self, index: int, indices: range) -> list[Record | None] | None:
        """The records of shard ``index`` when it is complete, made by this build and covers ``indices``; ``None``
        otherwise."""
        path = self.path(index)
        if not path.is_file():
            return None
        try:
            text = path.read_text(encoding="utf-8")
            header, *lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (json.JSONDecodeError, ValueError):
            logger.warning("shard %s is unreadable; building it again", path)
            return None
        if not isinstance(header, dict) or header.get("fingerprint") != self.sha256:
            logger.warning("shard %s was built from other settings; building it again", path)
            return None
        if [line.get("index") for line in lines] != list(indices):
            logger.warning("shard %s does not cover prompts %d-%d; building it again", path, indices.start, indices.stop - 1)
            return None
        return [line["record"] for line in lines]

    def save(self, index: int, indices: range, records: list[Record | None]) -> None:
        header = json.dumps({"fingerprint": self.sha256, "shard": index, "prompts": [indices.start, indices.stop]})
        lines = [
            json.dumps({"index": i, "record": record}, ensure_ascii=False, sort_keys=True)
            for i, record in zip(indices, records)
        ]
        atomic_write_text(self.path(index), "\n".join([header, *lines]) + "\n")
        # The shard holds everything its steps did; a leftover steps file would only be ignored.
        self.steps_path(index).unlink(missing_ok=True)

    def steps(self, index: int) -> ShardSteps:
        """The step log of shard ``index``, holding the steps an interrupted build already finished."""
        return ShardSteps(self.steps_path(index), self.sha256)

    def _read_fingerprint(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {"unreadable": str(path)}

    def _changes(self, existing: dict[str, Any] | None) -> str:
        if existing is None:
            return "the folder has shards but no fingerprint.json"
        return describe_changes(existing, self.fingerprint)

    def _mismatch_message(self, existing: dict[str, Any] | None) -> str:
        return (
            f"{self.output_dir} holds shards of a different build ({self._changes(existing)}). Use another "
            "output_dir to keep them, or pass overwrite=True (CLI: --overwrite) to discard them; shards of two builds "
            "are never mixed."
        )


class ShardSteps:
    """The finished steps of one shard in progress: an append-only JSON-lines file, fsynced after every step.

    Without a path (an in-memory build) steps simply run. A line cut short by a kill is dropped on reading; lines
    written by another build (another fingerprint) are ignored.
    """

    def __init__(self, path: Path | None = None, fingerprint: str = ""):
        self.path = path
        self.fingerprint = fingerprint
        self.done: dict[str, Any] = {}
        self.progress: Any = None
        """A tqdm bar counting prompt-steps, whose postfix names the step being computed (set by :func:`run_shards`)."""
        self.label = ""
        """The shard, as the bar's postfix names it (``"shard 2/5"``)."""
        self.prompts = 0
        """The shard's prompts: what a step counts on the bar unless it says otherwise."""
        if path is not None and path.is_file():
            self._read()

    def run(self, step: str, compute: Callable[[], Any], *, prompts: int | None = None) -> Any:
        """The result of ``step``: recorded by an earlier, interrupted build, or ``compute()`` (then recorded). The
        bar advances by the step's ``prompts`` (the shard's prompts when ``None``) once it is done."""
        if step in self.done:
            value = self.done[step]
        else:
            if self.progress is not None:
                self.progress.set_postfix_str(f"{self.label}: {step}" if self.label else step)
            value = compute()
            if self.path is not None:
                line = json.dumps({"fingerprint": self.fingerprint, "step": step, "value": value}, ensure_ascii=False)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            self.done[step] = value
        if self.progress is not None:
            self.progress.update(self.prompts if prompts is None else prompts)
        return value

    def _read(self) -> None:
        valid: list[str] = []
        lines = self.path.read_text(encoding="utf-8").split("\n")
        complete, tail = lines[:-1], lines[-1]
        for line in complete:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(entry, dict) and entry.get("fingerprint") == self.fingerprint and "step" in entry:
                self.done[entry["step"]] = entry["value"]
                valid.append(line)
        if tail or len(valid) != len(complete):
            logger.warning(
                "%s: dropping %d lines cut short by an interruption or written by another build",
                self.path.name,
                len(complete) + bool(tail) - len(valid),
            )
            # Appending after a torn line would make the next steps unreadable: keep only the good ones.
            atomic_write_text(self.path, "".join(line + "\n" for line in valid))
        if self.done:
            logger.info("%s: reusing %d finished steps (%s)", self.path.name, len(self.done), ", ".join(self.done))


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], *, limit: int = 6) -> str:
    """``changed: config.rounds: 1 -> 2, prompts_sha256`` — the leaves that differ between two nested mappings
    (hashes by name only), at most ``limit`` of them."""
    before, after = _flatten(old), _flatten(new)
    keys = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    shown = []
    for key in keys[:limit]:
        was, now = before.get(key), after.get(key)
        shown.append(key if _is_digest(was) or _is_digest(now) else f"{key}: {was!r} -> {now!r}")
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"changed: {', '.join(shown)}{more}" if keys else "no setting changed"


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


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
    build_shard: Callable[[int, range, ShardSteps], list[Record | None]],
    store: ShardStore | None,
    *,
    description: str,
    shard_work: Callable[[range], int] | None = None,
) -> list[Record | None]:
    """Records for ``range(count)``: loaded for finished shards, built (and saved) for the others, in order.

    ``build_shard(shard_index, indices, steps)`` returns one record per index (``None`` for a prompt that yields no
    row), running each of its batched calls through ``steps.run(name, compute)`` so that a resumed build replays the
    steps an interrupted one finished. The build's bar counts prompt-steps (a step of ten prompts is ten), so it
    moves, with an estimate of the time left, as each step finishes: ``shard_work(indices)`` is the prompt-steps of
    the shard over ``indices`` (its prompts, one step each, when ``None``).
    """
    ranges = shard_ranges(count, shard_size)
    work = [shard_work(indices) if shard_work is not None else len(indices) for indices in ranges]
    loaded = {index: store.load(index, indices) for index, indices in enumerate(ranges)} if store else {}
    finished = [index for index, records in loaded.items() if records is not None]
    if finished:
        logger.info("resuming: %d of %d shards already built in %s", len(finished), len(ranges), store.output_dir)
    expected = sum(work[index] for index in finished)
    records: list[Record | None] = []
    # The build's one bar: it names the shard and step running (backends show no bar of their own beneath another
    # one), and goes once the build is done, leaving the builder's summary line.
    with stage_bar(total=sum(work), initial=expected, desc=description, unit="prompt-step", leave=False) as bar:
        for index, indices in enumerate(ranges):
            shard = loaded.get(index)
            if shard is None:
                steps = store.steps(index) if store is not None else ShardSteps()
                steps.progress, steps.label, steps.prompts = bar, f"shard {index + 1}/{len(ranges)}", len(indices)
                shard = build_shard(index, indices, steps)
                if len(shard) != len(indices):
                    raise RuntimeError(f"shard {index} built {len(shard)} records for {len(indices)} prompts")
                if store is not None:
                    store.save(index, indices, shard)
                expected += work[index]
                if bar.n != expected:  # a shard whose steps counted otherwise than shard_work said
                    bar.n = expected
                    bar.refresh()
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


def messages_feature() -> list:
    """The ``datasets`` feature of a column of chat messages (a list of ``{"role", "content"}``)."""
    from datasets import Value

    return [{"role": Value("string"), "content": Value("string")}]


def records_to_dataset(records: list[Record], features):
    """A ``datasets.Dataset`` of ``records`` with the given features (also when there are no records).

    Its fingerprint is derived from the rows (``datasets`` would draw a random one), so the same records always
    save to the same bytes: a dataset reassembled from its shards keeps the output hash the pipeline recorded.
    """
    from datasets import Dataset

    columns = {name: [record[name] for record in records] for name in features}
    built = Dataset.from_dict(columns, features=features)
    content = json.dumps(columns, sort_keys=True, ensure_ascii=False, default=str).encode()
    return Dataset(built.data, info=built.info, fingerprint=hashlib.sha256(content).hexdigest()[:16])
