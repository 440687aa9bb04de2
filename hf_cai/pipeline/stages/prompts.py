"""The prompts a stage reads: the first ``max_prompts`` of the recipe's source train, the rest are held out."""

from __future__ import annotations

from typing import Any

from hf_cai.pipeline.context import RunContext


def training_prompts(context: RunContext):
    """The training prompts: the first ``max_prompts`` of the recipe's source (all of them without a limit)."""
    from hf_cai.builders import load_prompts

    prompts = load_prompts(context.recipe.prompts, column=context.recipe.prompt_column)
    return prompts[: context.recipe.max_prompts or len(prompts)]


def held_out_prompts(context: RunContext, source: Any, used: int | None) -> list[str] | None:
    """Last user turns of the prompts of ``source`` after the first ``used`` (``None`` when none are left)."""
    from hf_cai.builders import load_prompts, prompt_text

    if source is None or used is None:
        return None
    rest = load_prompts(source, column=context.recipe.prompt_column)[used:]
    return [prompt_text(conversation) for conversation in rest] or None
