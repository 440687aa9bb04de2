"""Publishing a set of files as one commit, and only when something changed.

Each local file is compared with the file at the same path on the target revision: a regular git file by its git
blob id (sha1 of ``"blob <size>\\0" + content``), an LFS/Xet file by its sha256. When every file matches, no commit is
made; otherwise one commit carries exactly the files that differ. Re-running an interrupted or finished publication
is therefore safe and cheap.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class UploadFile:
    """One file of a publication: where it goes in the repository and its content (a local file or bytes)."""

    path_in_repo: str
    source: Path | bytes

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size

    def _digest(self, digest, *, git_header: bool) -> str:
        if git_header:
            digest.update(b"blob %d\0" % self.size)
        if isinstance(self.source, bytes):
            digest.update(self.source)
        else:
            with open(self.source, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
        return digest.hexdigest()

    def git_blob_id(self) -> str:
        return self._digest(hashlib.sha1(), git_header=True)

    def sha256(self) -> str:
        return self._digest(hashlib.sha256(), git_header=False)


@dataclass(frozen=True)
class CommitOutcome:
    """What :func:`commit_changed_files` did: the new commit (``None`` when nothing changed) and the files it carried."""

    commit_oid: str | None
    commit_url: str | None
    pr_url: str | None
    changed: tuple[str, ...]


def changed_files(api, repo_id: str, files: list[UploadFile], *, repo_type: str, revision: str) -> list[UploadFile]:
    """The files whose content differs from (or is missing on) ``revision`` of the repository."""
    from huggingface_hub.hf_api import RepoFile

    remote = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True)
        if isinstance(entry, RepoFile)
    }
    changed = []
    for file in files:
        entry = remote.get(file.path_in_repo)
        if entry is None or entry.size != file.size:
            changed.append(file)
        elif entry.lfs is not None:
            if entry.lfs.sha256 != file.sha256():
                changed.append(file)
        elif entry.blob_id != file.git_blob_id():
            changed.append(file)
    return changed


def commit_changed_files(
    api,
    repo_id: str,
    files: list[UploadFile],
    *,
    repo_type: str,
    revision: str,
    commit_message: str,
    commit_description: str | None = None,
    create_pr: bool = False,
) -> CommitOutcome:
    """Commit the files of ``files`` that changed, in one commit (or a pull request); nothing when none changed."""
    from huggingface_hub import CommitOperationAdd

    changed = changed_files(api, repo_id, files, repo_type=repo_type, revision=revision)
    if not changed:
        logger.info("%s: all %d files are already up to date on '%s'; no commit made", repo_id, len(files), revision)
        return CommitOutcome(None, None, None, ())
    logger.info(
        "%s: committing %d changed file(s) of %d: %s",
        repo_id,
        len(changed),
        len(files),
        ", ".join(f.path_in_repo for f in changed),
    )
    operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.source) for f in changed]
    info = api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message,
        commit_description=commit_description,
        repo_type=repo_type,
        revision=revision,
        create_pr=create_pr,
    )
    return CommitOutcome(info.oid, info.commit_url, info.pr_url, tuple(f.path_in_repo for f in changed))
