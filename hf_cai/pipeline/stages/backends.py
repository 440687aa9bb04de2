"""The generation backends the stages sample from: the base model (served by the recipe's endpoint or run locally),
the base model with a trained adapter, and the judge that gives AI feedback."""

from __future__ import annotations

from pathlib import Path

from hf_cai.gguf import resolve_model
from hf_cai.pipeline.context import RunContext


def generation_backend(context: RunContext, *, adapter: Path | None = None):
    """The base model (with ``adapter``, always local): served by the recipe's endpoint, or run locally."""
    recipe = context.recipe
    if recipe.endpoint and adapter is None:
        return _endpoint_backend(context, recipe.endpoint, recipe.endpoint_model or recipe.model)
    return _local_backend(context, context.base_model_path(), adapter=adapter)


def tuned_and_base_backends(context: RunContext, adapter: Path):
    """Backends of the base model with ``adapter`` and of the base model alone, sharing one copy of the base weights
    when both run locally (the base view switches the adapter off)."""
    tuned = generation_backend(context, adapter=adapter)
    base = generation_backend(context) if context.recipe.endpoint else tuned.without_adapter()
    return tuned, base


def feedback_backend(context: RunContext, base):
    """The judge: the recipe's feedback model (served by ``feedback_endpoint`` or ``endpoint`` when set, else run
    locally), or the base model (``base``, already loaded)."""
    recipe = context.recipe
    if not recipe.feedback_model:
        return base
    endpoint = recipe.feedback_endpoint or recipe.endpoint
    if endpoint:
        return _endpoint_backend(context, endpoint, recipe.feedback_model)
    return _local_backend(context, resolve_model(recipe.feedback_model))


def _endpoint_backend(context: RunContext, url: str, model: str):
    from hf_cai.backends import EndpointBackend

    return EndpointBackend(url, model, api_key=context.endpoint_api_key())


def _local_backend(context: RunContext, model: str, *, adapter: Path | None = None):
    from hf_cai.backends import TransformersBackend

    recipe = context.recipe
    return TransformersBackend(
        model,
        adapter=str(adapter) if adapter else None,
        load_in_4bit=recipe.load_in_4bit,
        batch_size=recipe.generation_batch_size,
        trust_remote_code=False,
    )
