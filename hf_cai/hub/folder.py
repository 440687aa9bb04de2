"""Writing a model publication into a local folder instead of pushing it: for offline runs, and for reviewing a
publication before it goes to the Hub (``hf upload`` of the folder gives the same repository)."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution
from hf_cai.hub.commit import write_files
from hf_cai.hub.model_files import model_publication
from hf_cai.hub.repo_id import check_repo_id
from hf_cai.hub.space import write_space_folder

logger = logging.getLogger(__name__)

PLACEHOLDER_OWNER = "your-username"
"""Owner of the repository a folder's card names when no ``repo_id`` is given (to be replaced before uploading)."""


def default_repo_id(folder: str | Path) -> str:
    """``your-username/<folder name>``, the folder's name made a valid repository name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(folder).resolve().name).strip("-.") or "cai-model"
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name))[:96].strip("-.")
    return f"{PLACEHOLDER_OWNER}/{name}"


def publish_to_folder(
    source: str | Path,
    folder: str | Path,
    repo_id: str | None = None,
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
) -> tuple[str, ...]:
    """Write exactly the files :func:`~hf_cai.hub.model_publish.publish` would commit into a local ``folder`` laid out
    like the repository; it takes ``publish``'s arguments, so a call to one works with the other.

    Args:
        source: Trainer output folder, stage folder or pipeline run directory.
        folder: Where the repository's files are written (created); other files already there are left alone.
        repo_id: The repository the card is written for (its loading snippets and links name it); by default
            ``your-username/<folder name>``, to be replaced before uploading.
        space: Also write the side-by-side chat Space (the Space ``<repo_id>-chat``) into the folder
            ``<folder>-chat`` beside ``folder``.
        token, private, revision, create_pr, commit_message: Accepted so that a call to ``publish`` runs unchanged;
            they shape a push, not the files, and are not used.

    The other arguments shape the files as in ``publish`` (``base_model_id`` is needed only when the training loaded
    the base from a local folder whose Hub id is unknown: an alias or a ``.gguf`` file of a known model names it).

    Returns:
        The repository paths written into ``folder``.
    """
    del token, private, revision, create_pr, commit_message
    if repo_id is None:
        repo_id = default_repo_id(folder)
        logger.info("the card names the repository '%s'; pass repo_id='owner/name' to name the real one", repo_id)
    check_repo_id(repo_id)
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="hf-cai-publish-") as staging:
        publication = model_publication(
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
        write_files(publication.files, folder)
    logger.info("wrote %d files of %s to %s", len(publication.files), repo_id, folder)
    paths = tuple(f.path_in_repo for f in publication.files)
    if space:
        space_folder = folder.with_name(f"{folder.name}-chat")
        write_space_folder(
            space_folder,
            space_repo_id=f"{repo_id}-chat",
            base_model=publication.base_model,
            cai_model=repo_id,
            constitution=publication.constitution,
            cai_is_adapter=publication.training.is_adapter and not merge,
        )
        logger.info("wrote the chat Space of %s to %s", repo_id, space_folder)
    return paths
