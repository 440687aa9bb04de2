"""SL-CAI data: initial replies, then critique → revision rounds with the base model, each row checked by the quality
gates (:mod:`hf_cai.builders.quality_gates`).

The gates' findings are kept three ways: a ``quality_flags`` column in every split (empty for a row that passed),
``quality.json`` beside the dataset (the counts, kept share and examples over both SFT splits, and per split), and
the stage's ``quality`` figures and notes in the manifest. The gates never stop this stage: the ``sft`` stage, which trains on the
kept rows, is the one that stops when too few are left, so the data made here is kept for a rerun.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.backends import generation_backend
from hf_cai.pipeline.stages.prompts import training_prompts

QUALITY_FILE = "quality.json"
"""The gates' record, in the stage folder beside ``dataset/``: ``QualityGateResult.to_dict()`` of ``train_sft`` and
``test_sft`` together (the rows the stage's figures and notes count), and under ``"splits"`` the same per split."""
QUALITY_COLUMN = "quality_flags"
"""Column of every split: the row's quality flags, ordered as ``QUALITY_FLAGS`` (``[]``: the row passed)."""
SFT_SPLITS = ("train_sft", "test_sft")


def run_sl_data(context: RunContext, directory: Path) -> StageResult:
    """SL-CAI: initial replies, then critique → revision rounds with the base model; then the quality gates."""
    from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig
    from hf_cai.builders.quality_gates import QualityGateConfig
    from hf_cai.builders.sharding import atomic_write_text, save_dataset

    recipe = context.recipe
    config = CritiqueRevisionConfig(**{"seed": recipe.seed, "helpful_prompts": recipe.helpful_prompts, **recipe.sl_data})
    gates = QualityGateConfig(**recipe.sl_quality)
    builder = CritiqueRevisionBuilder(generation_backend(context), context.constitution, config)
    # The stage owns its folder: shards of other settings are replaced (the builder logs which).
    dataset = builder.build(training_prompts(context), output_dir=directory, overwrite=True)
    # The builder has saved the dataset; the gates' record is written before the dataset is saved again with its
    # flags, so that whatever fails after this point, the rows and what the gates found are both on disk.
    results = gate_splits(dataset, context.constitution, gates)
    overall = sft_result(results, gates)
    record = {**overall.to_dict(), "splits": {name: result.to_dict() for name, result in results.items()}}
    quality_path = directory / QUALITY_FILE
    atomic_write_text(quality_path, json.dumps(record, indent=2) + "\n")
    save_dataset(with_quality_flags(dataset, results), directory)
    return StageResult(
        outputs={"dataset": context.relative(directory / "dataset"), "quality": context.relative(quality_path)},
        metrics={"rows": overall.total, "quality": overall.counts},
        notes=overall.summary_lines(),
    )


def gate_splits(dataset, constitution, gates) -> dict[str, Any]:
    """``{split: QualityGateResult}`` for every split of the SL-CAI ``dataset``."""
    from hf_cai.builders.quality_gates import gate_sl_dataset

    return {name: gate_sl_dataset(split, constitution, gates) for name, split in dataset.items()}


def sft_result(results: dict[str, Any], gates):
    """One ``QualityGateResult`` for the SFT splits together (the rows the stage's ``rows`` counts)."""
    from hf_cai.builders.quality_gates import QualityGateResult

    sft = [results[name] for name in SFT_SPLITS if name in results]
    examples: dict[str, tuple[str, str]] = {}
    for result in reversed(sft):  # the training split's examples first
        examples.update(result.examples)
    return QualityGateResult(flags=[flags for result in sft for flags in result.flags], config=gates, examples=examples)


def with_quality_flags(dataset, results: dict[str, Any]):
    """``dataset`` with the :data:`QUALITY_COLUMN` of each split (a column of lists of strings, also when empty).

    Each split's fingerprint is derived from its previous one and the flags, so the same rows and flags always save
    to the same bytes and a rerun keeps the output hash the pipeline recorded.
    """
    from datasets import DatasetDict, Value

    flagged = {}
    for name, split in dataset.items():
        flags = results[name].flags
        fingerprint = hashlib.sha256(f"{split._fingerprint}\0{json.dumps(flags)}".encode()).hexdigest()[:16]
        if QUALITY_COLUMN in split.column_names:
            split = split.remove_columns(QUALITY_COLUMN)
        flagged[name] = split.add_column(QUALITY_COLUMN, flags, feature=[Value("string")], new_fingerprint=fingerprint)
    return DatasetDict(flagged)
