"""Finding published CAI models and comparing their constitutions.

Models published by hf_cai carry ``constitution: {name, version, sha256}`` in their card metadata, so a listing by
tag shows at a glance which constitution each model was aligned to; :func:`compare_constitutions` then shows how two
published constitutions differ, principle by principle.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution, Principle
from hf_cai.hub.errors import HubError, hub_errors

logger = logging.getLogger(__name__)

DEFAULT_TAGS = ("constitutional-ai",)
_PREFIXES = {"datasets/": "dataset", "spaces/": "space", "models/": "model"}
_PRINCIPLE_FIELDS = ("critique", "revision", "preference", "tags", "weight")


@dataclass(frozen=True)
class CAIModelInfo:
    """A CAI model found on the Hub, with the constitution its card names.

    Args:
        repo_id: The model repository.
        base_model: ``base_model`` of its card (a Hub id, or a list of them).
        constitution_name: Name of the constitution, when the card or ``constitution.yaml`` says.
        constitution_version: Its version.
        constitution_sha256: Its canonical sha256 (compare these to know whether two models share a constitution).
        library_name: ``peft`` for adapters, ``transformers`` for full models.
        tags: The repository's tags.
    """

    repo_id: str
    base_model: str | list[str] | None
    constitution_name: str | None
    constitution_version: str | None
    constitution_sha256: str | None
    library_name: str | None
    tags: tuple[str, ...]


def list_cai_models(
    *,
    tags: Sequence[str] = DEFAULT_TAGS,
    author: str | None = None,
    search: str | None = None,
    limit: int | None = 50,
    read_constitution_files: bool = True,
    token: str | None = None,
) -> list[CAIModelInfo]:
    """Models on the Hub carrying all of ``tags``, with their base model and constitution.

    Args:
        tags: Tags every listed model has (default: ``constitutional-ai``; add ``hf-cai`` for models made with hf_cai).
        author: Only models of this user or organisation.
        search: Only models whose id contains this text.
        limit: At most this many models.
        read_constitution_files: For cards without ``constitution`` metadata, read the repository's
            ``constitution.yaml`` (one download per such model).
        token: Hub token, for private models.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with hub_errors(f"listing models tagged {', '.join(tags)}", token):
        models = list(api.list_models(filter=list(tags), author=author, search=search, limit=limit, cardData=True))
    found = []
    for model in models:
        card = model.card_data
        recorded = card.get("constitution") if card is not None else None
        name = version = sha256 = None
        if isinstance(recorded, Mapping):
            name, version, sha256 = recorded.get("name"), recorded.get("version"), recorded.get("sha256")
        elif read_constitution_files:
            try:
                constitution = Constitution.from_hub(model.id, token=token)
                name, version, sha256 = constitution.name, constitution.version, constitution.sha256
            except Exception as error:  # a model without a readable constitution is still listed
                logger.debug("%s: no readable constitution.yaml (%s)", model.id, type(error).__name__)
        found.append(
            CAIModelInfo(
                repo_id=model.id,
                base_model=card.get("base_model") if card is not None else None,
                constitution_name=name,
                constitution_version=None if version is None else str(version),
                constitution_sha256=sha256,
                library_name=model.library_name,
                tags=tuple(model.tags or ()),
            )
        )
    return found


def load_constitution_ref(
    reference: Constitution | str | Path,
    *,
    repo_type: str | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> Constitution:
    """A constitution from an object, a local file, a built-in name, or a Hub repository.

    A Hub reference is ``owner/name`` (tried as a model, then a dataset, then a Space unless ``repo_type`` is given) or
    ``datasets/owner/name`` / ``spaces/owner/name``; its ``constitution.yaml`` is read.
    """
    if isinstance(reference, Constitution):
        return reference
    text = str(reference)
    if Path(text).is_file() or text in Constitution.list_builtin():
        return Constitution.resolve(text)
    for prefix, kind in _PREFIXES.items():
        if text.startswith(prefix):
            text, repo_type = text[len(prefix) :], kind
            break
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    candidates = [repo_type] if repo_type else ["model", "dataset", "space"]
    for kind in candidates:
        with hub_errors(f"reading constitution.yaml of {kind} {text}", token):
            try:
                return Constitution.from_hub(text, repo_type=kind, revision=revision, token=token)
            except (RepositoryNotFoundError, RemoteEntryNotFoundError):
                continue
    raise HubError(
        f"'{reference}' is not a local constitution file, a built-in constitution ({', '.join(Constitution.list_builtin())}) "
        f"or a {'/'.join(candidates)} repository on the Hub with a constitution.yaml"
    )


@dataclass(frozen=True)
class PrincipleChange:
    """A principle present in both constitutions whose texts or settings differ."""

    id: str
    before: Principle
    after: Principle

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for f in _PRINCIPLE_FIELDS if getattr(self.before, f) != getattr(self.after, f))


@dataclass(frozen=True)
class ConstitutionDiff:
    """Principle-level difference between two constitutions (``left`` → ``right``)."""

    left: Constitution
    right: Constitution
    added: tuple[Principle, ...]
    removed: tuple[Principle, ...]
    changed: tuple[PrincipleChange, ...]
    unchanged: tuple[str, ...]
    metadata: tuple[tuple[str, Any, Any], ...]

    @property
    def identical(self) -> bool:
        return self.left.sha256 == self.right.sha256

    def to_text(self) -> str:
        """A readable report: identity of both sides, then added, removed and changed principles with word diffs."""
        lines = [
            f"A: {self.left.name} v{self.left.version}  sha256 {self.left.sha256}",
            f"B: {self.right.name} v{self.right.version}  sha256 {self.right.sha256}",
        ]
        if self.identical:
            return "\n".join([*lines, "identical (same canonical sha256)"])
        for field, before, after in self.metadata:
            lines.append(f"~ {field}: {before!r} → {after!r}")
        lines.append(
            f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged principles"
        )
        for principle in self.added:
            lines.append(f"+ {principle.id}: {principle.critique or principle.preference}")
        for principle in self.removed:
            lines.append(f"- {principle.id}: {principle.critique or principle.preference}")
        for change in self.changed:
            lines.append(f"~ {change.id} ({', '.join(change.fields)})")
            for field in change.fields:
                lines.append(f"    {field}: {_word_diff(getattr(change.before, field), getattr(change.after, field))}")
        return "\n".join(lines)


def _word_diff(before: Any, after: Any) -> str:
    """Words removed as ``[-...-]`` and added as ``{+...+}``."""
    if not isinstance(before, str) or not isinstance(after, str):
        return f"{before!r} → {after!r}"
    old, new = before.split(), after.split()
    parts = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            parts.extend(old[i1:i2])
            continue
        if i2 > i1:
            parts.append("[-" + " ".join(old[i1:i2]) + "-]")
        if j2 > j1:
            parts.append("{+" + " ".join(new[j1:j2]) + "+}")
    return " ".join(parts)


def compare_constitutions(
    left: Constitution | str | Path, right: Constitution | str | Path, *, token: str | None = None
) -> ConstitutionDiff:
    """Compare two constitutions given as objects, files, built-in names or Hub repositories (see
    :func:`load_constitution_ref`)."""
    a = load_constitution_ref(left, token=token)
    b = load_constitution_ref(right, token=token)
    ids_a = {p.id: p for p in a.principles}
    ids_b = {p.id: p for p in b.principles}
    changed = tuple(
        PrincipleChange(pid, ids_a[pid], ids_b[pid]) for pid in ids_a if pid in ids_b and ids_a[pid] != ids_b[pid]
    )
    metadata = tuple(
        (field, getattr(a, field), getattr(b, field))
        for field in ("name", "version", "description", "license", "system_prompt")
        if getattr(a, field) != getattr(b, field)
    )
    few_shot = [
        (f"few-shot {kind} examples", len(getattr(a, attr)), len(getattr(b, attr)))
        for kind, attr in (("critique/revision", "critique_revision_examples"), ("preference", "preference_examples"))
        if getattr(a, attr) != getattr(b, attr)
    ]
    return ConstitutionDiff(
        left=a,
        right=b,
        added=tuple(p for p in b.principles if p.id not in ids_a),
        removed=tuple(p for p in a.principles if p.id not in ids_b),
        changed=changed,
        unchanged=tuple(pid for pid in ids_a if pid in ids_b and ids_a[pid] == ids_b[pid]),
        metadata=metadata + tuple(few_shot),
    )
