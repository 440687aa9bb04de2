"""Constitutions: the principles a model is aligned to, as a first-class, hashable artifact.

A :class:`Constitution` holds :class:`Principle` objects. Each principle carries the texts the
Constitutional AI method needs:

* ``critique`` asks the model to find problems in its last reply (SL-CAI),
* ``revision`` asks it to rewrite that reply (SL-CAI),
* ``preference`` is the multiple-choice question asked of the feedback model (RL-CAI).

A principle used only for one stage may leave the other stage's texts out (the paper's 16 SL and 16 RL
principles are distinct lists). Constitutions load from and save to YAML or JSON; files in the formats of
the open references (llm-swarm JSON, the paper's instruction files) are imported. The canonical
:attr:`Constitution.sha256` is the same whatever the key order or file format.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

Message = dict[str, str]
Conversation = list[Message]
Stage = Literal["critique", "preference"]

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ROLES = ("system", "user", "assistant")


class ConstitutionError(ValueError):
    """A constitution file or object is malformed. The message names the source, the field and the problem."""

    def __init__(self, problem: str, *, source: str | None = None, field_path: str | None = None):
        self.problem = problem
        self.source = source
        self.field_path = field_path
        where = ", ".join(part for part in (source, f"field '{field_path}'" if field_path else None) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class Principle:
    """One principle of a constitution.

    Args:
        id: Unique identifier (letters, digits, ``-``, ``_``, ``.``), recorded in every training row it produced.
        critique: Request asking the model to find problems in its last reply. Set together with ``revision``.
        revision: Request asking the model to rewrite its last reply to fix those problems.
        preference: Multiple-choice question for AI feedback ("Which reply is less harmful?"); the options are
            appended by :meth:`Constitution.preference_messages`.
        tags: Short labels, e.g. ``["harm", "privacy"]``.
        weight: Relative sampling weight (> 0).
    """

    id: str
    critique: str | None = None
    revision: str | None = None
    preference: str | None = None
    tags: tuple[str, ...] = ()
    weight: float = 1.0

    @property
    def has_critique(self) -> bool:
        return self.critique is not None and self.revision is not None

    @property
    def has_preference(self) -> bool:
        return self.preference is not None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id}
        for key in ("critique", "revision", "preference"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.tags:
            data["tags"] = list(self.tags)
        if self.weight != 1.0:
            data["weight"] = self.weight
        return data


@dataclass(frozen=True)
class PreferenceExample:
    """A worked multiple-choice feedback demonstration: which of two replies to ``prompt`` answers ``question`` better."""

    prompt: str
    response_a: str
    response_b: str
    question: str
    answer: Literal["A", "B"]

    def to_dict(self) -> dict[str, str]:
        return {
            "prompt": self.prompt,
            "response_a": self.response_a,
            "response_b": self.response_b,
            "question": self.question,
            "answer": self.answer,
        }


@dataclass(frozen=True)
class Constitution:
    """A named, versioned set of principles plus few-shot demonstrations.

    Args:
        name: Short name, e.g. ``"harmless"``.
        principles: The principles, with unique ids.
        version: Version string of this constitution.
        description: What the constitution is for.
        license: SPDX-style license id of the text (e.g. ``"apache-2.0"``).
        critique_revision_examples: Few-shot chats of six messages each: request, first reply, critique request,
            critique, revision request, revision.
        preference_examples: Few-shot multiple-choice feedback demonstrations.
        system_prompt: Optional system prompt placed before every generated conversation.
    """

    name: str
    principles: tuple[Principle, ...]
    version: str = "1.0"
    description: str = ""
    license: str = "apache-2.0"
    critique_revision_examples: tuple[tuple[Message, ...], ...] = ()
    preference_examples: tuple[PreferenceExample, ...] = ()
    system_prompt: str | None = None
    _by_id: dict[str, Principle] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "principles", tuple(self.principles))
        object.__setattr__(self, "critique_revision_examples", tuple(tuple(c) for c in self.critique_revision_examples))
        object.__setattr__(self, "preference_examples", tuple(self.preference_examples))
        _validate(self.to_dict(), source=f"constitution '{self.name}'")
        object.__setattr__(self, "_by_id", {p.id: p for p in self.principles})

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The constitution as plain data in the documented file schema."""
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "license": self.license,
        }
        if self.system_prompt is not None:
            data["system_prompt"] = self.system_prompt
        data["principles"] = [p.to_dict() for p in self.principles]
        few_shot: dict[str, Any] = {}
        if self.critique_revision_examples:
            few_shot["critique_revision"] = [[dict(m) for m in chat] for chat in self.critique_revision_examples]
        if self.preference_examples:
            few_shot["preference"] = [e.to_dict() for e in self.preference_examples]
        if few_shot:
            data["few_shot"] = few_shot
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> Constitution:
        """Build a constitution from data in the documented schema; raises :class:`ConstitutionError` when malformed."""
        _validate(data, source=source)
        few_shot = data.get("few_shot") or {}
        return cls(
            name=data["name"],
            version=str(data.get("version", "1.0")),
            description=data.get("description", "") or "",
            license=data.get("license", "apache-2.0"),
            system_prompt=data.get("system_prompt"),
            principles=tuple(
                Principle(
                    id=p["id"],
                    critique=p.get("critique"),
                    revision=p.get("revision"),
                    preference=p.get("preference"),
                    tags=tuple(p.get("tags") or ()),
                    weight=float(p.get("weight", 1.0)),
                )
                for p in data["principles"]
            ),
            critique_revision_examples=tuple(
                tuple({"role": m["role"], "content": m["content"]} for m in chat)
                for chat in few_shot.get("critique_revision") or ()
            ),
            preference_examples=tuple(PreferenceExample(**e) for e in few_shot.get("preference") or ()),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the constitution as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            text = self.to_yaml()
        elif suffix == ".json":
            text = self.to_json()
        else:
            raise ConstitutionError(
                f"unknown file extension '{suffix}'; use .yaml, .yml or .json", source=str(path)
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, format: str = "auto") -> Constitution:
        """Load a constitution file.

        Args:
            path: A ``.yaml``/``.yml``/``.json`` file in the hf_cai schema, an llm-swarm constitution JSON, or the
                paper's ``CritiqueRevisionInstructions.json`` (its ``RLMadisonInstructions.json`` and few-shot files
                are picked up from the same folder).
            format: ``"auto"`` (detect), ``"hf_cai"``, ``"llm-swarm"`` or ``"anthropic-paper"``.
        """
        from hf_cai import importers

        path = Path(path)
        if not path.is_file():
            raise ConstitutionError("file not found", source=str(path))
        data = _read_data_file(path)
        detected = importers.detect_format(data) if format == "auto" else format
        if detected == "hf_cai":
            return cls.from_dict(data, source=str(path))
        if detected == "llm-swarm":
            return importers.from_llm_swarm(data, source=path)
        if detected == "anthropic-paper":
            return importers.from_anthropic_paper(path)
        if detected is None:
            raise ConstitutionError(
                "unknown format: expected the hf_cai schema (name, principles, ...), an llm-swarm constitution "
                "(constitutions, system_chat) or the paper's CritiqueRevisionInstructions.json / "
                "RLMadisonInstructions.json",
                source=str(path),
            )
        raise ConstitutionError(
            f"unknown format '{format}'; choose one of: auto, hf_cai, llm-swarm, anthropic-paper", source=str(path)
        )

    # ----------------------------------------------------------------- built-ins
    @staticmethod
    def list_builtin() -> list[str]:
        """Names of the constitutions shipped with hf_cai."""
        folder = resources.files("hf_cai") / "constitutions"
        return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))

    @classmethod
    def builtin(cls, name: str) -> Constitution:
        """Load a built-in constitution by name (see :meth:`list_builtin`)."""
        available = cls.list_builtin()
        if name not in available:
            raise ConstitutionError(f"no built-in constitution '{name}'; available: {', '.join(available)}")
        resource = resources.files("hf_cai") / "constitutions" / f"{name}.yaml"
        return cls.from_dict(_parse_yaml(resource.read_text(encoding="utf-8"), f"builtin:{name}"), source=f"builtin:{name}")

    @classmethod
    def resolve(cls, name_or_path: str | Path | Constitution) -> Constitution:
        """A constitution from a built-in name, a file path, or an existing object."""
        if isinstance(name_or_path, Constitution):
            return name_or_path
        text = str(name_or_path)
        if text in cls.list_builtin() and not Path(text).exists():
            return cls.builtin(text)
        return cls.load(text)

    @classmethod
    def from_hub(
        cls, repo_id: str, *, repo_type: str = "model", revision: str | None = None, token: str | None = None
    ) -> Constitution:
        """Load the ``constitution.yaml`` of a published CAI model, dataset or Space from the Hub."""
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "constitution.yaml", repo_type=repo_type, revision=revision, token=token)
        return cls.load(path)

    # ----------------------------------------------------------------- identity
    @property
    def sha256(self) -> str:
        """sha256 of the canonical form (sorted-key compact JSON of :meth:`to_dict`)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def principle(self, principle_id: str) -> Principle:
        try:
            return self._by_id[principle_id]
        except KeyError:
            raise ConstitutionError(
                f"no principle with id '{principle_id}'; known ids: {', '.join(self._by_id)}",
                source=f"constitution '{self.name}'",
            ) from None

    def principles_for(self, stage: Stage) -> tuple[Principle, ...]:
        """Principles usable for ``"critique"`` (SL-CAI) or ``"preference"`` (RL-CAI)."""
        if stage == "critique":
            chosen = tuple(p for p in self.principles if p.has_critique)
        elif stage == "preference":
            chosen = tuple(p for p in self.principles if p.has_preference)
        else:
            raise ValueError(f"stage must be 'critique' or 'preference', got {stage!r}")
        if not chosen:
            raise ConstitutionError(f"has no principle with {stage} texts", source=f"constitution '{self.name}'")
        return chosen

    def sample(self, k: int, *, seed: int | random.Random, stage: Stage = "critique") -> list[Principle]:
        """Draw ``k`` principles with replacement, proportionally to their weights, reproducibly from ``seed``."""
        pool = self.principles_for(stage)
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        return rng.choices(pool, weights=[p.weight for p in pool], k=k)

    # ----------------------------------------------------------------- rendering
    def few_shot_messages(self) -> list[Message]:
        """The critique→revision demonstrations flattened into one chat prefix."""
        return [dict(m) for chat in self.critique_revision_examples for m in chat]

    def _prefix(self, few_shot: bool) -> list[Message]:
        prefix: list[Message] = []
        if self.system_prompt:
            prefix.append({"role": "system", "content": self.system_prompt})
        if few_shot:
            prefix.extend(self.few_shot_messages())
        return prefix

    def critique_messages(
        self, conversation: Sequence[Message], principle: Principle | str, *, few_shot: bool = True
    ) -> list[Message]:
        """Chat asking for a critique of the last assistant reply of ``conversation`` under ``principle``."""
        principle = self._resolve(principle, "critique")
        _check_last_is_assistant(conversation)
        return [*self._prefix(few_shot), *_without_system(conversation), {"role": "user", "content": principle.critique}]

    def revision_messages(
        self,
        conversation: Sequence[Message],
        principle: Principle | str,
        critique: str,
        *,
        few_shot: bool = True,
    ) -> list[Message]:
        """Chat asking for a revision of the last assistant reply, after the critique the model gave."""
        principle = self._resolve(principle, "critique")
        return [
            *self.critique_messages(conversation, principle, few_shot=few_shot),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": principle.revision},
        ]

    def preference_messages(
        self,
        conversation: Sequence[Message],
        response_a: str,
        response_b: str,
        principle: Principle | str,
        *,
        few_shot: bool = True,
    ) -> list[Message]:
        """Chat asking which of two replies to ``conversation`` better satisfies ``principle``.

        The feedback model answers with ``(A)`` or ``(B)``; the option log-probabilities give the soft label.
        """
        principle = self._resolve(principle, "preference")
        messages: list[Message] = []
        if few_shot:
            for example in self.preference_examples:
                transcript = [{"role": "user", "content": example.prompt}]
                messages.append(
                    {
                        "role": "user",
                        "content": render_preference_question(
                            transcript, example.response_a, example.response_b, example.question
                        ),
                    }
                )
                messages.append({"role": "assistant", "content": f"({example.answer})"})
        messages.append(
            {
                "role": "user",
                "content": render_preference_question(conversation, response_a, response_b, principle.preference),
            }
        )
        return messages

    def _resolve(self, principle: Principle | str, stage: Stage) -> Principle:
        resolved = self.principle(principle) if isinstance(principle, str) else principle
        if stage == "critique" and not resolved.has_critique:
            raise ConstitutionError(f"principle '{resolved.id}' has no critique/revision texts")
        if stage == "preference" and not resolved.has_preference:
            raise ConstitutionError(f"principle '{resolved.id}' has no preference question")
        return resolved


PREFERENCE_OPTIONS = ("(A)", "(B)")


def render_transcript(conversation: Sequence[Message]) -> str:
    """A conversation as a plain ``Human: ... / Assistant: ...`` transcript."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in conversation)


def render_preference_question(
    conversation: Sequence[Message], response_a: str, response_b: str, question: str
) -> str:
    """The multiple-choice feedback question over a conversation and two candidate replies."""
    return (
        "Consider the following conversation between a human and an AI assistant:\n\n"
        f"{render_transcript(_without_system(conversation))}\n\n"
        f"{question.strip()}\n\n"
        f"Options:\n(A) {response_a.strip()}\n(B) {response_b.strip()}\n\n"
        "Answer with (A) or (B) only."
    )


def _without_system(conversation: Sequence[Message]) -> list[Message]:
    return [dict(m) for m in conversation if m.get("role") != "system"]


def _check_last_is_assistant(conversation: Sequence[Message]) -> None:
    if not conversation or conversation[-1].get("role") != "assistant":
        raise ValueError("the conversation to critique must end with an assistant reply")


# --------------------------------------------------------------------- reading and validation
def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConstitutionError(f"YAML syntax error{where}: {problem}", source=source) from None


def _read_data_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ConstitutionError(
                f"JSON syntax error at line {error.lineno}, column {error.colno}: {error.msg}", source=str(path)
            ) from None
    if suffix in (".yaml", ".yml"):
        return _parse_yaml(text, str(path))
    raise ConstitutionError(f"unknown file extension '{suffix}'; use .yaml, .yml or .json", source=str(path))


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _require_text(data: Mapping[str, Any], key: str, path: str, source: str, *, required: bool) -> None:
    if key not in data or data[key] is None:
        if required:
            raise ConstitutionError("missing required field", source=source, field_path=path)
        return
    value = data[key]
    if not isinstance(value, str):
        raise ConstitutionError(f"must be a string, got {_type_name(value)}", source=source, field_path=path)
    if not value.strip():
        raise ConstitutionError("must not be empty", source=source, field_path=path)


def _validate(data: Any, *, source: str) -> None:
    if not isinstance(data, Mapping):
        raise ConstitutionError(f"the top level must be a mapping, got {_type_name(data)}", source=source)
    known = {"name", "version", "description", "license", "system_prompt", "principles", "few_shot"}
    for key in data:
        if key not in known:
            raise ConstitutionError(f"unknown field; known fields: {', '.join(sorted(known))}", source=source, field_path=str(key))
    _require_text(data, "name", "name", source, required=True)
    if "version" in data and not isinstance(data["version"], (str, int, float)):
        raise ConstitutionError(f"must be a string, got {_type_name(data['version'])}", source=source, field_path="version")
    if data.get("description") is not None and not isinstance(data["description"], str):
        raise ConstitutionError(
            f"must be a string, got {_type_name(data['description'])}", source=source, field_path="description"
        )
    _require_text(data, "license", "license", source, required=False)
    _require_text(data, "system_prompt", "system_prompt", source, required=False)

    principles = data.get("principles")
    if principles is None:
        raise ConstitutionError("missing required field", source=source, field_path="principles")
    if not isinstance(principles, list):
        raise ConstitutionError(f"must be a list, got {_type_name(principles)}", source=source, field_path="principles")
    if not principles:
        raise ConstitutionError("must contain at least one principle", source=source, field_path="principles")
    seen: dict[str, int] = {}
    for index, principle in enumerate(principles):
        path = f"principles[{index}]"
        if not isinstance(principle, Mapping):
            raise ConstitutionError(f"must be a mapping, got {_type_name(principle)}", source=source, field_path=path)
        allowed = {"id", "critique", "revision", "preference", "tags", "weight"}
        for key in principle:
            if key not in allowed:
                raise ConstitutionError(
                    f"unknown field; known fields: {', '.join(sorted(allowed))}", source=source, field_path=f"{path}.{key}"
                )
        _require_text(principle, "id", f"{path}.id", source, required=True)
        principle_id = principle["id"]
        if not _ID_PATTERN.match(principle_id):
            raise ConstitutionError(
                f"'{principle_id}' is not a valid id (letters, digits, '-', '_', '.'; no spaces)",
                source=source,
                field_path=f"{path}.id",
            )
        if principle_id in seen:
            raise ConstitutionError(
                f"duplicate principle id '{principle_id}' (first used at principles[{seen[principle_id]}])",
                source=source,
                field_path=f"{path}.id",
            )
        seen[principle_id] = index
        for key in ("critique", "revision", "preference"):
            _require_text(principle, key, f"{path}.{key}", source, required=False)
        has_critique = principle.get("critique") is not None
        has_revision = principle.get("revision") is not None
        if has_critique != has_revision:
            missing = "revision" if has_critique else "critique"
            raise ConstitutionError(
                "missing required field (critique and revision go together)", source=source, field_path=f"{path}.{missing}"
            )
        if not has_critique and principle.get("preference") is None:
            raise ConstitutionError(
                "missing required field: a principle needs critique + revision, a preference question, or both",
                source=source,
                field_path=f"{path}.critique",
            )
        tags = principle.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ConstitutionError("must be a list of strings", source=source, field_path=f"{path}.tags")
        weight = principle.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConstitutionError(f"must be a number > 0, got {weight!r}", source=source, field_path=f"{path}.weight")

    few_shot = data.get("few_shot")
    if few_shot is None:
        return
    if not isinstance(few_shot, Mapping):
        raise ConstitutionError(f"must be a mapping, got {_type_name(few_shot)}", source=source, field_path="few_shot")
    for key in few_shot:
        if key not in ("critique_revision", "preference"):
            raise ConstitutionError(
                "unknown field; known fields: critique_revision, preference", source=source, field_path=f"few_shot.{key}"
            )
    chats = few_shot.get("critique_revision") or []
    if not isinstance(chats, list):
        raise ConstitutionError(
            f"must be a list of chats, got {_type_name(chats)}", source=source, field_path="few_shot.critique_revision"
        )
    for c, chat in enumerate(chats):
        path = f"few_shot.critique_revision[{c}]"
        if not isinstance(chat, list) or not chat:
            raise ConstitutionError("must be a non-empty list of messages", source=source, field_path=path)
        for m, message in enumerate(chat):
            mpath = f"{path}[{m}]"
            if not isinstance(message, Mapping):
                raise ConstitutionError(f"must be a mapping, got {_type_name(message)}", source=source, field_path=mpath)
            if message.get("role") not in _ROLES:
                raise ConstitutionError(
                    f"role must be one of {', '.join(_ROLES)}, got {message.get('role')!r}",
                    source=source,
                    field_path=f"{mpath}.role",
                )
            _require_text(message, "content", f"{mpath}.content", source, required=True)
    examples = few_shot.get("preference") or []
    if not isinstance(examples, list):
        raise ConstitutionError(f"must be a list, got {_type_name(examples)}", source=source, field_path="few_shot.preference")
    for e, example in enumerate(examples):
        path = f"few_shot.preference[{e}]"
        if not isinstance(example, Mapping):
            raise ConstitutionError(f"must be a mapping, got {_type_name(example)}", source=source, field_path=path)
        for key in ("prompt", "response_a", "response_b", "question"):
            _require_text(example, key, f"{path}.{key}", source, required=True)
        if example.get("answer") not in ("A", "B"):
            raise ConstitutionError(
                f"must be 'A' or 'B', got {example.get('answer')!r}", source=source, field_path=f"{path}.answer"
            )
        extra = set(example) - {"prompt", "response_a", "response_b", "question", "answer"}
        if extra:
            raise ConstitutionError("unknown field", source=source, field_path=f"{path}.{sorted(extra)[0]}")
