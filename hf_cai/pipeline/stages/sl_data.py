"""SL-CAI data: initial replies, then critique → revision rounds with the base model."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.backends import generation_backend
from hf_cai.pipeline.stages.prompts import training_prompts


def run_sl_data(context: RunContext, directory: Path) -> StageResult:
    """SL-CAI: initial replies, then critique → revision rounds with the base model."""
    from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig

    recipe = context.recipe
    config = CritiqueRevisionConfig(**{"seed": recipe.seed, "helpful_prompts": recipe.helpful_prompts, **recipe.sl_data})
    builder = CritiqueRevisionBuilder(generation_backend(context), context.constitution, config)
    # The stage owns its folder: shards of other settings are replaced (the builder logs which).
    dataset = builder.build(training_prompts(context), output_dir=directory, overwrite=True)
    return StageResult(
        outputs={"dataset": context.relative(directory / "dataset")},
        metrics={"rows": sum(len(split) for name, split in dataset.items() if name.endswith("_sft"))},
    )
