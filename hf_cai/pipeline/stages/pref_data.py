"""RL-CAI data: pairs of replies from the SFT model, labelled by the feedback model against the constitution."""

from __future__ import annotations

from pathlib import Path

from hf_cai.pipeline.context import RunContext, StageResult
from hf_cai.pipeline.stages.backends import feedback_backend, tuned_and_base_backends
from hf_cai.pipeline.stages.prompts import training_prompts


def run_pref_data(context: RunContext, directory: Path) -> StageResult:
    """RL-CAI: pairs of replies from the SFT model, labelled by the feedback model against the constitution."""
    from hf_cai.builders import AIFeedbackBuilder, AIFeedbackConfig

    policy, base = tuned_and_base_backends(context, context.output("sft", "model"))
    config = AIFeedbackConfig(**{"seed": context.recipe.seed, **context.recipe.pref_data})
    builder = AIFeedbackBuilder(policy, feedback_backend(context, base), context.constitution, config)
    dataset = builder.build(training_prompts(context), output_dir=directory, overwrite=True)
    splits = dataset.values() if hasattr(dataset, "values") else [dataset]
    probabilities = [p for split in splits for p in split["chosen_prob"]]
    return StageResult(
        outputs={"dataset": context.relative(directory / "dataset")},
        metrics={
            "pairs": len(probabilities),
            "mean_chosen_prob": sum(probabilities) / len(probabilities) if probabilities else float("nan"),
        },
    )
