"""The record of a run: ``manifest.json`` (the index of the run) and ``stage.json`` in each stage folder, with the
hashes that tell whether a stage's outputs are still the ones it recorded.

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


def hash_path(path: Path, *, exclude: Sequence[str] = ("checkpoint-", "cache-")) -> str:
    """sha256 over the relative names and contents of the files under ``path``, leaving out training checkpoints
    and the ``cache-*.arrow`` files that ``datasets`` adds beside a saved dataset when a later stage reads it."""
    digest = hashlib.sha256()
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.relative_to(path).as_posix() if path.is_dir() else file.name
        if any(part.startswith(tuple(exclude)) for part in Path(relative).parts):
            continue
        digest.update(relative.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Manifest:
    """``manifest.json`` of a run: the run's facts and, per stage, the record its ``stage.json`` also holds (status,
    fingerprint and what it was computed from, outputs, output hash, figures, timing).

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
            if record.get("status") == "done" and not _outputs_intact(run_dir, record):
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


def _outputs_intact(run_dir: Path, record: Mapping[str, Any]) -> bool:
    outputs = record.get("outputs") or {}
    return all((run_dir / v).exists() for v in outputs.values()) and record.get("output_hash") == outputs_hash(
        run_dir, outputs
    )


def outputs_hash(run_dir: Path, outputs: Mapping[str, str]) -> str:
    """Hash of a stage's outputs (paths relative to ``run_dir``), as recorded in its ``output_hash``."""
    return hash_data({k: hash_path(run_dir / v) for k, v in sorted(outputs.items())})


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
