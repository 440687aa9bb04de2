"""Checking constitution data against the documented file schema, with messages that name the field at fault.

Everything that builds a :class:`~hf_cai.constitution.Constitution` passes through
:func:`validate_constitution_data`: files in the hf_cai schema, imported files, and objects built in code. Every
problem of the data is found, not only the first: one :class:`~hf_cai.constitution.ConstitutionError` lists them all.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from hf_cai.constitution.errors import ConstitutionError

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ROLES = ("system", "user", "assistant")
_TOP_LEVEL_FIELDS = {"name", "version", "description", "license", "system_prompt", "principles", "few_shot"}
_PRINCIPLE_FIELDS = {"id", "critique", "revision", "preference", "tags", "weight"}
_PREFERENCE_EXAMPLE_TEXTS = ("prompt", "response_a", "response_b", "question")


class _Problems:
    """The problems found so far in the data of one source."""

    def __init__(self, source: str):
        self.source = source
        self.found: list[ConstitutionError] = []

    def add(self, problem: str, field_path: str | None = None) -> None:
        self.found.append(ConstitutionError(problem, source=self.source, field_path=field_path))


def validate_constitution_data(data: Any, *, source: str) -> None:
    """Raise :class:`ConstitutionError` naming ``source`` when ``data`` breaks the schema: one error listing every
    problem, each with the field at fault (``principles[2].revision``)."""
    problems = _Problems(source)
    if not isinstance(data, Mapping):
        problems.add(f"the top level must be a mapping, got {_type_name(data)}")
    else:
        _check_header(data, problems)
        _check_principles(data.get("principles"), problems)
        if data.get("few_shot") is not None:
            _check_few_shot(data["few_shot"], problems)
    if problems.found:
        raise ConstitutionError.combine(problems.found, source=source)


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _require_text(data: Mapping[str, Any], key: str, path: str, problems: _Problems, *, required: bool) -> bool:
    """Whether ``data[key]`` is a non-empty string; a problem is recorded when it is not (and is set or required)."""
    if key not in data or data[key] is None:
        if required:
            problems.add("missing required field", path)
        return False
    value = data[key]
    if not isinstance(value, str):
        problems.add(f"must be a string, got {_type_name(value)}", path)
        return False
    if not value.strip():
        problems.add("must not be empty", path)
        return False
    return True


def _check_unknown(data: Mapping[str, Any], known: set[str], path: str, problems: _Problems) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.add(f"unknown field{hint}; known fields: {', '.join(sorted(known))}", f"{path}{key}")


def _check_header(data: Mapping[str, Any], problems: _Problems) -> None:
    _check_unknown(data, _TOP_LEVEL_FIELDS, "", problems)
    _require_text(data, "name", "name", problems, required=True)
    if "version" in data and not isinstance(data["version"], (str, int, float)):
        problems.add(f"must be a string, got {_type_name(data['version'])}", "version")
    if data.get("description") is not None and not isinstance(data["description"], str):
        problems.add(f"must be a string, got {_type_name(data['description'])}", "description")
    _require_text(data, "license", "license", problems, required=False)
    _require_text(data, "system_prompt", "system_prompt", problems, required=False)


def _check_principles(principles: Any, problems: _Problems) -> None:
    if principles is None:
        problems.add("missing required field", "principles")
        return
    if not isinstance(principles, list):
        problems.add(f"must be a list, got {_type_name(principles)}", "principles")
        return
    if not principles:
        problems.add("must contain at least one principle", "principles")
        return
    first_index_of: dict[str, int] = {}
    for index, principle in enumerate(principles):
        path = f"principles[{index}]"
        if not isinstance(principle, Mapping):
            problems.add(f"must be a mapping, got {_type_name(principle)}", path)
            continue
        _check_unknown(principle, _PRINCIPLE_FIELDS, f"{path}.", problems)
        _check_principle_id(principle, path, first_index_of, problems)
        if isinstance(principle.get("id"), str):
            first_index_of.setdefault(principle["id"], index)
        _check_principle_texts(principle, path, problems)
        tags = principle.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            problems.add("must be a list of strings", f"{path}.tags")
        weight = principle.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            problems.add(f"must be a number > 0, got {weight!r}", f"{path}.weight")


def _check_principle_id(
    principle: Mapping[str, Any], path: str, first_index_of: dict[str, int], problems: _Problems
) -> None:
    if not _require_text(principle, "id", f"{path}.id", problems, required=True):
        return
    principle_id = principle["id"]
    if not _ID_PATTERN.match(principle_id):
        problems.add(f"'{principle_id}' is not a valid id (letters, digits, '-', '_', '.'; no spaces)", f"{path}.id")
    if principle_id in first_index_of:
        problems.add(
            f"duplicate principle id '{principle_id}' (first used at principles[{first_index_of[principle_id]}])",
            f"{path}.id",
        )


def _check_principle_texts(principle: Mapping[str, Any], path: str, problems: _Problems) -> None:
    for key in ("critique", "revision", "preference"):
        _require_text(principle, key, f"{path}.{key}", problems, required=False)
    has_critique = principle.get("critique") is not None
    has_revision = principle.get("revision") is not None
    if has_critique != has_revision:
        missing = "revision" if has_critique else "critique"
        problems.add("missing required field (critique and revision go together)", f"{path}.{missing}")
    if not has_critique and not has_revision and principle.get("preference") is None:
        problems.add(
            "missing required field: a principle needs critique + revision, a preference question, or both",
            f"{path}.critique",
        )


def _check_few_shot(few_shot: Any, problems: _Problems) -> None:
    if not isinstance(few_shot, Mapping):
        problems.add(f"must be a mapping, got {_type_name(few_shot)}", "few_shot")
        return
    _check_unknown(few_shot, {"critique_revision", "preference"}, "few_shot.", problems)
    _check_critique_revision_chats(few_shot.get("critique_revision") or [], problems)
    _check_preference_examples(few_shot.get("preference") or [], problems)


def _check_critique_revision_chats(chats: Any, problems: _Problems) -> None:
    if not isinstance(chats, list):
        problems.add(f"must be a list of chats, got {_type_name(chats)}", "few_shot.critique_revision")
        return
    for c, chat in enumerate(chats):
        path = f"few_shot.critique_revision[{c}]"
        if not isinstance(chat, list) or not chat:
            problems.add("must be a non-empty list of messages", path)
            continue
        for m, message in enumerate(chat):
            message_path = f"{path}[{m}]"
            if not isinstance(message, Mapping):
                problems.add(f"must be a mapping, got {_type_name(message)}", message_path)
                continue
            if message.get("role") not in _ROLES:
                problems.add(
                    f"role must be one of {', '.join(_ROLES)}, got {message.get('role')!r}", f"{message_path}.role"
                )
            _require_text(message, "content", f"{message_path}.content", problems, required=True)


def _check_preference_examples(examples: Any, problems: _Problems) -> None:
    if not isinstance(examples, list):
        problems.add(f"must be a list, got {_type_name(examples)}", "few_shot.preference")
        return
    for e, example in enumerate(examples):
        path = f"few_shot.preference[{e}]"
        if not isinstance(example, Mapping):
            problems.add(f"must be a mapping, got {_type_name(example)}", path)
            continue
        for key in _PREFERENCE_EXAMPLE_TEXTS:
            _require_text(example, key, f"{path}.{key}", problems, required=True)
        if example.get("answer") not in ("A", "B"):
            problems.add(f"must be 'A' or 'B', got {example.get('answer')!r}", f"{path}.answer")
        for key in sorted(set(example) - {*_PREFERENCE_EXAMPLE_TEXTS, "answer"}):
            problems.add("unknown field", f"{path}.{key}")
