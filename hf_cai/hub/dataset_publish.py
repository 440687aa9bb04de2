"""Publishing an SL-CAI or RL-CAI dataset to the Hugging Face Hub, or writing it into a local folder.

:func:`publish_dataset` pushes the splits as parquet with a generated dataset card, ``constitution.yaml`` and
``provenance.json`` (the models that wrote and labelled the data, its sampling settings and seed:
:mod:`hf_cai.hub.dataset_provenance`), in a single commit holding only the files that changed; parquet files of splits that are no longer published are deleted in
that same commit. Every file is checked for access tokens before anything is sent; the parquet files are built in a
temporary folder. :func:`publish_dataset_to_folder` writes the same files into a local folder laid out like the
repository.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE
from hf_cai.constitution import Constitution, ConstitutionError
from hf_cai.hub.commit import UploadFile, write_files
from hf_cai.hub.dataset_card import build_dataset_card, data_file_path
from hf_cai.hub.dataset_provenance import PROVENANCE_FILE, dataset_provenance, provenance_json
from hf_cai.hub.errors import PublishError
from hf_cai.hub.publication import PublishResult, commit_publication, resolve_token
from hf_cai.hub.repo_id import check_repo_id
from hf_cai.hub.training_data import constitution_hashes, load_dataset_dict

logger = logging.getLogger(__name__)

DATASET_DATA_FILES = ("data/*.parquet",)
"""Data files of a dataset publication: a split that is no longer published is deleted."""


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
    provenance: Mapping[str, Any] | None = None,
    description: str | None = None,
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
        provenance: Where the data came from (``provenance.json`` and the card's Provenance section); by default
            :func:`~hf_cai.hub.dataset_provenance.dataset_provenance` of the folder (its builder's record).
        description: One sentence saying what the data is (the card's ``pretty_name`` and first line).

    Each split becomes ``data/<split>-00000-of-00001.parquet``, declared in the card's ``configs`` so that
    ``datasets.load_dataset(repo_id)`` loads the same splits. Empty splits are left out (``load_dataset`` cannot read
    a split without rows).
    """
    from hf_cai import __version__

    check_repo_id(repo_id)
    token = resolve_token(token)
    with tempfile.TemporaryDirectory(prefix="hf-cai-dataset-") as staging:
        files, constitution = dataset_files(
            dataset_or_path,
            repo_id,
            constitution,
            Path(staging),
            license=license,
            models=models,
            license_name=license_name,
            license_link=license_link,
            card_template=card_template,
            provenance=provenance,
            description=description,
        )
        return commit_publication(
            repo_id,
            files,
            repo_type="dataset",
            token=token,
            commit_message=commit_message
            or f"Publish CAI dataset built with {constitution.name} v{constitution.version} (hf_cai {__version__})",
            replaces=DATASET_DATA_FILES,
            private=private,
            revision=revision or "main",
            create_pr=create_pr,
        )


def publish_dataset_to_folder(
    dataset_or_path: Any, folder: str | Path, *, repo_id: str, constitution: Constitution | str | Path, **options: Any
) -> tuple[str, ...]:
    """Write exactly the files :func:`publish_dataset` would commit into a local ``folder`` laid out like the
    repository (``hf upload --repo-type dataset`` of the folder gives the same repository).

    ``repo_id`` names the future repository in the card; ``options`` are ``publish_dataset``'s keyword arguments that
    shape the files (``license``, ``models``, ``license_name``, ``license_link``, ``card_template``, ``provenance``,
    ``description``). Parquet files of splits no longer published are removed from ``folder/data``; other files are
    left alone. Returns the repository paths written.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="hf-cai-dataset-") as staging:
        files, _ = dataset_files(dataset_or_path, repo_id, constitution, Path(staging), **options)
        written = {file.path_in_repo for file in files}
        for stale in sorted((folder / "data").glob("*.parquet")) if (folder / "data").is_dir() else []:
            if stale.relative_to(folder).as_posix() not in written:
                stale.unlink()
        write_files(files, folder)
    logger.info("wrote %d files of %s to %s", len(files), repo_id, folder)
    return tuple(file.path_in_repo for file in files)


def dataset_files(
    dataset_or_path: Any,
    repo_id: str,
    constitution: Constitution | str | Path,
    staging: Path,
    *,
    license: str | None = None,
    models: Sequence[str] = (),
    license_name: str | None = None,
    license_link: str | None = None,
    card_template: str | Path | None = None,
    provenance: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> tuple[list[UploadFile], Constitution]:
    """Every file of a dataset repository (parquet splits written into ``staging``, ``constitution.yaml``,
    ``provenance.json``, the card last) and the constitution, checked against the rows."""
    dataset = _published_splits(load_dataset_dict(dataset_or_path))
    try:
        constitution = Constitution.resolve(constitution)
    except ConstitutionError as error:
        raise PublishError(f"the constitution could not be read: {error}") from error
    foreign = constitution_hashes(dataset) - {constitution.sha256}
    if foreign:
        raise PublishError(
            f"the rows were generated under constitution sha256 {sorted(foreign)[0]}, not under {constitution.name} "
            f"v{constitution.version} (sha256 {constitution.sha256}); pass the constitution the data was built with"
        )
    if provenance is None:
        provenance = dataset_provenance(dataset_or_path, constitution=constitution)
    # The records beside a dataset folder (quality.json, judge_quality.json, the build record) go into the card:
    # the folder is its source, though the rows were loaded from it already.
    source = dataset_or_path if isinstance(dataset_or_path, (str, Path)) else None
    card = build_dataset_card(
        dataset,
        repo_id=repo_id,
        constitution=constitution,
        license=license,
        license_name=license_name,
        license_link=license_link,
        models=models,
        template=card_template,
        source=source,
        provenance=provenance,
        description=description,
    )
    files = []
    for split, rows in dataset.items():
        target = staging / data_file_path(split)
        target.parent.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(str(target))
        files.append(UploadFile(data_file_path(split), target))
    files.append(UploadFile(CONSTITUTION_FILE, constitution.to_yaml().encode()))
    files.append(UploadFile(PROVENANCE_FILE, provenance_json(provenance)))
    files.append(UploadFile("README.md", str(card).encode()))
    return files, constitution


def _published_splits(dataset):
    """``dataset`` without its empty splits, which ``load_dataset`` could not read back."""
    from datasets import DatasetDict

    empty = [name for name, split in dataset.items() if split.num_rows == 0]
    if empty:
        logger.info(
            "not publishing the empty split(s) %s: load_dataset cannot read a split without rows", ", ".join(empty)
        )
        dataset = DatasetDict({name: split for name, split in dataset.items() if split.num_rows})
    if not dataset:
        raise PublishError("the dataset has no rows in any split; nothing to publish")
    return dataset
