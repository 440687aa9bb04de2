"""Finding published CAI models and comparing their constitutions.

Models published by hf_cai carry ``constitution: {name, version, sha256}`` in their card metadata, so a listing by
tag shows at a glance which constitution each model was aligned to; :func:`compare_constitutions` then shows how two
constitutions differ, principle by principle: published ones, local files and folders, or built-in ones. Principles
pair by their text as well as by their id, so two copies of the same constitution that number their principles
differently (llm-swarm's ``principle-0`` ..., the paper's ``harmful0`` ...) still line up.

With offline mode on (``HF_HUB_OFFLINE=1``), what needs the Hub says so and how to turn it off.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_cai.constitution import Constitution, Principle
from hf_cai.hub.errors import HubError, hub_errors
from hf_cai.hub.repo_id import repo_id_problem

logger = logging.getLogger(__name__)

DEFAULT_TAGS = ("constitutional-ai",)
_PREFIXES = {"datasets/": "dataset", "spaces/": "space", "models/": "model"}
_PRINCIPLE_FIELDS = ("critique", "revision", "preference", "tags", "weight")
_TEXT_FIELDS = ("critique", "revision", "preference")
_TRUE = {"1", "ON", "YES", "TRUE"}

TEXT_MATCH_THRESHOLD = 0.8
"""How alike (0-1, word-level :class:`difflib.SequenceMatcher` ratio of the normalised texts) two principles with
different ids must be to pair as one principle changed, rather than one removed and one added."""


def offline_setting() -> str | None:
    """The environment setting that turned the Hub's offline mode on (``"HF_HUB_OFFLINE=1"``), or ``None`` when
    ``huggingface_hub.is_offline_mode()`` says it is off."""
    from huggingface_hub import is_offline_mode

    if not is_offline_mode():
        return None
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(variable, "")
        if value.strip().upper() in _TRUE:
            return f"{variable}={value}"
    return "HF_HUB_OFFLINE=1"


def offline_advice(setting: str) -> str:
    """How to turn off the offline mode that ``setting`` (see :func:`offline_setting`) turned on."""
    variable = setting.partition("=")[0]
    return f"Turn offline mode off (unset {variable}, or set {variable}=0) and run again."


def _refuse_offline(action: str) -> None:
    setting = offline_setting()
    if setting is not None:
        raise HubError(f"{action} needs the Hub, but offline mode is on ({setting}). {offline_advice(setting)}")


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

    _refuse_offline(f"listing models tagged {', '.join(tags)}")
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
    """A constitution from an object, a local file or folder, a built-in name, or a Hub repository.

    A local folder stands for its ``constitution.yaml`` (a trained model, a publication folder) or the paper's
    instruction files (see :meth:`Constitution.load`). A Hub reference is ``owner/name`` (tried as a model, then a
    dataset, then a Space unless ``repo_type`` is given) or ``datasets/owner/name`` / ``spaces/owner/name``; its
    ``constitution.yaml`` is read. In offline mode only the local Hub cache is read, and a miss says offline mode is on.
    """
    if isinstance(reference, Constitution):
        return reference
    text = str(reference)
    if Path(text).exists() or text in Constitution.list_builtin():
        return Constitution.resolve(text)
    for prefix, kind in _PREFIXES.items():
        if text.startswith(prefix):
            text, repo_type = text[len(prefix) :], kind
            break
    if "/" not in text or repo_id_problem(text) is not None:
        return Constitution.resolve(str(reference))  # a missing file or folder, or a typo of a built-in name
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = offline_setting()
    missing = (RepositoryNotFoundError, RemoteEntryNotFoundError)
    if offline is not None:
        missing += (LocalEntryNotFoundError, OfflineModeIsEnabled)
    candidates = [repo_type] if repo_type else ["model", "dataset", "space"]
    for kind in candidates:
        with hub_errors(f"reading constitution.yaml of {kind} {text}", token):
            try:
                return Constitution.from_hub(text, repo_type=kind, revision=revision, token=token)
            except missing:
                continue
    if offline is not None:
        raise HubError(
            f"'{reference}' is not a local constitution file or folder, nor a built-in constitution, and offline mode "
            f"is on ({offline}): the Hub was not asked, and its local cache holds no constitution.yaml of a "
            f"{'/'.join(candidates)} {text}. {offline_advice(offline)}"
        )
    raise HubError(
        f"'{reference}' is not a local constitution file or folder, a built-in constitution "
        f"({', '.join(Constitution.list_builtin())}) or a {'/'.join(candidates)} repository on the Hub with a "
        "constitution.yaml"
    )


@dataclass(frozen=True)
class PrincipleChange:
    """A principle present in both constitutions whose texts or settings differ.

    Args:
        id: Its id in the left constitution.
        before: The principle in the left constitution.
        after: The principle in the right one (its id differs when the two paired by text).
        matched_by: ``"id"`` or ``"text"`` (same or alike texts under different ids).
        similarity: How alike the normalised texts are, 0-1 (1.0 for the same texts).
    """

    id: str
    before: Principle
    after: Principle
    matched_by: str = "id"
    similarity: float = 1.0

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields that differ (``critique``, ``revision``, ``preference``, ``tags``, ``weight``)."""
        return tuple(f for f in _PRINCIPLE_FIELDS if getattr(self.before, f) != getattr(self.after, f))

    @property
    def label(self) -> str:
        """``id``, or ``left-id → right-id`` when the ids differ."""
        return self.id if self.after.id == self.id else f"{self.id} → {self.after.id}"


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
    renamed: tuple[tuple[str, str], ...] = ()
    """Principles the same in both but for their id: ``(left id, right id)``."""

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
        by_text = sum(change.matched_by == "text" for change in self.changed) + len(self.renamed)
        lines.append(
            f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed, "
            f"{len(self.renamed)} renamed, {len(self.unchanged)} unchanged principles"
            + (f" ({by_text} paired by their text under different ids)" if by_text else "")
        )
        for principle in self.added:
            lines.append(f"+ {principle.id}: {principle.critique or principle.preference}")
        for principle in self.removed:
            lines.append(f"- {principle.id}: {principle.critique or principle.preference}")
        for before, after in self.renamed:
            lines.append(f"= {before} → {after} (same texts, new id)")
        for change in self.changed:
            how = f"matched by text, {change.similarity:.0%} alike; " if change.matched_by == "text" else ""
            lines.append(f"~ {change.label} ({how}{', '.join(change.fields)})")
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


def _normalised_words(principle: Principle) -> tuple[str, ...]:
    """The words of a principle's texts, lower-cased, without punctuation; ``|`` separates the texts."""
    words: list[str] = []
    for field in _TEXT_FIELDS:
        words += [*re.findall(r"\w+", (getattr(principle, field) or "").lower()), "|"]
    return tuple(words)


def _pair_principles(
    left: Sequence[Principle], right: Sequence[Principle]
) -> list[tuple[Principle, Principle, str, float]]:
    """Pairs ``(left, right, matched_by, similarity)``: first the same normalised texts (the same id first), then the
    same ids, then the most alike texts at least :data:`TEXT_MATCH_THRESHOLD` alike, best first."""
    pairs: list[tuple[Principle, Principle, str, float]] = []
    free_left, free_right = list(left), list(right)
    words = {id(p): _normalised_words(p) for p in (*left, *right)}

    def take(a: Principle, b: Principle, how: str, similarity: float) -> None:
        pairs.append((a, b, how, similarity))
        free_left.remove(a)
        free_right.remove(b)

    for a in list(free_left):
        same = [b for b in free_right if words[id(b)] == words[id(a)]]
        if same:
            b = next((b for b in same if b.id == a.id), same[0])
            take(a, b, "id" if b.id == a.id else "text", 1.0)
    for a in list(free_left):
        b = next((b for b in free_right if b.id == a.id), None)
        if b is not None:
            take(a, b, "id", difflib.SequenceMatcher(a=words[id(a)], b=words[id(b)], autojunk=False).ratio())
    scored = []
    for i, a in enumerate(free_left):
        for j, b in enumerate(free_right):
            matcher = difflib.SequenceMatcher(a=words[id(a)], b=words[id(b)], autojunk=False)
            if matcher.real_quick_ratio() >= TEXT_MATCH_THRESHOLD and matcher.quick_ratio() >= TEXT_MATCH_THRESHOLD:
                ratio = matcher.ratio()
                if ratio >= TEXT_MATCH_THRESHOLD:
                    scored.append((-ratio, i, j, a, b))
    for negative_ratio, _, _, a, b in sorted(scored, key=lambda item: item[:3]):
        if a in free_left and b in free_right:
            take(a, b, "text", -negative_ratio)
    return pairs


def compare_constitutions(
    left: Constitution | str | Path, right: Constitution | str | Path, *, token: str | None = None
) -> ConstitutionDiff:
    """Compare two constitutions given as objects, files, folders, built-in names or Hub repositories (see
    :func:`load_constitution_ref`).

    Principles pair by their normalised text (lower case, no punctuation) whatever their ids, then by id, then by
    texts at least :data:`TEXT_MATCH_THRESHOLD` alike; the others are added or removed.
    """
    a = load_constitution_ref(left, token=token)
    b = load_constitution_ref(right, token=token)
    pairs = _pair_principles(a.principles, b.principles)
    paired_left = {id(p) for p, _, _, _ in pairs}
    paired_right = {id(q) for _, q, _, _ in pairs}
    order = {p.id: index for index, p in enumerate(a.principles)}
    pairs.sort(key=lambda pair: order[pair[0].id])
    changed = tuple(PrincipleChange(p.id, p, q, how, similarity) for p, q, how, similarity in pairs if not _same(p, q))
    renamed = tuple((p.id, q.id) for p, q, _, _ in pairs if _same(p, q) and p.id != q.id)
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
        added=tuple(p for p in b.principles if id(p) not in paired_right),
        removed=tuple(p for p in a.principles if id(p) not in paired_left),
        changed=changed,
        unchanged=tuple(p.id for p, q, _, _ in pairs if _same(p, q) and p.id == q.id),
        metadata=metadata + tuple(few_shot),
        renamed=renamed,
    )


def _same(before: Principle, after: Principle) -> bool:
    """Whether two principles agree in everything but their id."""
    return all(getattr(before, field) == getattr(after, field) for field in _PRINCIPLE_FIELDS)
