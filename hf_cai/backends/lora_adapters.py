"""LoRA adapters served by an inference server: registered while it runs, then asked for by name.

A run trains adapters (SFT, then DPO or GRPO) whose replies later stages need. Instead of loading a local copy of the
base model with the adapter, the run can hand the adapter's folder to the server that already serves the base
model, and ask for the adapter by name in chat completion requests:

- vLLM: ``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter`` with ``{"lora_name", "lora_path"}``,
  served when the server runs with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; requests then
  name the adapter as their ``model``.
- SGLang: ``POST /load_lora_adapter`` and ``POST /unload_lora_adapter`` (outside ``/v1``) with the same fields,
  served with ``--enable-lora``; its OpenAI-compatible API names an adapter as ``<base model>:<adapter name>``.

The server reads the folder itself, so it must see the path the run wrote (the same machine, or a filesystem both
share). An adapter the server was started with (vLLM's ``--lora-modules name=path``, SGLang's
``--lora-paths name=path``) needs no registration: requests name it directly.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from hf_cai.backends.base import BackendError
from hf_cai.backends.endpoint import EndpointBackend

logger = logging.getLogger(__name__)

_ROUTES = (("vllm", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"),
           ("sglang", "/load_lora_adapter", "/unload_lora_adapter"))


class AdapterLoadError(BackendError):
    """The server could not load a LoRA adapter (the message names the folder and what to do)."""


@dataclass(frozen=True)
class ServedAdapter:
    """A LoRA adapter the server holds: its name there, the ``model`` requests send to use it, and the engine whose
    route loaded it (``None`` for one it already served)."""

    name: str
    model: str
    engine: str | None = None


def adapter_content_name(adapter_dir: str | Path, prefix: str = "hf-cai") -> str:
    """A name for the adapter in ``adapter_dir`` that changes with its weights and configuration: ``prefix-`` and the
    first 12 hex digits of their SHA-256, so a server never answers with an older adapter of the same name."""
    digest = hashlib.sha256()
    folder = Path(adapter_dir)
    for file in sorted(folder.glob("adapter_*")):
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return f"{prefix}-{digest.hexdigest()[:12]}"


def load_lora_adapter(endpoint: EndpointBackend, name: str, adapter_dir: str | Path) -> ServedAdapter:
    """Register the adapter in ``adapter_dir`` with ``endpoint``'s server as ``name`` (vLLM's route, else SGLang's).

    An adapter already registered under ``name`` (by an earlier, interrupted run) is used as it is. Raises
    :class:`AdapterLoadError` when the server refuses the folder or offers neither route.
    """
    path = str(Path(adapter_dir).resolve())
    root = endpoint.base_url.removesuffix("/v1")
    refusals = []
    for engine, load_route, _ in _ROUTES:
        url = f"{root}{load_route}"
        try:
            response = endpoint.send("POST", url, {"lora_name": name, "lora_path": path})
        except BackendError as error:
            raise AdapterLoadError(_unreadable(endpoint, url, path, str(error))) from None
        status, text = response.status_code, response.text
        if status in (404, 405) and path not in text:  # no such route here (a missing folder's 404 names it)
            refusals.append(f"{url}: HTTP {status}")
            continue
        if status == 400 and "already" in text.lower():
            logger.info("LoRA adapter %s is already loaded on %s", name, root)
        elif status >= 400 or _sglang_refused(response):
            raise AdapterLoadError(_unreadable(endpoint, url, path, f"HTTP {status}: {_shortened(text)}"))
        else:
            logger.info("registered the LoRA adapter in %s with %s as %s", path, root, name)
        model = f"{endpoint.model}:{name}" if engine == "sglang" else name
        return ServedAdapter(name=name, model=model, engine=engine)
    raise AdapterLoadError(endpoint.hide_key(
        f"the server at {root} offers no route to load LoRA adapters at run time ({'; '.join(refusals)}). Start vLLM "
        "with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or SGLang with --enable-lora (and "
        "--max-lora-rank / --lora-target-modules covering the adapter); or start the server with the adapter "
        f"({path}) under a name and give that name in the recipe's policy_adapter_names."
    ))


def unload_lora_adapter(endpoint: EndpointBackend, adapter: ServedAdapter) -> None:
    """Remove a registered adapter from the server; a failure is logged, not raised (the adapter only takes a slot)."""
    routes = {engine: unload for engine, _, unload in _ROUTES}
    if adapter.engine not in routes:
        return
    url = f"{endpoint.base_url.removesuffix('/v1')}{routes[adapter.engine]}"
    try:
        response = endpoint.send("POST", url, {"lora_name": adapter.name})
    except BackendError as error:
        logger.warning("could not unload the LoRA adapter %s: %s", adapter.name, error)
        return
    if response.status_code >= 400:
        logger.warning("could not unload the LoRA adapter %s: %s answered HTTP %d: %s", adapter.name, url,
                       response.status_code, endpoint.hide_key(_shortened(response.text)))


def _sglang_refused(response) -> bool:
    """SGLang answers a load with ``{"success": ..., "error_message": ...}``."""
    try:
        reply = response.json()
    except ValueError:
        return False
    return isinstance(reply, dict) and reply.get("success") is False


def _unreadable(endpoint: EndpointBackend, url: str, path: str, problem: str) -> str:
    return endpoint.hide_key(
        f"the server could not load the LoRA adapter in {path} ({url} answered {problem}). The server reads the "
        "adapter folder itself: it must see this same path (run it on this machine, or keep run_dir on a filesystem "
        "both share), or start it with the adapter under a name and give that name in the recipe's "
        "policy_adapter_names. Finished stages and generated shards are kept: run the same command again to resume."
    )


def _shortened(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
