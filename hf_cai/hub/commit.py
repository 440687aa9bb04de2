"""Publishing a set of files as one commit.

Every file of the publication is handed to ``HfApi.create_commit``, which leaves out the files whose content the
branch already has and makes no commit at all when nothing changed; so re-running a finished or interrupted
publication is safe and cheap. Files of an earlier publication that this one replaces (the adapter after a merged
model, a split that no longer exists) are deleted in the same commit, so the repository never holds both.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadFile:
    """One file of a publication: where it goes in the repository and its content (a local file or bytes)."""

    path_in_repo: str
    source: Path | bytes

    def read(self) -> bytes:
        """The content of the file."""
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()


def write_files(files: Sequence[UploadFile], folder: Path) -> None:
    """Write ``files`` into ``folder`` laid out like the repository (``hf upload`` of it commits the same files)."""
    for file in files:
        target = folder / file.path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read())


@dataclass(frozen=True)
class CommitOutcome:
    """What :func:`commit_files` did: the new commit (``None`` when nothing changed), and the files it added or
    changed and deleted."""

    commit_oid: str | None
    commit_url: str | None
    pr_url: str | None
    changed: tuple[str, ...]
    deleted: tuple[str, ...]


def commit_files(
    api,
    repo_id: str,
    files: Sequence[UploadFile],
    *,
    repo_type: str,
    revision: str,
    commit_message: str,
    replaces: Sequence[str] = (),
    create_pr: bool = False,
) -> CommitOutcome:
    """Commit ``files`` to ``revision`` in one commit (or pull request), deleting what they replace.

    Args:
        api: An authenticated ``huggingface_hub.HfApi``.
        repo_id: The repository, which must exist.
        files: Every file of the publication, changed or not.
        repo_type: ``"model"``, ``"dataset"`` or ``"space"``.
        revision: The branch to commit to (the base branch of the pull request with ``create_pr``).
        commit_message: Summary of the commit.
        replaces: Glob patterns of repository paths this publication owns: a file matching one that is not among
            ``files`` is deleted by the commit.
        create_pr: Open a pull request instead of committing to ``revision``.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    head = api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
    before = {sibling.rfilename: sibling.blob_id for sibling in head.siblings or ()}
    ours = {file.path_in_repo for file in files}
    stale = sorted(path for path in before if path not in ours and any(fnmatch.fnmatchcase(path, p) for p in replaces))
    operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.source) for f in files]
    operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
    # parent_commit: the deletions were chosen from this state of the branch, so a commit made meanwhile fails (412)
    # instead of being silently overwritten.
    info = api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message,
        repo_type=repo_type,
        revision=revision,
        create_pr=create_pr,
        parent_commit=head.sha,
    )
    if info.oid == head.sha:
        logger.info("%s: all %d files are already up to date on '%s'; no commit made", repo_id, len(files), revision)
        return CommitOutcome(None, None, None, (), ())
    after = api.repo_info(repo_id, repo_type=repo_type, revision=info.oid, files_metadata=True)
    now = {sibling.rfilename: sibling.blob_id for sibling in after.siblings or ()}
    changed = tuple(f.path_in_repo for f in files if before.get(f.path_in_repo) != now.get(f.path_in_repo))
    logger.info(
        "%s: committed %d changed file(s) of %d%s",
        repo_id,
        len(changed),
        len(files),
        f" and deleted {', '.join(stale)}" if stale else "",
    )
    return CommitOutcome(info.oid, info.commit_url, info.pr_url, changed, tuple(stale))
