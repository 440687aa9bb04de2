"""Where a published SL-CAI or RL-CAI dataset came from: the models that wrote and labelled it, the sampling settings,
the seed and the constitution.

A builder writes what a build depends on into ``fingerprint.json`` beside its ``dataset/`` folder
(:mod:`hf_cai.builders.sharding`); :func:`dataset_provenance` turns that record into the readable one a dataset
repository carries as ``provenance.json`` (and its card shows): models by their Hub ids, never by a folder of this
machine, and no local path anywhere. The pipeline names the models itself (it knows the base model's Hub id and which
adapter wrote the pairs); a dataset published on its own gets what its build record says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE
from hf_cai.constitution import Constitution
from hf_cai.hub.local_paths import readable_model_id, strip_local_paths

PROVENANCE_FILE = "provenance.json"
"""The provenance record in a published dataset repository."""
BUILD_RECORD_FILE = "fingerprint.json"
"""The builder's record of a build, beside its ``dataset/`` folder (:data:`hf_cai.builders.sharding.FINGERPRINT_FILE`)."""
MODEL_ROLES = {
    "generator": "wrote the first replies, the critiques and the revisions",
    "policy": "wrote the two replies of each pair",
    "feedback": "labelled the pairs, answering the constitution's multiple-choice questions (the judge)",
}
"""What each model named in a provenance record did."""
_BUILD_MODELS = {"model": "generator", "policy_model": "policy", "feedback_model": "feedback"}
_OUTPUT_NEUTRAL = {"shard_size"}
"""Build settings that do not change the data (the unit of resuming), left out of the provenance."""


def build_record(source: Any) -> dict[str, Any] | None:
    """The builder's ``fingerprint.json`` in the dataset folder ``source`` or the folder above it (a builder's output
    folder holds ``dataset/`` and the record); ``None`` when ``source`` is not a folder or holds no readable record."""
    if not isinstance(source, (str, Path)):
        return None
    folder = Path(source)
    for candidate in (folder / BUILD_RECORD_FILE, folder.parent / BUILD_RECORD_FILE):
        try:
            record = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "builder" in record:
            return record
    return None


def _model_name(identity: Any) -> str | None:
    """A readable name of the model a build record identifies (``model_fingerprint``'s ``{"model", "adapter", ...}``)."""
    if not isinstance(identity, Mapping):
        return None
    model = identity.get("model")
    if not isinstance(model, str) or not model:
        return None
    name = readable_model_id(model)
    if name == model and "/" not in model:  # a converted GGUF folder is recorded by its name in the cache
        from hf_cai.gguf import cache_dir, hub_id_of

        name = hub_id_of(cache_dir() / "gguf" / model) or model
    adapter = identity.get("adapter")
    if isinstance(adapter, str) and adapter:
        name = f"{name} with the LoRA adapter '{Path(adapter).name}'"
    return name


def dataset_provenance(
    source: Any = None,
    *,
    constitution: Constitution,
    models: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record of a dataset: ``{"builder", "models": {role: id}, "seed", "settings", "prompts_sha256",
    "constitution": {name, version, sha256, file}, "hf_cai_version", ...}``.

    Args:
        source: The dataset's folder (its builder's ``fingerprint.json`` is read beside it), or anything else (no build
            record).
        constitution: The constitution the rows were generated under.
        models: Readable names of the models, by role (``generator`` for SL-CAI data, ``policy`` and ``feedback`` for
            preferences; see :data:`MODEL_ROLES`); they replace the names the build record gives.
        extra: More entries (the prompt source, say), added as given.

    Every string is stripped of this machine's paths (:func:`~hf_cai.hub.local_paths.strip_local_paths`).
    """
    from hf_cai import __version__

    build = build_record(source) or {}
    config = dict(build.get("config") or {})
    named = {role: _model_name(build.get(key)) for key, role in _BUILD_MODELS.items()}
    named = {role: name for role, name in named.items() if name}
    for role, name in (models or {}).items():
        named[role] = readable_model_id(name) if name else name
    record: dict[str, Any] = {
        "builder": build.get("builder"),
        "builder_format_version": build.get("format_version"),
        "models": {role: name for role, name in named.items() if name},
        "seed": config.pop("seed", None),
        "settings": {key: value for key, value in sorted(config.items()) if key not in _OUTPUT_NEUTRAL},
        "prompts_sha256": build.get("prompts_sha256"),
        "helpful_prompts_sha256": build.get("helpful_prompts_sha256"),
        "constitution": {
            "name": constitution.name,
            "version": constitution.version,
            "sha256": constitution.sha256,
            "file": CONSTITUTION_FILE,
        },
        "hf_cai_version": __version__,
        **dict(extra or {}),
    }
    record = {key: value for key, value in record.items() if value not in (None, {}, [])}
    return strip_local_paths(record)


def provenance_json(record: Mapping[str, Any]) -> bytes:
    """The ``provenance.json`` file of a dataset repository."""
    return (json.dumps(record, indent=2, sort_keys=False, default=str) + "\n").encode()
