"""The prompts the training stages read: the first ``max_prompts`` of the recipe's source."""

from __future__ import annotations

from hf_cai.pipeline.context import RunContext


def recipe_prompts(context: RunContext):
    """Every prompt of the recipe's source; the builders take the first ``max_prompts`` of them themselves."""
    from hf_cai.builders import load_prompts

    return load_prompts(context.recipe.prompts, column=context.recipe.prompt_column)


def training_prompts(context: RunContext):
    """The training prompts: the first ``max_prompts`` of the recipe's source (all of them without a limit)."""
    return recipe_prompts(context)[: context.recipe.max_prompts or None]
