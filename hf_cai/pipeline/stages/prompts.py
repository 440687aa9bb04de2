"""The prompts the training stages read: the first ``max_prompts`` of the recipe's source."""

from __future__ import annotations

from hf_cai.pipeline.context import RunContext


def training_prompts(context: RunContext):
    """The training prompts: the first ``max_prompts`` of the recipe's source (all of them without a limit)."""
    from hf_cai.builders import load_prompts

    prompts = load_prompts(context.recipe.prompts, column=context.recipe.prompt_column)
    return prompts[: context.recipe.max_prompts or len(prompts)]

