"""``hf-cai generate sl|prefs --config cfg.yaml``: build SL-CAI or RL-CAI datasets from a YAML file.

The YAML holds the builder's config fields (see :class:`~hf_cai.builders.CritiqueRevisionConfig` and
:class:`~hf_cai.builders.AIFeedbackConfig`) plus:

* ``model`` (``sl``) or ``policy_model`` and optionally ``feedback_model`` (``prefs``; the feedback model defaults to
  the policy): a model path / Hub id, a mapping of :class:`~hf_cai.backends.TransformersBackend` arguments
  (``{model: ..., batch_size: 8, load_in_4bit: true, adapter: ...}``), or an OpenAI-compatible endpoint
  (``{base_url: http://host:8000/v1, model: served-name, max_concurrency: 32, api_key_env: MY_KEY_VARIABLE}``; the key
  itself is read from that environment variable, never from the file).
* ``constitution``: a built-in name or a constitution file.
* ``prompts`` (+ ``prompt_column``, ``prompt_split``): any source :func:`~hf_cai.builders.load_prompts` accepts.
* ``output_dir``: where shards and the final dataset (``output_dir/dataset``, ``datasets.load_from_disk``) go.
* ``overwrite``: discard shards of a different build in ``output_dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from hf_cai.cli import CommandError, check_keys

_COMMON_KEYS = {"constitution", "prompts", "prompt_column", "prompt_split", "output_dir", "overwrite"}
_ENDPOINT_KEYS = {"base_url", "model", "api_key_env", "max_concurrency", "timeout", "max_retries", "backoff", "top_logprobs"}
_LOCAL_KEYS = {
    "model",
    "tokenizer",
    "batch_size",
    "max_batch_tokens",
    "load_in_4bit",
    "adapter",
    "trust_remote_code",
    "max_input_tokens",
}


def _read_config(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise CommandError(f"{file}: invalid YAML: {error}") from error
    if not isinstance(data, dict):
        raise CommandError(f"{file}: the top level must be a mapping of settings")
    return data


def _backend(spec: Any, where: str):
    from hf_cai.backends import EndpointBackend, TransformersBackend

    if isinstance(spec, (str, Path)):
        return TransformersBackend(str(spec))
    if not isinstance(spec, dict) or "model" not in spec:
        raise CommandError(f"{where}: expected a model path/id or a mapping with 'model' (and 'base_url' for an endpoint)")
    if "base_url" in spec:
        check_keys(spec, _ENDPOINT_KEYS, where)
        options = dict(spec)
        variable = options.pop("api_key_env", None)
        api_key = None
        if variable:
            api_key = os.environ.get(variable)
            if not api_key:
                raise CommandError(f"{where}: the environment variable {variable} (api_key_env) is not set")
        return EndpointBackend(api_key=api_key, **options)
    check_keys(spec, _LOCAL_KEYS, where)
    return TransformersBackend(**spec)


def _config(config_class, data: dict[str, Any], where: str):
    fields = {f.name for f in dataclasses.fields(config_class)}
    values = {key: data[key] for key in fields if key in data}
    if "cot_clamp" in values and isinstance(values["cot_clamp"], list):
        values["cot_clamp"] = tuple(values["cot_clamp"])
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:
        raise CommandError(f"{where}: {error}") from error


def _run(build, data: dict[str, Any], args: argparse.Namespace, where: str) -> int:
    from hf_cai.backends import BackendError
    from hf_cai.builders import load_prompts
    from hf_cai.modeling import ModelLoadError

    for key in ("prompts", "output_dir"):
        if key not in data:
            raise CommandError(f"{where}: missing required key '{key}'")
    prompts = load_prompts(
        data["prompts"], column=data.get("prompt_column", "prompt"), split=data.get("prompt_split", "train")
    )
    output_dir = Path(data["output_dir"])
    try:
        dataset = build(prompts, output_dir, overwrite=bool(args.overwrite or data.get("overwrite", False)))
    except (BackendError, ModelLoadError) as error:
        raise CommandError(f"{error} (finished shards are kept in {output_dir})") from error
    splits = dataset.items() if hasattr(dataset, "items") else [("rows", dataset)]
    print(f"wrote {output_dir / 'dataset'}: " + ", ".join(f"{name} {len(split)}" for name, split in splits))
    return 0


def _constitution(data: dict[str, Any], where: str):
    from hf_cai.constitution import Constitution

    if "constitution" not in data:
        raise CommandError(f"{where}: missing required key 'constitution' (a built-in name or a file)")
    return Constitution.resolve(data["constitution"])


def _sl(args: argparse.Namespace) -> int:
    from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig
    from hf_cai.modeling import ModelLoadError

    data = _read_config(args.config)
    config_keys = {f.name for f in dataclasses.fields(CritiqueRevisionConfig)}
    check_keys(data, config_keys | _COMMON_KEYS | {"model"}, args.config)
    if "model" not in data:
        raise CommandError(f"{args.config}: missing required key 'model'")
    config = _config(CritiqueRevisionConfig, data, args.config)
    constitution = _constitution(data, args.config)
    try:
        backend = _backend(data["model"], f"{args.config}: model")
    except ModelLoadError as error:
        raise CommandError(str(error)) from error
    return _run(CritiqueRevisionBuilder(backend, constitution, config).build, data, args, args.config)


def _prefs(args: argparse.Namespace) -> int:
    from hf_cai.builders import AIFeedbackBuilder, AIFeedbackConfig
    from hf_cai.modeling import ModelLoadError

    data = _read_config(args.config)
    config_keys = {f.name for f in dataclasses.fields(AIFeedbackConfig)}
    check_keys(data, config_keys | _COMMON_KEYS | {"policy_model", "model", "feedback_model"}, args.config)
    policy_spec = data.get("policy_model", data.get("model"))
    if policy_spec is None:
        raise CommandError(f"{args.config}: missing required key 'policy_model'")
    config = _config(AIFeedbackConfig, data, args.config)
    constitution = _constitution(data, args.config)
    try:
        policy = _backend(policy_spec, f"{args.config}: policy_model")
        feedback_spec = data.get("feedback_model")
        same = feedback_spec is None or feedback_spec == policy_spec
        feedback = policy if same else _backend(feedback_spec, f"{args.config}: feedback_model")
    except ModelLoadError as error:
        raise CommandError(str(error)) from error
    return _run(AIFeedbackBuilder(policy, feedback, constitution, config).build, data, args, args.config)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="build SL-CAI (critique/revision) or RL-CAI (AI feedback) datasets",
        description="Build a CAI dataset from a YAML file: the builder settings, the model(s), the constitution, the "
        "prompts and output_dir. Unknown keys are refused with the closest valid key. Finished shards are kept, so "
        "an interrupted build resumes.",
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text, description in (
        (
            "sl",
            _sl,
            "critique→revision dataset (SFT + preference splits)",
            "SL-CAI: the model answers each prompt, then critiques and revises its reply under a sampled principle, "
            "round after round; the final revisions make the SFT splits, (final revision, first reply) pairs the "
            "preference splits.",
        ),
        (
            "prefs",
            _prefs,
            "AI-feedback preference dataset with soft labels",
            "RL-CAI: the policy model writes two replies to each prompt and the feedback model says which one better "
            "follows sampled principles; the probabilities of its answers (both option orders averaged) are the soft "
            "labels.",
        ),
    ):
        command = commands.add_parser(name, help=text, description=description)
        command.add_argument("--config", required=True, help="YAML file: builder settings, model, constitution, prompts")
        command.add_argument("--overwrite", action="store_true", help="discard shards of a different build")
        command.set_defaults(handler=handler)
