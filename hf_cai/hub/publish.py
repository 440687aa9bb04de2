"""Publishing CAI models and datasets to the Hugging Face Hub.

:func:`publish` pushes a trainer output or run directory to a model repository: the LoRA adapter (or, with
``merge=True``, the adapter merged into a 16-bit copy of the base), the tokenizer and chat template,
``constitution.yaml``, the training record and a generated model card. :func:`publish_dataset` pushes an SL-CAI or
RL-CAI dataset as parquet with a generated dataset card and ``constitution.yaml``.

Both make a single commit holding only the files that changed, so re-running after an interruption, or with nothing
changed, is safe (no new commit). Files of the other format (the adapter when publishing a merged model, and the other
way round) and parquet files of splits that are no longer published are deleted in that same commit. Every file is
checked for access tokens before anything is sent. Nothing in the source folders is written, moved or deleted; the
merged model and the parquet files are built in a temporary folder.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.hub.commit import UploadFile, commit_files
from hf_cai.hub.errors import PublishError, hub_errors
from hf_cai.hub.secrets import check_no_secrets
from hf_cai.hub.source import CONSTITUTION_FILE, TRAINING_RECORD, TrainingOutput, locate_training_output, read_json

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
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
DATASET_DATA_FILES = ("data/*.parquet",)
"""Data files of a dataset publication: a split that is no longer published is deleted."""


@dataclass(frozen=True)
class PublishResult:
    """What a publication did.

    Args:
        repo_id: The repository published to.
        repo_type: ``"model"``, ``"dataset"`` or ``"space"``.
        repo_url: Its URL on the Hub.
        revision: The branch published to (the pull request's base branch with ``create_pr``).
        commit_oid: The new commit, or ``None`` when every file was already up to date.
        commit_url: URL of the new commit, or ``None``.
        pr_url: URL of the pull request opened with ``create_pr=True``, or ``None``.
        files: Every file of the publication (paths in the repository).
        uploaded: The files the commit carried (those that changed).
        deleted: Files of an earlier publication that the commit removed (the other model format, old splits).
        space_url: URL of the demo Space created with ``space=True``, or ``None``.
    """

    repo_id: str
    repo_type: str
    repo_url: str
    revision: str
    commit_oid: str | None
    commit_url: str | None
    pr_url: str | None
    files: tuple[str, ...]
    uploaded: tuple[str, ...]
    deleted: tuple[str, ...] = ()
    space_url: str | None = None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a valid ``owner/name`` Hub id; :class:`PublishError` explaining the rule otherwise."""
    if (
        not isinstance(repo_id, str)
        or not _REPO_ID.match(repo_id)
        or ".." in repo_id
        or repo_id.endswith((".git", "."))
    ):
        raise PublishError(
            f"'{repo_id}' is not a valid repository id: use 'owner/name' (owner = your user or organisation name; "
            "letters, digits, '-', '_' and '.', at most 96 characters each, no '..', not ending in '.git')"
        )
    return repo_id


def resolve_token(token: str | None) -> str:
    """The token to publish with: ``token``, else ``HF_TOKEN``, else the one saved by ``hf auth login``."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token: pass token=..., set the HF_TOKEN environment variable, or run `hf auth login`. "
            "Publishing needs a token with the 'write' role."
        )
    return token


def _prepare_repo(
    api, repo_id: str, *, repo_type: str, private: bool, revision: str, create_pr: bool, token: str
) -> str:
    with hub_errors(f"creating {repo_type} repo {repo_id}", token, PublishError):
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    if revision != "main":
        with hub_errors(f"preparing branch '{revision}' of {repo_id}", token, PublishError):
            branches = {b.name for b in api.list_repo_refs(repo_id, repo_type=repo_type).branches}
            if revision not in branches:
                if create_pr:
                    raise PublishError(
                        f"create_pr=True opens a pull request against an existing branch, and {repo_id} has no branch "
                        f"'{revision}'; publish to it first, or omit revision to open the pull request against main"
                    )
                logger.info("%s: creating branch '%s' from main", repo_id, revision)
                api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    return str(url)


def _model_files(
    training: TrainingOutput, staging: Path, *, merge: bool, merge_dtype: str, base_model: str
) -> list[UploadFile]:
    """Weights, configs and tokenizer of the publication (the card, constitution and record are added by the caller)."""
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
        from hf_cai.hub.merge import merge_adapter

        local_base = read_json(training.model_dir / "adapter_config.json").get("base_model_name_or_path")
        merged = merge_adapter(
            training.model_dir,
            staging / "merged",
            base_model=local_base if local_base and Path(local_base).exists() else base_model,
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


def publish(
    source: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    base_model_id: str | None = None,
    license: str | None = None,
    merge: bool = False,
    merge_dtype: str = "bfloat16",
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    datasets: Sequence[str] | None = None,
    training_data: Sequence[Any] = (),
    eval_results: Any = None,
    constitution: Constitution | str | Path | None = None,
    license_name: str | None = None,
    license_link: str | None = None,
    card_template: str | Path | None = None,
    space: bool = False,
) -> PublishResult:
    """Publish a CAI fine-tune to a model repository, with its constitution and a generated model card.

    Args:
        source: Trainer output folder, stage folder or pipeline run directory (see :mod:`hf_cai.hub.source`).
        repo_id: Target repository, ``owner/name``; created (``private`` as given) when missing.
        token: Hub token with write access; defaults to ``HF_TOKEN`` or the saved login. Never logged or written.
        base_model_id: Hub id of the base model; required when the training loaded it from a local folder.
        license: Hub license id of the fine-tune (required), e.g. the base model's license.
        merge: Publish the adapter merged into a 16-bit copy of the base (``transformers`` model) instead of the
            adapter (``peft``). The base is loaded unquantised even when training used 4-bit QLoRA.
        merge_dtype: ``"bfloat16"`` or ``"float16"`` for the merged weights.
        private: Create the repository private (an existing repository keeps its visibility).
        revision: Branch to publish to (created from ``main`` when missing); ``main`` by default.
        create_pr: Open a pull request against ``revision`` instead of committing to it.
        commit_message: Summary of the commit; a description of the publication by default.
        datasets: Hub ids of the published training datasets (see :func:`publish_dataset`), linked from the card.
        training_data: Local datasets to compute the card's principle statistics and examples from (a run
            directory's own datasets are always used).
        eval_results: Evaluation results (``EvaluationReport``, its dict, or ``results.json``); a run directory's
            ``eval/results.json`` is used when not given.
        constitution: Overrides the ``constitution.yaml`` found beside the model.
        license_name: Short name of the license when ``license="other"``.
        license_link: Link to the license text when ``license="other"``.
        card_template: A Jinja template file replacing ``model_cards/model_card.md.j2``.
        space: Also create the side-by-side chat Space ``<repo_id>-chat`` comparing the base model with this one
            (see :func:`hf_cai.hub.space.create_space`); not with ``private=True``, whose Space could not install
            the hf_cai wheel it ships (create it with ``create_space(..., hf_cai_requirement=...)`` instead).

    Returns:
        :class:`PublishResult` with the repository URL, the new commit (``None`` when nothing changed) and the files.

    Raises:
        PublishError: bad repo id, no token, missing files, or a Hub failure (401/403/409/5xx/...), each with what to
            do. ``ModelCardError``: missing license or base model id, data from another constitution, template errors.
    """
    from huggingface_hub import HfApi

    from hf_cai import __version__

    check_repo_id(repo_id)
    token = resolve_token(token)
    create_space = _space_factory(private) if space else None
    revision = revision or "main"
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf-cai-publish-") as staging:
        training, base_model, rules, files = _publication_files(
            source,
            repo_id,
            Path(staging),
            base_model_id=base_model_id,
            license=license,
            merge=merge,
            merge_dtype=merge_dtype,
            datasets=datasets,
            training_data=training_data,
            eval_results=eval_results,
            constitution=constitution,
            license_name=license_name,
            license_link=license_link,
            card_template=card_template,
        )
        check_no_secrets(files, token)
        repo_url = _prepare_repo(
            api, repo_id, repo_type="model", private=private, revision=revision, create_pr=create_pr, token=token
        )
        kind = "merged model" if merge else ("LoRA adapter" if training.is_adapter else "model")
        message = (
            commit_message or f"Publish CAI {kind} aligned to {rules.name} v{rules.version} (hf_cai {__version__})"
        )
        with hub_errors(f"committing to {repo_id}", token, PublishError):
            outcome = commit_files(
                api,
                repo_id,
                files,
                repo_type="model",
                revision=revision,
                commit_message=message,
                replaces=MODEL_FORMAT_FILES,
                create_pr=create_pr,
            )
    space_url = None
    if create_space is not None:
        space_repo_id = f"{repo_id}-chat"
        with hub_errors(f"creating the demo Space {space_repo_id}", token, PublishError):
            info = create_space(
                space_repo_id,
                base_model=base_model,
                cai_model=repo_id,
                constitution=rules,
                token=token,
                private=private,
                cai_is_adapter=training.is_adapter and not merge,
            )
        space_url = str(info.repo_url)
    logger.info("published %s to %s (%s)", kind, repo_url, outcome.commit_oid or "no change")
    return PublishResult(
        repo_id=repo_id,
        repo_type="model",
        repo_url=repo_url,
        revision=revision,
        commit_oid=outcome.commit_oid,
        commit_url=outcome.commit_url,
        pr_url=outcome.pr_url,
        files=tuple(f.path_in_repo for f in files),
        uploaded=outcome.changed,
        deleted=outcome.deleted,
        space_url=space_url,
    )


def _publication_files(
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
) -> tuple[TrainingOutput, str, Constitution, list[UploadFile]]:
    """Everything a model repository receives: weights, tokenizer, constitution, training record and the card."""
    from hf_cai.hub.model_card import build_model_card, load_constitution, resolve_base_model

    training = locate_training_output(source)
    base_model = resolve_base_model(training, base_model_id)
    rules = load_constitution(training, constitution)
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
        constitution=rules,
        template=card_template,
    )
    files = _model_files(training, staging, merge=merge, merge_dtype=merge_dtype, base_model=base_model)
    files.append(UploadFile(CONSTITUTION_FILE, rules.to_yaml().encode()))
    if training.record:
        # The record names the base as the trainer loaded it, possibly a folder of this machine: publish the Hub id.
        record = {**training.record, "base_model": base_model}
        files.append(UploadFile(TRAINING_RECORD, (json.dumps(record, indent=2, default=str) + "\n").encode()))
    files.append(UploadFile("README.md", str(card).encode()))
    return training, base_model, rules, files


def publish_to_folder(source: str | Path, folder: str | Path, *, repo_id: str, **options: Any) -> tuple[str, ...]:
    """Write exactly the files :func:`publish` would commit into a local ``folder`` laid out like the repository.

    For offline runs and for reviewing a publication before pushing it (``hf upload`` of the folder gives the same
    repository). ``repo_id`` names the future repository in the card; ``options`` are :func:`publish`'s keyword
    arguments that shape the files (``base_model_id``, ``license``, ``merge``, ``merge_dtype``, ``datasets``,
    ``training_data``, ``eval_results``, ``constitution``, ``license_name``, ``license_link``, ``card_template``).
    Returns the repository paths written; other files already in ``folder`` are left alone.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="hf-cai-publish-") as staging:
        _, _, _, files = _publication_files(source, repo_id, Path(staging), **options)
        for file in files:
            target = folder / file.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read())
    logger.info("wrote %d files of %s to %s", len(files), repo_id, folder)
    return tuple(f.path_in_repo for f in files)


def _space_factory(private: bool):
    """:func:`~hf_cai.hub.space.create_space`, once it is clear the Space can be made (before the model is pushed)."""
    try:
        from hf_cai.hub.space import check_installable, create_space
    except ImportError:
        raise PublishError("space=True needs hf_cai.hub.space, which this installation does not provide") from None
    check_installable(private, None)
    return create_space


def publish_dataset(
    dataset_or_path: Any,
    repo_id: str,
    constitution: Constitution | str | Path,
    *,
    token: str | None = None,
    license: str | None = None,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    models: Sequence[str] = (),
    license_name: str | None = None,
    license_link: str | None = None,
    card_template: str | Path | None = None,
) -> PublishResult:
    """Publish an SL-CAI or RL-CAI dataset as parquet, with a generated dataset card and ``constitution.yaml``.

    Args:
        dataset_or_path: ``DatasetDict``, ``Dataset`` (published as split ``train``) or a ``save_to_disk`` folder.
        repo_id: Target dataset repository, ``owner/name``; created when missing.
        constitution: The constitution the rows were generated under (object, built-in name or file); it must match
            the rows' ``constitution_sha256``.
        token: Hub token with write access; defaults to ``HF_TOKEN`` or the saved login.
        license: Hub license id of the data (required).
        private: Create the repository private.
        revision: Branch to publish to (created from ``main`` when missing).
        create_pr: Open a pull request instead of committing.
        commit_message: Summary of the commit.
        models: Hub ids of models trained on the data, linked from the card.
        license_name: Short name of the license when ``license="other"``.
        license_link: Link to the license text when ``license="other"``.
        card_template: A Jinja template file replacing ``model_cards/dataset_card.md.j2``.

    Each split becomes ``data/<split>-00000-of-00001.parquet``, declared in the card's ``configs`` so that
    ``datasets.load_dataset(repo_id)`` loads the same splits. Empty splits are left out (``load_dataset`` cannot read
    a split without rows).
    """
    from datasets import DatasetDict
    from huggingface_hub import HfApi

    from hf_cai import __version__
    from hf_cai.constitution import ConstitutionError
    from hf_cai.hub.dataset_card import build_dataset_card, data_file_path
    from hf_cai.hub.training_data import constitution_hashes, load_dataset_dict

    check_repo_id(repo_id)
    token = resolve_token(token)
    dataset = load_dataset_dict(dataset_or_path)
    empty = [name for name, split in dataset.items() if split.num_rows == 0]
    if empty:
        logger.info(
            "not publishing the empty split(s) %s: load_dataset cannot read a split without rows", ", ".join(empty)
        )
        dataset = DatasetDict({name: split for name, split in dataset.items() if split.num_rows})
    if not dataset:
        raise PublishError("the dataset has no rows in any split; nothing to publish")
    try:
        rules = Constitution.resolve(constitution)
    except ConstitutionError as error:
        raise PublishError(f"the constitution could not be read: {error}") from None
    foreign = constitution_hashes(dataset) - {rules.sha256}
    if foreign:
        raise PublishError(
            f"the rows were generated under constitution sha256 {sorted(foreign)[0]}, not under {rules.name} "
            f"v{rules.version} (sha256 {rules.sha256}); pass the constitution the data was built with"
        )
    card = build_dataset_card(
        dataset,
        repo_id=repo_id,
        constitution=rules,
        license=license,
        license_name=license_name,
        license_link=license_link,
        models=models,
        template=card_template,
    )
    revision = revision or "main"
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf-cai-dataset-") as staging:
        files = []
        for split, rows in dataset.items():
            target = Path(staging) / data_file_path(split)
            target.parent.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(str(target))
            files.append(UploadFile(data_file_path(split), target))
        files.append(UploadFile(CONSTITUTION_FILE, rules.to_yaml().encode()))
        files.append(UploadFile("README.md", str(card).encode()))
        check_no_secrets(files, token)
        repo_url = _prepare_repo(
            api, repo_id, repo_type="dataset", private=private, revision=revision, create_pr=create_pr, token=token
        )
        message = (
            commit_message or f"Publish CAI dataset built with {rules.name} v{rules.version} (hf_cai {__version__})"
        )
        with hub_errors(f"committing to dataset {repo_id}", token, PublishError):
            outcome = commit_files(
                api,
                repo_id,
                files,
                repo_type="dataset",
                revision=revision,
                commit_message=message,
                replaces=DATASET_DATA_FILES,
                create_pr=create_pr,
            )
    logger.info("published dataset %s (%s)", repo_url, outcome.commit_oid or "no change")
    return PublishResult(
        repo_id=repo_id,
        repo_type="dataset",
        repo_url=repo_url,
        revision=revision,
        commit_oid=outcome.commit_oid,
        commit_url=outcome.commit_url,
        pr_url=outcome.pr_url,
        files=tuple(f.path_in_repo for f in files),
        uploaded=outcome.changed,
        deleted=outcome.deleted,
    )
