"""Constitutions published on the Hugging Face Hub, beside the models, datasets and Spaces trained with them."""

from __future__ import annotations

from hf_cai.artifact_files import CONSTITUTION_FILE


def download_constitution_file(
    repo_id: str, *, repo_type: str = "model", revision: str | None = None, token: str | None = None
) -> str:
    """Local path of the ``constitution.yaml`` of a Hub repository, downloaded into the Hub cache."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, CONSTITUTION_FILE, repo_type=repo_type, revision=revision, token=token)
