"""Configuration of the side-by-side chat Space: a small JSON/YAML file next to ``app.py`` that
:mod:`hf_cai.hub.space` writes and the Space's app (:mod:`hf_cai.spaces`) reads, overridden by environment
variables (``HF_CAI_BASE_MODEL``, ``HF_CAI_MODEL``, ``HF_CAI_CONSTITUTION``, ``HF_CAI_MAX_PROMPT_CHARS``, ...)."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from hf_cai.errors import HFCAIError

CONFIG_FILE_NAME = "space_config.json"


class SpaceConfigError(HFCAIError, ValueError):
    """The Space configuration is invalid; the message names the file or variable, the field and what to do."""


@dataclass
class SpaceConfig:
    """What the Space serves and how.

    Args:
        base_model: Hub id or local folder of the base model (the "before" panel).
        cai_model: Hub id or local folder of the CAI model (the "after" panel): a PEFT adapter trained on
            ``base_model`` (then one copy of the base is shared by both panels) or a full, merged model. ``None``
            serves the base model alone.
        constitution: Built-in constitution name or path to its YAML/JSON file; a relative path is resolved against
            the folder of the configuration file. ``None`` reads ``constitution.yaml`` from a local ``cai_model``
            folder and falls back to the built-in ``harmless`` constitution.
        title: Title shown at the top of the page.
        max_prompt_chars: Longest prompt accepted; a longer one is refused with a notice (nothing is generated).
        max_input_tokens: Token budget of the conversation given to the models; the oldest turns are dropped to fit.
        max_new_tokens: Default of the "max new tokens" slider.
        max_new_tokens_limit: Upper end of the "max new tokens" slider (and of what the API accepts).
        temperature: Default sampling temperature; 0 decodes greedily.
        load_in_4bit: Load the base model in 4-bit NF4 with bitsandbytes (for big models on small GPUs).
        num_examples: How many red-team prompts to offer as examples (one per category first).
        critique_few_shot: Put the constitution's critique/revision demonstrations before the critique request, as
            the SL-CAI data builder does.
        concurrency_limit: Generation events (chat, retry, critique) let in at the same time; more wait in Gradio's
            queue. The replies of the events let in are decoded together in shared batches, so this bounds how many
            visitors are answered at once (two replies each).
        max_batch_size: Most replies decoded in one generation batch (each chat event asks for one per panel).
        batch_window_ms: How long an idle Space waits for more requests before it starts a batch, in milliseconds:
            requests that arrive within it start together (see :mod:`hf_cai.spaces.batching`).
        join_every_tokens: While a batch decodes, requests that arrive join it every this many tokens.
        stream_interval_ms: Least time between two updates of a streaming reply sent to the browser (the first
            words go at once); every update costs the server the chat's conversion and transfer.
        prefix_cache_mb: Memory for the keys and values of recent conversations, so a visitor's next turn computes
            only its new tokens (see :mod:`hf_cai.spaces.prefix_cache`); 0 turns it off.
        queue_size: Longest queue of waiting events before new visitors are turned away.
    """

    base_model: str
    cai_model: str | None = None
    constitution: str | None = None
    title: str = "Constitutional AI: base vs CAI"
    max_prompt_chars: int = 2000
    max_input_tokens: int = 4096
    max_new_tokens: int = 256
    max_new_tokens_limit: int = 1024
    temperature: float = 0.7
    load_in_4bit: bool = False
    num_examples: int = 8
    critique_few_shot: bool = True
    concurrency_limit: int = 16
    max_batch_size: int = 32
    batch_window_ms: int = 100
    join_every_tokens: int = 16
    stream_interval_ms: int = 200
    prefix_cache_mb: int = 256
    queue_size: int = 64

    def __post_init__(self) -> None:
        if not self.base_model:
            raise SpaceConfigError(
                "no base model: set 'base_model' in space_config.json or the HF_CAI_BASE_MODEL environment variable"
            )
        for name in ("max_prompt_chars", "max_input_tokens", "max_new_tokens", "max_new_tokens_limit",
                     "num_examples", "concurrency_limit", "max_batch_size", "join_every_tokens", "queue_size"):
            if getattr(self, name) < 1:
                raise SpaceConfigError(f"'{name}' must be at least 1, got {getattr(self, name)}")
        for name in ("batch_window_ms", "prefix_cache_mb", "stream_interval_ms"):
            if getattr(self, name) < 0:
                raise SpaceConfigError(f"'{name}' must be 0 or more, got {getattr(self, name)}")
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise SpaceConfigError(
                f"'max_new_tokens' ({self.max_new_tokens}) is above 'max_new_tokens_limit' ({self.max_new_tokens_limit})"
            )
        if not 0 <= self.temperature <= 2:
            raise SpaceConfigError(f"'temperature' must be between 0 and 2, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the configuration as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _environment_name(field_name: str) -> str:
    return "HF_CAI_MODEL" if field_name == "cai_model" else f"HF_CAI_{field_name.upper()}"


def _convert(value: str, annotation: str, where: str) -> Any:
    if value == "" and "None" in annotation:
        return None
    if annotation.startswith("bool"):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SpaceConfigError(f"{where}: expected true or false, got {value!r}")
    for kind in (int, float):
        if annotation.startswith(kind.__name__):
            try:
                return kind(value)
            except ValueError as error:
                raise SpaceConfigError(f"{where}: expected a number ({kind.__name__}), got {value!r}") from error
    return value


def _check_type(value: Any, annotation: str, where: str) -> None:
    if value is None and "None" in annotation:
        return
    kind = annotation.split(" ")[0]
    expected = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}[kind]
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, expected):
        raise SpaceConfigError(f"{where}: expected {kind}, got {type(value).__name__} {value!r}")


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpaceConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {error}") from error
    if not isinstance(data, Mapping):
        raise SpaceConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return dict(data)


def load_space_config(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> SpaceConfig:
    """Read the Space configuration from ``path`` (JSON or YAML, optional), then apply ``HF_CAI_*`` variables.

    Raises :class:`SpaceConfigError` for an unknown key (with the closest valid one), a value of the wrong type or a
    missing base model.
    """
    environ = os.environ if environ is None else environ
    known = {f.name: str(f.type) for f in fields(SpaceConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SpaceConfigError(f"{path}: configuration file not found")
        values = _read_file(path)
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
                raise SpaceConfigError(f"{path}: unknown key '{key}'{hint}")
            _check_type(values[key], known[key], f"{path}: key '{key}'")
    for name, annotation in known.items():
        variable = _environment_name(name)
        if variable in environ:
            values[name] = _convert(environ[variable], annotation, f"environment variable {variable}")
    constitution = values.get("constitution")
    if path is not None and constitution and (path.parent / constitution).is_file():
        # absolute(), not resolve(): in a Hub download the file is a symlink to an extension-less blob.
        values["constitution"] = str((path.parent / constitution).absolute())
    if not values.get("base_model"):
        where = f"'base_model' in {path}" if path is not None else "'base_model' in space_config.json"
        raise SpaceConfigError(f"no base model: set {where} or the HF_CAI_BASE_MODEL environment variable")
    try:
        return SpaceConfig(**values)
    except SpaceConfigError as error:
        raise SpaceConfigError(f"{path or 'environment'}: {error}") from error
