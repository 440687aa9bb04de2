"""The record of a run: ``manifest.json`` (the index of the run) and ``stage.json`` in each stage folder, with the
hashes (and the files' sizes and times, to check them cheaply) that tell whether a stage's outputs are still the ones it
recorded.

Both files are written atomically; a manifest that cannot be read is rebuilt from the ``stage.json`` files, each
checked against the outputs it names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_cai.builders.sharding import atomic_write_text
from hf_cai.pipeline.errors import PipelineError
from hf_cai.pipeline.recipe import ALL_STAGES

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
STAGE_FILE = "stage.json"
MANIFEST_FORMAT = 2
"""Format of ``manifest.json`` and ``stage.json``. Format 1 (no ``format`` key) had no per-stage records."""


def hash_data(value: Any) -> str:
    """sha256 of JSON-serialisable data in canonical form."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


_NOT_HASHED = ("checkpoint-", "cache-")
"""Output entries left out of the hash: training checkpoints, and the ``cache-*.arrow`` files that ``datasets`` adds
beside a saved dataset when a later stage reads it."""


def hash_path(path: Path, *, exclude: Sequence[str] = _NOT_HASHED) -> str:
    """sha256 over the relative names and contents of the files under ``path`` (``path`` itself when it is a file),
    leaving out the entries whose names start with one of ``exclude``."""
    digest = hashlib.sha256()
    if not path.exists():
        return ""
    for relative, file in _hashed_files(path, exclude):
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _hashed_files(path: Path, exclude: Sequence[str] = _NOT_HASHED) -> list[tuple[str, Path]]:
    """The files :func:`hash_path` reads under ``path``, each with the name it hashes, in the order it reads them."""
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = [(file.relative_to(path).as_posix(), file) for file in sorted(path.rglob("*")) if file.is_file()]
    else:
        return []
    return [(name, file) for name, file in files if not any(part.startswith(tuple(exclude)) for part in name.split("/"))]


class Manifest:
    """``manifest.json`` of a run: the run's facts and, per stage, the record its ``stage.json`` also holds (status,
    fingerprint and what it was computed from, outputs, output hash and files, figures, timing).

    Written atomically (unique temporary file, fsync, rename). A manifest that cannot be read is rebuilt from the
    stage folders: a stage counts as done only when its recorded outputs still hash to the recorded value, and one
    whose outputs changed resumes. The unreadable file is kept beside it.

    Raises:
        PipelineError: the run directory comes from another format of hf_cai, or the manifest is unreadable and a
            stage folder holds work without a ``stage.json`` to tell what it is.
    """

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"format": MANIFEST_FORMAT, "run": {}, "stages": {}}
        if path.is_file():
            self.data = self._read()

    def stage(self, name: str) -> dict[str, Any]:
        """The record of stage ``name``, created as ``pending`` when the run has none yet."""
        return self.data["stages"].setdefault(name, {"status": "pending"})

    def save(self) -> None:
        """Write the manifest, atomically."""
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return self._rebuild(f"it is not valid JSON ({error})")
        stages = data.get("stages") if isinstance(data, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(r, dict) and "status" in r for r in stages.values()):
            return self._rebuild("it does not hold the stages of a run")
        found = data.get("format", 1)
        if found != MANIFEST_FORMAT:
            newer = isinstance(found, int) and found > MANIFEST_FORMAT
            raise PipelineError(
                f"{self.path.parent} was written by {'a newer' if newer else 'an older'} version of hf_cai (run "
                f"directory format {found}; this version reads format {MANIFEST_FORMAT}), so its stages cannot be "
                "checked against this version's fingerprints. "
                + (
                    "Upgrade hf_cai to continue it."
                    if newer
                    else "Set run_dir to a new folder to run the recipe again; the old folder stays as it is, and its "
                    "datasets and final models can still be published (hf-cai publish) or trained on."
                )
            )
        data.setdefault("run", {})
        return data

    def _rebuild(self, reason: str) -> dict[str, Any]:
        """A manifest made from the ``stage.json`` records of the stage folders, each checked against its outputs."""
        run_dir = self.path.parent
        stages: dict[str, Any] = {}
        for name in ALL_STAGES:
            folder = run_dir / name
            if not folder.is_dir() or not any(folder.iterdir()):
                continue
            record = read_stage_record(folder)
            if record is None:
                raise PipelineError(
                    f"{self.path} is unreadable ({reason}), and {folder} holds work without a {STAGE_FILE} to tell "
                    f"which settings made it (a run directory of an older hf_cai?). Set run_dir to a new folder, or "
                    f"delete {folder} so that the stage runs again."
                )
            if record.get("status") == "done" and changed_outputs(run_dir, record):
                record["status"] = "running"  # its outputs changed since: resume it with what is there
            stages[name] = record
        kept = self.path.with_name(f"{self.path.stem}.unreadable-{int(time.time())}.json")
        self.path.replace(kept)
        summary = ", ".join(f"{name} {record['status']}" for name, record in stages.items()) or "no stage yet"
        logger.warning(
            "%s was unreadable (%s); moved it to %s and rebuilt it from the stage folders: %s",
            self.path, reason, kept.name, summary,
        )
        self.data = {"format": MANIFEST_FORMAT, "run": {}, "stages": stages}
        self.save()
        return self.data


def read_stage_record(folder: Path) -> dict[str, Any] | None:
    """The record in ``folder/stage.json``, or ``None`` when there is none or it is unreadable."""
    path = folder / STAGE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT or "status" not in record:
        return None
    record.pop("format")
    return record


def write_stage_record(folder: Path, record: Mapping[str, Any]) -> None:
    """Write ``record`` to ``folder/stage.json``, atomically."""
    atomic_write_text(folder / STAGE_FILE, json.dumps({"format": MANIFEST_FORMAT, **record}, indent=2) + "\n")


def outputs_hash(run_dir: Path, outputs: Mapping[str, str]) -> str:
    """Hash of a stage's outputs (paths relative to ``run_dir``), as recorded in its ``output_hash``."""
    return hash_data({k: hash_path(run_dir / v) for k, v in sorted(outputs.items())})


def output_files(run_dir: Path, outputs: Mapping[str, str]) -> dict[str, list[int]]:
    """``[size, modification time in ns]`` of each file that :func:`outputs_hash` reads, by its path relative to
    ``run_dir``, as recorded in a stage's ``output_files``: what tells cheaply whether the outputs may have changed."""
    files = {}
    for output in sorted(set(outputs.values())):
        for _, file in _hashed_files(run_dir / output):
            stat = file.stat()
            files[file.relative_to(run_dir).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return files


def changed_outputs(run_dir: Path, record: dict[str, Any], *, limit: int = 6) -> str:
    """What changed in a finished stage's outputs since it recorded them (``""``: nothing).

    The sizes and modification times of the files are compared with the record's ``output_files``; only when they
    differ are the outputs hashed again. Files that were only touched or copied (same content, so the same
    ``output_hash``) are not a change: the record takes their new sizes and times.
    """
    outputs = record.get("outputs") or {}
    missing = sorted(output for output in set(outputs.values()) if not (run_dir / output).exists())
    if missing:
        return ", ".join(f"{output} (missing)" for output in missing)
    recorded, current = record.get("output_files"), output_files(run_dir, outputs)
    if current == recorded:
        return ""
    if outputs_hash(run_dir, outputs) == record.get("output_hash"):
        record["output_files"] = current
        return ""
    if recorded is None:  # recorded before hf_cai kept the files' sizes and times
        return f"{', '.join(sorted(set(outputs.values())))} no longer hash to the recorded output_hash"
    changes = [
        f"{name} ({'missing' if name not in current else 'new' if name not in recorded else 'rewritten'})"
        for name in sorted(recorded.keys() | current.keys())
        if recorded.get(name) != current.get(name)
    ]
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more


def recorded_run(run_dir: str | Path) -> dict[str, Any]:
    """What a run directory's manifest records about the run (``base_model_id``, ``license``); empty when it has
    no readable manifest of this format."""
    try:
        data = json.loads((Path(run_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("run"), dict):
        return {}
    return data["run"]
