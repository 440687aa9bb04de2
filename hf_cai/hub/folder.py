"""Writing a model publication into a local folder instead of pushing it: for offline runs, and for reviewing a
publication before it goes to the Hub (``hf upload`` of the folder gives the same repository)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from hf_cai.hub.commit import write_files
from hf_cai.hub.model_files import model_publication
from hf_cai.hub.repo_id import check_repo_id

logger = logging.getLogger(__name__)


def publish_to_folder(source: str | Path, folder: str | Path, *, repo_id: str, **options: Any) -> tuple[str, ...]:
    """Write exactly the files :func:`~hf_cai.hub.model_publish.publish` would commit into a local ``folder`` laid out
    like the repository.

    ``repo_id`` names the future repository in the card; ``options`` are ``publish``'s keyword arguments that shape
    the files (``base_model_id``, ``license``, ``merge``, ``merge_dtype``, ``datasets``, ``training_data``,
    ``eval_results``, ``constitution``, ``license_name``, ``license_link``, ``card_template``). Returns the
    repository paths written; other files already in ``folder`` are left alone.
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    with tempfile.TemporaryDirectory(prefix="hf-cai-publish-") as staging:
        files = model_publication(source, repo_id, Path(staging), **options).files
        write_files(files, folder)
    logger.info("wrote %d files of %s to %s", len(files), repo_id, folder)
    return tuple(f.path_in_repo for f in files)
