"""The generation backends the stages sample from: the base model (served by the recipe's endpoint or run locally),
the policy (the base model with a trained adapter, served by the policy endpoint or run locally), and the judge that
gives AI feedback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def policy_and_base_backends(context: RunContext, adapter_stage: str) -> Iterator[tuple]:
    """Backends of the policy (the base model with the adapter ``adapter_stage`` trained) and of the base model alone,
    for the duration of the ``with`` block.

    With a policy server (:meth:`~hf_cai.pipeline.recipe.RecipeConfig.policy_url`) no local copy of the policy is
    loaded: the adapter is registered with the server under a name made from its content (or the name
    ``policy_adapter_names`` gives), requests ask for it by that name, and a registered adapter is unloaded after
    the block. Without one, both run locally on one copy of the base weights (:func:`tuned_and_base_backends`).
    """
    from hf_cai.backends.lora_adapters import (
        ServedAdapter,
        adapter_content_name,
        load_lora_adapter,
        unload_lora_adapter,
    )
    from hf_cai.pipeline.errors import PipelineError

    recipe = context.recipe
    adapter = context.output(adapter_stage, "model")
    url = recipe.policy_url()
    if url is None:
        yield tuned_and_base_backends(context, adapter)
        return
    declared = recipe.policy_adapter_names.get(adapter_stage)
    if declared is None and not (adapter / "adapter_config.json").is_file():
        raise PipelineError(
            f"{adapter} is a full checkpoint, not a LoRA adapter a server can load next to its base model; set "
            "policy_endpoint: local to generate its replies locally"
        )
    server = _endpoint_backend(context, url, recipe.endpoint_model or recipe.model)
    try:
        served = ServedAdapter(declared, declared) if declared else load_lora_adapter(
            server, adapter_content_name(adapter, prefix=f"hf-cai-{adapter_stage}"), adapter)
        try:
            yield _endpoint_backend(context, url, served.model), generation_backend(context)
        finally:
            unload_lora_adapter(server, served)
    finally:
        server.close()


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
