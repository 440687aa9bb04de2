"""SL-CAI data: initial replies, then critique → revision rounds with the base model, each row checked by the quality
gates (:mod:`hf_cai.builders.quality_gates`).

The builder keeps the gates' findings two ways: a ``quality_flags`` column in every split (empty for a row that
passed) and ``quality.json`` beside the dataset (the counts, kept share and examples over both SFT splits, and per
split); this stage adds them to the manifest as its ``quality`` figures and notes. The gates never stop this stage:
the ``sft`` stage, whose trainer trains on the kept rows, is the one that stops when too few are left, so the data
made here is kept for a rerun.
"""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.backends import generation_backend
from hf_cai.pipeline.stages.prompts import recipe_prompts


def run_sl_data(context: RunContext, directory: Path) -> StageResult:
    """SL-CAI: initial replies, then critique → revision rounds with the base model; then the quality gates."""
    from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig
    from hf_cai.builders.quality_gates import QUALITY_FILE, QualityGateConfig

    recipe = context.recipe
    config = CritiqueRevisionConfig(**{"seed": recipe.seed, "helpful_prompts": recipe.helpful_prompts,
                                       "max_prompts": recipe.max_prompts or None, **recipe.sl_data})
    gates = QualityGateConfig(**recipe.sl_quality)
    builder = CritiqueRevisionBuilder(generation_backend(context), context.constitution, config, quality=gates)
    # The stage owns its folder: shards of other settings are replaced (the builder logs which).
    dataset = builder.build(recipe_prompts(context), output_dir=directory, overwrite=True)
    overall = dataset.quality.sft
    return StageResult(
        outputs={"dataset": context.relative(directory / "dataset"), "quality": context.relative(directory / QUALITY_FILE)},
        metrics={"rows": overall.total, "quality": overall.counts},
        notes=overall.summary_lines(),
    )
