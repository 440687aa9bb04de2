"""The files of a model publication, built from a trainer output or run directory without writing to it.

The weights and configs of one format (the LoRA adapter, or a full model: the trained one or the adapter merged into
a 16-bit copy of the base, built in a staging folder), the tokenizer and chat template, ``constitution.yaml``, the
training record, the files the card links to (the evaluation's ``eval/chart.png`` and ``eval/results.json``,
:func:`~hf_cai.hub.model_card.card_files`) and the generated model card; no path of this machine in any of them.
:func:`~hf_cai.hub.model_publish.publish` commits them;
:func:`~hf_cai.hub.folder.publish_to_folder` writes them into a local folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE, TRAINING_RECORD
from hf_cai.constitution import Constitution
from hf_cai.hub.commit import UploadFile
from hf_cai.hub.errors import PublishError
from hf_cai.hub.local_paths import strip_local_paths
from hf_cai.hub.model_card import build_model_card, card_files, load_constitution, resolve_base_model
from hf_cai.hub.source import TrainingOutput, locate_training_output, read_json

_MODEL_CONFIG_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
MODEL_FORMAT_FILES = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "adapter_config.json",
    "model*.safetensors",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    *_MODEL_CONFIG_FILES,
)
"""Weights and configs of either format (adapter, full model): a publication replaces those of the previous one."""


@dataclass(frozen=True)
class ModelPublication:
    """A model publication ready to commit.

    Args:
        training: The trainer output it was built from.
        base_model: Hub id of the base model.
        constitution: The constitution published with it.
        files: Every file of the repository, the card (``README.md``) last.
    """

    training: TrainingOutput
    base_model: str
    constitution: Constitution
    files: list[UploadFile]


def model_publication(
    source: str | Path,
    repo_id: str,
    staging: Path,
    *,
    base_model_id: str | None = None,
    license: str | None = None,
    merge: bool = False,
    merge_dtype: str = "bfloat16",
    datasets: Sequence[str] | None = None,
    training_data: Sequence[Any] = (),
    eval_results: Any = None,
    constitution: Constitution | str | Path | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    card_template: str | Path | None = None,
) -> ModelPublication:
    """Everything a model repository receives: weights, tokenizer, constitution, training record, the evaluation's
    chart and results the card links to, and the card.

    ``staging`` is an empty folder that lives as long as the files are needed (the merged model is written there).
    The other arguments are those of :func:`~hf_cai.hub.model_publish.publish`.
    """
    training = locate_training_output(source)
    base_model = resolve_base_model(training, base_model_id)
    constitution = load_constitution(training, constitution)
    card = build_model_card(
        training,
        repo_id=repo_id,
        license=license,
        base_model_id=base_model,
        datasets=list(datasets or ()),
        training_data=training_data,
        eval_results=eval_results,
        merged=merge,
        license_name=license_name,
        license_link=license_link,
        constitution=constitution,
        template=card_template,
    )
    files = _weights_and_tokenizer(training, staging, merge=merge, merge_dtype=merge_dtype, base_model=base_model)
    files.append(UploadFile(CONSTITUTION_FILE, constitution.to_yaml().encode()))
    if training.record:
        # The record names the base as the trainer loaded it, possibly a folder of this machine: publish the Hub id,
        # and no other path of this machine.
        record = strip_local_paths({**training.record, "base_model": base_model}, root=training.run_dir)
        files.append(UploadFile(TRAINING_RECORD, (json.dumps(record, indent=2, default=str) + "\n").encode()))
    # The chart the card embeds and the results it links, from the run's eval/ folder or beside an eval_results file.
    files.extend(UploadFile(path, source) for path, source in card_files(training, eval_results, repo_id=repo_id).items())
    files.append(UploadFile("README.md", str(card).encode()))
    return ModelPublication(training, base_model, constitution, files)


def _weights_and_tokenizer(
    training: TrainingOutput, staging: Path, *, merge: bool, merge_dtype: str, base_model: str
) -> list[UploadFile]:
    """Weights, configs and tokenizer of the publication, in the format asked for."""
    tokenizer = training.tokenizer_files()
    if not any(f.name in ("tokenizer.json", "tokenizer.model", "vocab.json") for f in tokenizer):
        raise PublishError(
            f"{training.model_dir}: no tokenizer files (tokenizer.json, tokenizer_config.json, chat template); save "
            "them next to the model with tokenizer.save_pretrained(folder)"
        )
    if merge:
        if not training.is_adapter:
            raise PublishError(
                f"{training.model_dir} is already a full model (no adapter_config.json); publish it without merge=True"
            )
        from hf_cai.hub.merge import merge_adapter, merge_base

        merged = merge_adapter(
            training.model_dir,
            staging / "merged",
            base_model=merge_base(training.model_dir, base_model),
            dtype=merge_dtype,
            tokenizer_files=tokenizer,
        )
        return _full_model_files(merged) + [UploadFile(f.name, merged / f.name) for f in tokenizer]
    if not training.is_adapter:
        return _full_model_files(training.model_dir) + [UploadFile(f.name, f) for f in tokenizer]
    adapter_config = read_json(training.model_dir / "adapter_config.json")
    adapter_config["base_model_name_or_path"] = base_model
    return [
        UploadFile("adapter_model.safetensors", training.model_dir / "adapter_model.safetensors"),
        UploadFile("adapter_config.json", (json.dumps(adapter_config, indent=2) + "\n").encode()),
        *(UploadFile(f.name, f) for f in tokenizer),
    ]


def _full_model_files(folder: Path) -> list[UploadFile]:
    weights = sorted(folder.glob("model*.safetensors"))
    configs = [folder / name for name in _MODEL_CONFIG_FILES if (folder / name).is_file()]
    return [UploadFile(f.name, f) for f in (*weights, *configs)]
