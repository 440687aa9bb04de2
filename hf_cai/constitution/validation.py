"""Checking constitution data against the documented file schema, with messages that name the field at fault.

Everything that builds a :class:`~hf_cai.constitution.Constitution` passes through
:func:`validate_constitution_data`: files in the hf_cai schema, imported files, and objects built in code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hf_cai.constitution.errors import ConstitutionError

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ROLES = ("system", "user", "assistant")
_TOP_LEVEL_FIELDS = {"name", "version", "description", "license", "system_prompt", "principles", "few_shot"}
_PRINCIPLE_FIELDS = {"id", "critique", "revision", "preference", "tags", "weight"}
_PREFERENCE_EXAMPLE_TEXTS = ("prompt", "response_a", "response_b", "question")


def validate_constitution_data(data: Any, *, source: str) -> None:
    """Raise :class:`ConstitutionError` naming ``source`` and the field when ``data`` breaks the schema."""
    if not isinstance(data, Mapping):
        raise ConstitutionError(f"the top level must be a mapping, got {_type_name(data)}", source=source)
    _check_header(data, source)
    _check_principles(data.get("principles"), source)
    if data.get("few_shot") is not None:
        _check_few_shot(data["few_shot"], source)


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


def _check_header(data: Mapping[str, Any], source: str) -> None:
    for key in data:
        if key not in _TOP_LEVEL_FIELDS:
            raise ConstitutionError(
                f"unknown field; known fields: {', '.join(sorted(_TOP_LEVEL_FIELDS))}", source=source, field_path=str(key)
            )
    _require_text(data, "name", "name", source, required=True)
    if "version" in data and not isinstance(data["version"], (str, int, float)):
        raise ConstitutionError(f"must be a string, got {_type_name(data['version'])}", source=source, field_path="version")
    if data.get("description") is not None and not isinstance(data["description"], str):
        raise ConstitutionError(
            f"must be a string, got {_type_name(data['description'])}", source=source, field_path="description"
        )
    _require_text(data, "license", "license", source, required=False)
    _require_text(data, "system_prompt", "system_prompt", source, required=False)


def _check_principles(principles: Any, source: str) -> None:
    if principles is None:
        raise ConstitutionError("missing required field", source=source, field_path="principles")
    if not isinstance(principles, list):
        raise ConstitutionError(f"must be a list, got {_type_name(principles)}", source=source, field_path="principles")
    if not principles:
        raise ConstitutionError("must contain at least one principle", source=source, field_path="principles")
    first_index_of: dict[str, int] = {}
    for index, principle in enumerate(principles):
        path = f"principles[{index}]"
        if not isinstance(principle, Mapping):
            raise ConstitutionError(f"must be a mapping, got {_type_name(principle)}", source=source, field_path=path)
        for key in principle:
            if key not in _PRINCIPLE_FIELDS:
                raise ConstitutionError(
                    f"unknown field; known fields: {', '.join(sorted(_PRINCIPLE_FIELDS))}",
                    source=source,
                    field_path=f"{path}.{key}",
                )
        _check_principle_id(principle, path, first_index_of, source)
        first_index_of[principle["id"]] = index
        _check_principle_texts(principle, path, source)
        tags = principle.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ConstitutionError("must be a list of strings", source=source, field_path=f"{path}.tags")
        weight = principle.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConstitutionError(f"must be a number > 0, got {weight!r}", source=source, field_path=f"{path}.weight")


def _check_principle_id(principle: Mapping[str, Any], path: str, first_index_of: dict[str, int], source: str) -> None:
    _require_text(principle, "id", f"{path}.id", source, required=True)
    principle_id = principle["id"]
    if not _ID_PATTERN.match(principle_id):
        raise ConstitutionError(
            f"'{principle_id}' is not a valid id (letters, digits, '-', '_', '.'; no spaces)",
            source=source,
            field_path=f"{path}.id",
        )
    if principle_id in first_index_of:
        raise ConstitutionError(
            f"duplicate principle id '{principle_id}' (first used at principles[{first_index_of[principle_id]}])",
            source=source,
            field_path=f"{path}.id",
        )


def _check_principle_texts(principle: Mapping[str, Any], path: str, source: str) -> None:
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


def _check_few_shot(few_shot: Any, source: str) -> None:
    if not isinstance(few_shot, Mapping):
        raise ConstitutionError(f"must be a mapping, got {_type_name(few_shot)}", source=source, field_path="few_shot")
    for key in few_shot:
        if key not in ("critique_revision", "preference"):
            raise ConstitutionError(
                "unknown field; known fields: critique_revision, preference", source=source, field_path=f"few_shot.{key}"
            )
    _check_critique_revision_chats(few_shot.get("critique_revision") or [], source)
    _check_preference_examples(few_shot.get("preference") or [], source)


def _check_critique_revision_chats(chats: Any, source: str) -> None:
    if not isinstance(chats, list):
        raise ConstitutionError(
            f"must be a list of chats, got {_type_name(chats)}", source=source, field_path="few_shot.critique_revision"
        )
    for c, chat in enumerate(chats):
        path = f"few_shot.critique_revision[{c}]"
        if not isinstance(chat, list) or not chat:
            raise ConstitutionError("must be a non-empty list of messages", source=source, field_path=path)
        for m, message in enumerate(chat):
            message_path = f"{path}[{m}]"
            if not isinstance(message, Mapping):
                raise ConstitutionError(
                    f"must be a mapping, got {_type_name(message)}", source=source, field_path=message_path
                )
            if message.get("role") not in _ROLES:
                raise ConstitutionError(
                    f"role must be one of {', '.join(_ROLES)}, got {message.get('role')!r}",
                    source=source,
                    field_path=f"{message_path}.role",
                )
            _require_text(message, "content", f"{message_path}.content", source, required=True)


def _check_preference_examples(examples: Any, source: str) -> None:
    if not isinstance(examples, list):
        raise ConstitutionError(f"must be a list, got {_type_name(examples)}", source=source, field_path="few_shot.preference")
    for e, example in enumerate(examples):
        path = f"few_shot.preference[{e}]"
        if not isinstance(example, Mapping):
            raise ConstitutionError(f"must be a mapping, got {_type_name(example)}", source=source, field_path=path)
        for key in _PREFERENCE_EXAMPLE_TEXTS:
            _require_text(example, key, f"{path}.{key}", source, required=True)
        if example.get("answer") not in ("A", "B"):
            raise ConstitutionError(
                f"must be 'A' or 'B', got {example.get('answer')!r}", source=source, field_path=f"{path}.answer"
            )
        extra = set(example) - {*_PREFERENCE_EXAMPLE_TEXTS, "answer"}
        if extra:
            raise ConstitutionError("unknown field", source=source, field_path=f"{path}.{sorted(extra)[0]}")
