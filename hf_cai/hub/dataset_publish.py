"""Publishing an SL-CAI or RL-CAI dataset to the Hugging Face Hub.

:func:`publish_dataset` pushes the splits as parquet with a generated dataset card and ``constitution.yaml``, in a
single commit holding only the files that changed; parquet files of splits that are no longer published are deleted in
that same commit. Every file is checked for access tokens before anything is sent; the parquet files are built in a
temporary folder.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cai.artifact_files import CONSTITUTION_FILE
from hf_cai.constitution import Constitution, ConstitutionError
from hf_cai.hub.commit import UploadFile
from hf_cai.hub.dataset_card import build_dataset_card, data_file_path
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
    from hf_cai import __version__

    check_repo_id(repo_id)
    token = resolve_token(token)
    dataset = _published_splits(load_dataset_dict(dataset_or_path))
    try:
        constitution = Constitution.resolve(constitution)
    except ConstitutionError as error:
        raise PublishError(f"the constitution could not be read: {error}") from None
    foreign = constitution_hashes(dataset) - {constitution.sha256}
    if foreign:
        raise PublishError(
            f"the rows were generated under constitution sha256 {sorted(foreign)[0]}, not under {constitution.name} "
            f"v{constitution.version} (sha256 {constitution.sha256}); pass the constitution the data was built with"
        )
    card = build_dataset_card(
        dataset,
        repo_id=repo_id,
        constitution=constitution,
        license=license,
        license_name=license_name,
        license_link=license_link,
        models=models,
        template=card_template,
    )
    with tempfile.TemporaryDirectory(prefix="hf-cai-dataset-") as staging:
        files = []
        for split, rows in dataset.items():
            target = Path(staging) / data_file_path(split)
            target.parent.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(str(target))
            files.append(UploadFile(data_file_path(split), target))
        files.append(UploadFile(CONSTITUTION_FILE, constitution.to_yaml().encode()))
        files.append(UploadFile("README.md", str(card).encode()))
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
