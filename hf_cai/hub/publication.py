"""What every publication does once its files are ready: check them for tokens, create the repository (and branch),
commit them in one commit, and report the outcome as a :class:`PublishResult`.

Models (:mod:`hf_cai.hub.model_publish`), datasets (:mod:`hf_cai.hub.dataset_publish`) and Spaces
(:mod:`hf_cai.hub.space`) differ only in the files they build; they all end here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hf_cai.hub.commit import UploadFile, commit_files
from hf_cai.hub.errors import PublishError, hub_errors
from hf_cai.hub.secrets import check_no_secrets

logger = logging.getLogger(__name__)


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


def commit_publication(
    repo_id: str,
    files: Sequence[UploadFile],
    *,
    repo_type: str,
    token: str,
    commit_message: str,
    replaces: Sequence[str] = (),
    private: bool = False,
    revision: str = "main",
    create_pr: bool = False,
    space_sdk: str | None = None,
) -> PublishResult:
    """Publish ``files`` to ``repo_id`` in one commit, after checking that none holds an access token.

    The repository is created when missing (``private``; a Space with ``space_sdk``), and so is ``revision`` (from
    ``main``) unless ``create_pr`` asks for a pull request against it. Files matching ``replaces`` that are not among
    ``files`` are deleted by the commit (see :func:`~hf_cai.hub.commit.commit_files`); no commit is made when nothing
    changed.

    Raises:
        PublishError: a file holds a token (nothing is sent), or the Hub refused a step (with what to do).
    """
    from huggingface_hub import HfApi

    check_no_secrets(files, token)
    api = HfApi(token=token)
    with hub_errors(f"creating {repo_type} repo {repo_id}", token, PublishError):
        repo_url = str(
            api.create_repo(repo_id, repo_type=repo_type, private=private, space_sdk=space_sdk, exist_ok=True)
        )
    if revision != "main":
        _prepare_branch(api, repo_id, repo_type=repo_type, revision=revision, create_pr=create_pr, token=token)
    target = repo_id if repo_type == "model" else f"{repo_type} {repo_id}"
    with hub_errors(f"committing to {target}", token, PublishError):
        outcome = commit_files(
            api,
            repo_id,
            files,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            replaces=replaces,
            create_pr=create_pr,
        )
    logger.info("published %s %s (%s)", repo_type, repo_url, outcome.commit_oid or "no change")
    return PublishResult(
        repo_id=repo_id,
        repo_type=repo_type,
        repo_url=repo_url,
        revision=revision,
        commit_oid=outcome.commit_oid,
        commit_url=outcome.commit_url,
        pr_url=outcome.pr_url,
        files=tuple(f.path_in_repo for f in files),
        uploaded=outcome.changed,
        deleted=outcome.deleted,
    )


def _prepare_branch(api, repo_id: str, *, repo_type: str, revision: str, create_pr: bool, token: str) -> None:
    """Create ``revision`` from ``main`` when missing; a pull request needs it to exist already."""
    with hub_errors(f"preparing branch '{revision}' of {repo_id}", token, PublishError):
        branches = {b.name for b in api.list_repo_refs(repo_id, repo_type=repo_type).branches}
        if revision in branches:
            return
        if create_pr:
            raise PublishError(
                f"create_pr=True opens a pull request against an existing branch, and {repo_id} has no branch "
                f"'{revision}'; publish to it first, or omit revision to open the pull request against main"
            )
        logger.info("%s: creating branch '%s' from main", repo_id, revision)
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
