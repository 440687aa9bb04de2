"""The CAI pipeline: from prompts to a published, evaluated model in one resumable run.

Stages run in order ``sl_data → sft → pref_data → dpo`` (or ``pref_data → reward → grpo``), then
``eval → card → publish → space``. Each stage writes into ``run_dir/<stage>/`` and records its status, a fingerprint
of everything its output depends on, a hash of its outputs and its timing in ``run_dir/<stage>/stage.json`` and in
``run_dir/manifest.json``, the index of the run. On a rerun:

* a finished stage whose fingerprint is unchanged is skipped;
* an interrupted stage resumes (dataset shards, finished generation steps and training checkpoints are reused);
* a stage whose output would change runs again, and so does every stage after it, because their inputs are the
  outputs that changed. Settings that only change how a stage reports or where it keeps copies
  (:data:`OUTPUT_NEUTRAL_KEYS`) are left out of the fingerprint and never cause a re-run.

A re-run keeps what it can reuse: the dataset builders check their shards against their own fingerprint, and a stage
folder's other contents (checkpoints, ``final/``, results) are kept when they were made with the same fingerprint.
Anything deleted is named in a warning first. Both files are written atomically; a manifest that cannot be read is
rebuilt from the ``stage.json`` files, each checked against the outputs it names.

Stages call the library (builders, trainers, evaluation, hub); they do not re-implement it.

Modules: :mod:`~hf_cai.pipeline.recipe` (what a recipe holds and how it is read), :mod:`~hf_cai.pipeline.manifest`
(the record of a run), :mod:`~hf_cai.pipeline.fingerprint` (what each stage's output depends on),
:mod:`~hf_cai.pipeline.context` (what stages share), :mod:`~hf_cai.pipeline.stages` (one module per stage),
:mod:`~hf_cai.pipeline.runner` (the run loop) and :mod:`~hf_cai.pipeline.summary` (the table printed at the end).
"""

from __future__ import annotations

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.errors import PipelineError, RecipeError
from hf_cai.pipeline.manifest import Manifest, recorded_run
from hf_cai.pipeline.recipe import OUTPUT_NEUTRAL_KEYS, RecipeConfig, check_no_secrets, load_recipe
from hf_cai.pipeline.runner import Pipeline
from hf_cai.pipeline.summary import format_summary

__all__ = [
    "OUTPUT_NEUTRAL_KEYS",
    "Manifest",
    "Pipeline",
    "PipelineError",
    "RecipeConfig",
    "RecipeError",
    "RunContext",
    "StageResult",
    "check_no_secrets",
    "format_summary",
    "load_recipe",
    "recorded_run",
]
