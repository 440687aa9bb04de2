"""The constitution data model: :class:`Principle`, :class:`PreferenceExample` and :class:`Constitution`.

A constitution is a frozen, hashable value. Building one validates it (:mod:`.validation`); the file formats
(:mod:`.files`, :mod:`.importers`) and the Hub (:mod:`.hub`) are reached through its class methods.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hf_cai.artifact_files import CONSTITUTION_FILE
from hf_cai.constitution import files, importers
from hf_cai.constitution.errors import ConstitutionError
from hf_cai.constitution.hub import download_constitution_file
from hf_cai.constitution.rendering import render_preference_question, without_system
from hf_cai.constitution.validation import validate_constitution_data
from hf_cai.conversation import Conversation, Message
from hf_cai.errors import InputError

PrincipleUse = Literal["critique", "preference"]
"""What a principle is used for: ``"critique"`` (critique + revision, SL-CAI) or ``"preference"`` (AI feedback, RL-CAI)."""


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
        """Whether the principle can drive a critique and revision (SL-CAI)."""
        return self.critique is not None and self.revision is not None

    @property
    def has_preference(self) -> bool:
        """Whether the principle can drive AI feedback (RL-CAI)."""
        return self.preference is not None

    def to_dict(self) -> dict[str, Any]:
        """The principle as plain data; unset texts, no tags and the default weight are left out."""
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
        """The demonstration as plain data in the file schema."""
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
        system_prompt: Optional system prompt placed before the critique and revision requests (the model's
            replies to the prompts themselves are sampled without it, as they are trained and evaluated).
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
        validate_constitution_data(self.to_dict(), source=_described(self.name))
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
        validate_constitution_data(data, source=source)
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
        """The constitution as YAML, in the order of :meth:`to_dict`."""
        return files.dump_yaml(self.to_dict())

    def to_json(self) -> str:
        """The constitution as indented JSON, in the order of :meth:`to_dict`."""
        return files.dump_json(self.to_dict())

    def save(self, path: str | Path) -> Path:
        """Write the constitution as YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        return files.write_data_file(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path, *, format: str = "auto") -> Constitution:
        """Load a constitution file.

        Args:
            path: A ``.yaml``/``.yml``/``.json`` file in the hf_cai schema, an llm-swarm constitution JSON, or the
                paper's ``CritiqueRevisionInstructions.json`` (its ``RLMadisonInstructions.json`` and few-shot files
                are picked up from the same folder, and logged). A folder stands for its ``constitution.yaml`` (a
                trained model, a publication folder), else for the paper's instruction files in it.
            format: ``"auto"`` (detect), ``"hf_cai"``, ``"llm-swarm"`` or ``"anthropic-paper"``.
        """
        path = Path(path)
        if path.is_dir():
            path = _file_in_folder(path)
        if not path.is_file():
            raise ConstitutionError("file not found", source=str(path))
        data = files.read_data_file(path)
        detected = importers.detect_format(data) if format == "auto" else format
        if detected == "hf_cai":
            return cls.from_dict(data, source=str(path))
        if detected == "llm-swarm":
            imported = importers.llm_swarm_data(data, source=path)
        elif detected == "anthropic-paper":
            imported = importers.anthropic_paper_data(path)
        elif detected is None:
            raise ConstitutionError(
                "unknown format: expected the hf_cai schema (name, principles, ...), an llm-swarm constitution "
                "(constitutions, system_chat) or the paper's CritiqueRevisionInstructions.json / "
                "RLMadisonInstructions.json",
                source=str(path),
            )
        else:
            raise ConstitutionError(
                f"unknown format '{format}'; choose one of: {', '.join(('auto', *importers.FILE_FORMATS))}",
                source=str(path),
            )
        # Problems in imported content are reported against the constitution it became, not the foreign file.
        return cls.from_dict(imported, source=_described(imported["name"]))

    # ----------------------------------------------------------------- built-ins
    @staticmethod
    def list_builtin() -> list[str]:
        """Names of the constitutions shipped with hf_cai."""
        return files.builtin_names()

    @classmethod
    def builtin(cls, name: str) -> Constitution:
        """Load a built-in constitution by name (see :meth:`list_builtin`)."""
        data, source = files.read_builtin(name)
        return cls.from_dict(data, source=source)

    @classmethod
    def resolve(cls, name_or_path: str | Path | Constitution) -> Constitution:
        """A constitution from a built-in name, a file, a folder (see :meth:`load`), or an existing object.

        A file or folder of that name wins over a built-in name. A name that is neither raises an error suggesting
        the closest built-in name (``did you mean 'harmless'?``).
        """
        if isinstance(name_or_path, Constitution):
            return name_or_path
        text = str(name_or_path)
        path = Path(text)
        builtin = text in cls.list_builtin()
        if path.is_file() or (path.is_dir() and (_has_constitution_file(path) or not builtin)):
            return cls.load(path)
        if builtin:
            return cls.builtin(text)
        if looks_like_name(text):
            raise files.unknown_builtin_error(
                text, problem=f"'{text}' is neither a constitution file nor a built-in constitution"
            )
        return cls.load(path)

    @classmethod
    def from_hub(
        cls, repo_id: str, *, repo_type: str = "model", revision: str | None = None, token: str | None = None
    ) -> Constitution:
        """Load the ``constitution.yaml`` of a published CAI model, dataset or Space from the Hub."""
        return cls.load(download_constitution_file(repo_id, repo_type=repo_type, revision=revision, token=token))

    # ----------------------------------------------------------------- identity
    @property
    def sha256(self) -> str:
        """sha256 of the canonical form (sorted-key compact JSON of :meth:`to_dict`)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def principle(self, principle_id: str) -> Principle:
        """The principle with id ``principle_id``; raises :class:`ConstitutionError` listing the known ids."""
        try:
            return self._by_id[principle_id]
        except KeyError as error:
            raise ConstitutionError(
                f"no principle with id '{principle_id}'; known ids: {', '.join(self._by_id)}",
                source=_described(self.name),
            ) from error

    def principles_for(self, stage: PrincipleUse) -> tuple[Principle, ...]:
        """Principles usable for ``"critique"`` (SL-CAI) or ``"preference"`` (RL-CAI)."""
        if stage == "critique":
            chosen = tuple(p for p in self.principles if p.has_critique)
        elif stage == "preference":
            chosen = tuple(p for p in self.principles if p.has_preference)
        else:
            raise InputError(f"stage must be 'critique' or 'preference', got {stage!r}")
        if not chosen:
            raise ConstitutionError(f"has no principle with {stage} texts", source=_described(self.name))
        return chosen

    def sample(self, k: int, *, seed: int | random.Random, stage: PrincipleUse = "critique") -> list[Principle]:
        """Draw ``k`` principles with replacement, proportionally to their weights, reproducibly from ``seed``."""
        pool = self.principles_for(stage)
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        return rng.choices(pool, weights=[p.weight for p in pool], k=k)

    # ----------------------------------------------------------------- rendering
    def few_shot_messages(self) -> Conversation:
        """The critique→revision demonstrations flattened into one chat prefix."""
        return [dict(m) for chat in self.critique_revision_examples for m in chat]

    def _prefix(self, few_shot: bool) -> Conversation:
        prefix: Conversation = []
        if self.system_prompt:
            prefix.append({"role": "system", "content": self.system_prompt})
        if few_shot:
            prefix.extend(self.few_shot_messages())
        return prefix

    def critique_messages(
        self, conversation: Sequence[Message], principle: Principle | str, *, few_shot: bool = True
    ) -> Conversation:
        """Chat asking for a critique of the last assistant reply of ``conversation`` under ``principle``."""
        principle = self._resolve(principle, "critique")
        if not conversation or conversation[-1].get("role") != "assistant":
            raise InputError("the conversation to critique must end with an assistant reply")
        return [*self._prefix(few_shot), *without_system(conversation), {"role": "user", "content": principle.critique}]

    def revision_messages(
        self,
        conversation: Sequence[Message],
        principle: Principle | str,
        critique: str,
        *,
        few_shot: bool = True,
    ) -> Conversation:
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
    ) -> Conversation:
        """Chat asking which of two replies to ``conversation`` better satisfies ``principle``.

        The feedback model answers with ``(A)`` or ``(B)``; the option log-probabilities give the soft label.
        """
        principle = self._resolve(principle, "preference")
        messages: Conversation = []
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

    def _resolve(self, principle: Principle | str, stage: PrincipleUse) -> Principle:
        resolved = self.principle(principle) if isinstance(principle, str) else principle
        if stage == "critique" and not resolved.has_critique:
            raise ConstitutionError(f"principle '{resolved.id}' has no critique/revision texts")
        if stage == "preference" and not resolved.has_preference:
            raise ConstitutionError(f"principle '{resolved.id}' has no preference question")
        return resolved


def looks_like_name(text: str) -> bool:
    """Whether ``text`` reads as a built-in constitution name rather than a file path (no folder, no file extension)."""
    return not any(sep in text for sep in ("/", "\\")) and Path(text).suffix.lower() not in (".yaml", ".yml", ".json")


def _has_constitution_file(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _FOLDER_FILES)


_FOLDER_FILES = (CONSTITUTION_FILE, importers.PAPER_SL_FILE, importers.PAPER_RL_FILE)
"""The files that stand for a folder given as a constitution, in order of preference."""


def _file_in_folder(folder: Path) -> Path:
    """The constitution file a folder stands for (see :meth:`Constitution.load`)."""
    for name in _FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ConstitutionError(
        f"folder holds no {CONSTITUTION_FILE} (nor the paper's {importers.PAPER_SL_FILE} or {importers.PAPER_RL_FILE})",
        source=str(folder),
    )


def _described(name: str) -> str:
    """How errors about a constitution object name it."""
    return f"constitution '{name}'"
