"""The one rule for Hub repository ids, used wherever hf_cai takes one: publication targets, base models, Spaces.

The rule is the Hub client's own (``huggingface_hub.utils.validate_repo_id``): ``name`` or ``owner/name``, letters,
digits, ``-``, ``_`` and ``.``, at most 96 characters each, not starting or ending with ``-`` or ``.``, no ``--`` or
``..``, not ending in ``.git``. A repository hf_cai creates must also name its owner, so that it never lands in
whichever namespace the token happens to belong to.
"""

from __future__ import annotations

from hf_cai.hub.errors import PublishError


def repo_id_problem(repo_id: object, *, owner_required: bool = False) -> str | None:
    """Why ``repo_id`` is not a Hub repository id, as the Hub client words it; ``None`` when it is one.

    Args:
        repo_id: The id to check (anything; only a string can be an id).
        owner_required: Refuse a bare ``name``: the id must be ``owner/name``.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or not repo_id:
        return "a repository id is a non-empty string"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        return str(error)
    if owner_required and "/" not in repo_id:
        return "the id must name its owner: 'owner/name'"
    return None


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it can be published to (a valid ``owner/name`` Hub id); :class:`PublishError` explaining the
    rule otherwise."""
    problem = repo_id_problem(repo_id, owner_required=True)
    if problem is not None:
        raise PublishError(
            f"'{repo_id}' is not a valid repository id: use 'owner/name', owner being your user or organisation name "
            f"({problem})"
        )
    return repo_id
