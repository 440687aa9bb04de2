"""The run loop: each stage of a recipe in order, skipped, resumed or run again as its fingerprint asks.

Each stage writes into ``run_dir/<stage>/`` and records its status, a fingerprint of everything its output depends on,
a hash of its outputs (with the sizes and modification times of their files) and its timing in
``run_dir/<stage>/stage.json`` and in ``run_dir/manifest.json``. A finished stage is skipped only while its outputs are
the ones it recorded; one whose output files were changed or deleted since runs again, and the stages after it follow
when its new outputs differ. A stage folder's other contents (checkpoints, ``final/``, results) are kept when they
were made with the same fingerprint; anything deleted is named in a warning first.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hf_cai.builders.sharding import FINGERPRINT_FILE, SHARDS_DIR, atomic_write_text, describe_changes
from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError, RecipeError
from hf_cai.pipeline.fingerprint import fingerprint_inputs
from hf_cai.pipeline.manifest import (
    STAGE_FILE,
    changed_outputs,
    hash_data,
    output_files,
    outputs_hash,
    read_stage_record,
    write_stage_record,
)
from hf_cai.pipeline.recipe import RecipeConfig, check_no_secrets
from hf_cai.pipeline.stages import STAGE_FUNCTIONS

logger = logging.getLogger(__name__)

_REUSABLE = (STAGE_FILE, SHARDS_DIR, FINGERPRINT_FILE)
"""Stage-folder entries kept whatever the fingerprint: the builders check their shards against their own."""
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "file too large", "os error 28", "os error 27")
_NEARLY_FULL_BYTES = 16 << 20


class Pipeline(RunContext):
    """Runs a :class:`RecipeConfig` in its run directory, skipping, resuming or re-running stages as needed."""

    def __init__(self, recipe: RecipeConfig):
        check_no_secrets(dataclasses.asdict(recipe), "recipe")
        super().__init__(recipe)

    # ---- fingerprints
    def fingerprint_inputs(self, stage: str) -> dict[str, Any]:
        """Everything ``stage``'s output depends on (see :func:`~hf_cai.pipeline.fingerprint.fingerprint_inputs`)."""
        return fingerprint_inputs(self, stage)

    def fingerprint(self, stage: str) -> str:
        """Hash of :meth:`fingerprint_inputs`: equal fingerprints mean equal outputs."""
        return hash_data(self.fingerprint_inputs(stage))

    # ---- running
    def run(self, *, from_stage: str | None = None, until: str | None = None) -> dict[str, StageResult]:
        """Run the recipe's stages (optionally only ``from_stage`` … ``until``) and return their results."""
        stages = self.recipe.stage_sequence()
        for bound, label in ((from_stage, "--from"), (until, "--until")):
            if bound is not None and bound not in stages:
                raise RecipeError(f"{label}: '{bound}' is not one of this recipe's stages: {', '.join(stages)}")
        start = stages.index(from_stage) if from_stage else 0
        stop = stages.index(until) + 1 if until else len(stages)
        self._check_prompts(stages[start:stop])
        self._check_benchmarks(stages[start:stop])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.run_dir / "recipe.yaml", yaml.safe_dump(dataclasses.asdict(self.recipe), sort_keys=False)
        )
        self.manifest.data["run"] = self._facts()
        self.manifest.save()
        results: dict[str, StageResult] = {}
        for index, stage in enumerate(stages):
            if index < start or index >= stop:
                continue
            results[stage] = self._run_stage(stage, force=from_stage == stage)
        return results

    def _facts(self) -> dict[str, Any]:
        """What publishing the run later needs to know: the base model's Hub id (when it is one) and the license."""
        base = self.base_model_hub_id()
        return {
            "base_model_id": None if Path(base).expanduser().exists() else base,
            "license": self.card_license(),
            "constitution": self.constitution.name,
        }

    def _check_prompts(self, stages: Sequence[str]) -> None:
        """Read the prompt sources the stages will read, so a bad file stops the run before any work."""
        from hf_cai.builders import load_prompts

        recipe = self.recipe
        sources = []
        if {"sl_data", "pref_data", "grpo", "eval"} & set(stages):
            sources.append(("prompts", recipe.prompts, recipe.prompt_column))
        helpful = recipe.sl_data.get("helpful_prompts", recipe.helpful_prompts)
        if helpful is not None and "sl_data" in stages:
            sources.append(("helpful_prompts", helpful, "prompt"))
        for key, source, column in sources:
            try:
                load_prompts(source, column=column)
            except (ValueError, FileNotFoundError, TypeError) as error:
                raise RecipeError(f"{key}: {error}") from error

    def _check_benchmarks(self, stages: Sequence[str]) -> None:
        """With ``eval.benchmarks``, that lm-eval is installed and knows the tasks, before training for hours."""
        from hf_cai.evaluation.benchmarks import BenchmarkConfig, task_manager

        config = BenchmarkConfig.from_settings(self.recipe.eval.get("benchmarks"))
        if "eval" in stages and config.enabled:
            try:
                task_manager(config)
            except (ImportError, ValueError) as error:
                raise RecipeError(f"eval.{error}" if str(error).startswith("benchmarks") else str(error)) from error

    def _run_stage(self, stage: str, *, force: bool) -> StageResult:
        record = self.manifest.stage(stage)
        inputs = self.fingerprint_inputs(stage)
        fingerprint = hash_data(inputs)
        directory = self.stage_dir(stage)
        if record.get("status") == "done" and record.get("fingerprint") == fingerprint and not force:
            stamps = record.get("output_files")
            changes = changed_outputs(self.run_dir, record)
            if not changes:
                if record.get("output_files") != stamps:  # touched or copied, same content: keep the new times
                    write_stage_record(directory, record)
                    self.manifest.save()
                logger.info("stage %s: up to date, skipped", stage)
                return StageResult(
                    outputs=record.get("outputs", {}), metrics=record.get("metrics", {}), notes=record.get("notes", [])
                )
            # Running it again beats failing: the stage remakes them from its shards or checkpoints, and the stages
            # computed from the recorded outputs stay up to date when they come out the same.
            logger.warning("stage %s: its outputs changed since it finished: %s; running it again", stage, changes)
        if record.get("fingerprint") not in (None, fingerprint):
            changes = describe_changes(record["inputs"], inputs) if "inputs" in record else "its fingerprint changed"
            logger.info("stage %s: %s; running it again", stage, changes)
        elif force and record.get("status") == "done":
            logger.info("stage %s: --from %s: running it again, reusing the work made with the same settings and "
                        "inputs (delete %s to start it from nothing)", stage, stage, directory)
        self._clear_stale_work(stage, directory, fingerprint)
        resumed = record.get("status") == "running" and record.get("fingerprint") == fingerprint
        logger.info("stage %s: %s", stage, "resuming" if resumed else "running")
        record.clear()
        record.update({"status": "running", "fingerprint": fingerprint, "inputs": inputs, "started": time.time(),
                       "resumed": resumed})
        directory.mkdir(parents=True, exist_ok=True)
        write_stage_record(directory, record)
        self.manifest.save()
        started = time.perf_counter()
        try:
            result = STAGE_FUNCTIONS[stage](self, directory)
        except Exception as error:
            reason = _out_of_space(error, directory)
            if reason is None:
                raise
            raise PipelineError(
                f"stage '{stage}': no space left while writing in {directory} ({reason}). Finished stages, dataset "
                "shards and complete checkpoints are kept; free some space on that disk and run the same command "
                "again to resume (an incomplete checkpoint is discarded then)."
            ) from error
        record.update(
            {
                "status": "done",
                "seconds": round(time.perf_counter() - started, 2),
                "outputs": result.outputs,
                "metrics": result.metrics,
                "notes": result.notes,
                "output_files": output_files(self.run_dir, result.outputs),
                "output_hash": outputs_hash(self.run_dir, result.outputs),
            }
        )
        write_stage_record(directory, record)
        self.manifest.save()
        return result

    def _clear_stale_work(self, stage: str, directory: Path, fingerprint: str) -> None:
        """Delete what the stage folder holds from other settings or inputs (checkpoints, ``final/``, results),
        naming it first; keep everything when it was made with ``fingerprint``, and keep dataset shards, which their
        builder checks itself."""
        if not directory.is_dir():
            return
        previous = read_stage_record(directory)
        if previous is not None and previous.get("fingerprint") == fingerprint:
            return
        stale = sorted(p for p in directory.iterdir() if p.name not in _REUSABLE)
        if not stale:
            return
        logger.warning(
            "stage %s: deleting %s in %s: %s",
            stage,
            ", ".join(p.name for p in stale),
            directory,
            "made with other settings or inputs" if previous else f"no {STAGE_FILE} tells which settings made them",
        )
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _out_of_space(error: BaseException, directory: Path) -> str | None:
    """Why ``error`` means the disk ran out of room, or ``None``. Libraries often re-raise write failures without the
    errno (``torch.save`` raises a bare ``RuntimeError``), so the messages and the free space are checked too."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE_ERRNOS:
            return seen.strerror or errno.errorcode.get(seen.errno, str(seen.errno))
        text = str(seen).lower()
        for marker in _NO_SPACE_TEXTS:
            if marker in text:
                return marker
        seen = seen.__cause__ or seen.__context__
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    return f"{free} bytes free" if free < _NEARLY_FULL_BYTES else None
