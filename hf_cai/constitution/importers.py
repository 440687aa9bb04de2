"""Importers for constitution files users already have: they turn them into data in the hf_cai schema.

Supported formats:

* ``llm-swarm``: Hugging Face's open CAI replication, ``{"constitutions": [{"critic", "revision"}], "system_chat": [...]}``.
* ``anthropic-paper``: the supplementary files of Bai et al. 2022: ``CritiqueRevisionInstructions.json``
  (SL principles), ``RLMadisonInstructions.json`` (RL feedback principles) and their few-shot files, read from one folder.

The importers only produce data; :meth:`hf_cai.constitution.Constitution.load` validates it and builds the constitution.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hf_cai.constitution.errors import ConstitutionError
from hf_cai.constitution.files import read_json_file
from hf_cai.constitution.transcript import parse_transcript
from hf_cai.conversation import Conversation

logger = logging.getLogger(__name__)

FILE_FORMATS = ("hf_cai", "llm-swarm", "anthropic-paper")
"""The formats a constitution file can be read in; ``"auto"`` detects them with :func:`detect_format`."""

PAPER_SL_FILE = "CritiqueRevisionInstructions.json"
PAPER_RL_FILE = "RLMadisonInstructions.json"
PAPER_SL_FEW_SHOT_FILE = "CritiqueRevisionFewShotPrompts.json"
PAPER_RL_FEW_SHOT_FILE = "RLMadisonFewShotPrompts.json"


def detect_format(data: Any) -> str | None:
    """Name of the format of parsed file content, or ``None`` when it is not recognised."""
    if isinstance(data, dict):
        if "principles" in data or "name" in data:
            return "hf_cai"
        if "constitutions" in data:
            return "llm-swarm"
        if data and all(isinstance(v, dict) and "edit_request" in v for v in data.values()):
            return "anthropic-paper"
    if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
        return "anthropic-paper"
    return None


def llm_swarm_data(data: Any, *, source: str | Path) -> dict[str, Any]:
    """An llm-swarm constitution JSON (critique/revision principles + few-shot chats) as hf_cai data."""
    source = str(source)
    if not isinstance(data, dict) or not isinstance(data.get("constitutions"), list):
        raise ConstitutionError("expected a mapping with a 'constitutions' list", source=source, field_path="constitutions")
    principles = []
    for index, entry in enumerate(data["constitutions"]):
        path = f"constitutions[{index}]"
        if not isinstance(entry, dict):
            raise ConstitutionError("must be a mapping with 'critic' and 'revision'", source=source, field_path=path)
        for key in ("critic", "revision"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConstitutionError("missing or empty text", source=source, field_path=f"{path}.{key}")
        principles.append({"id": f"principle-{index}", "critique": entry["critic"], "revision": entry["revision"]})
    chats = data.get("system_chat") or []
    if not isinstance(chats, list):
        raise ConstitutionError("must be a list of chats", source=source, field_path="system_chat")
    return _schema_data(
        name=Path(source).stem.removeprefix("constitution_") or "imported",
        version="1.0",
        description=f"Imported from the llm-swarm constitution file {Path(source).name}.",
        license="mit",
        principles=principles,
        critique_revision_examples=[[{"role": m["role"], "content": m["content"]} for m in chat] for chat in chats],
        preference_examples=[],
    )


def anthropic_paper_data(path: str | Path) -> dict[str, Any]:
    """The paper's instruction files from the folder of ``path``, as hf_cai data.

    ``path`` may be ``CritiqueRevisionInstructions.json`` or ``RLMadisonInstructions.json``; the other file and the
    few-shot files (``CritiqueRevisionFewShotPrompts.json``, ``RLMadisonFewShotPrompts.json``) are read when present
    beside it, and the files read are logged (INFO). SL principles keep the paper's ids (``harmful0`` ...); RL
    principles get ``rl0`` ...
    """
    path = Path(path)
    folder = path.parent
    sl_path = folder / PAPER_SL_FILE if path.name != PAPER_SL_FILE else path
    rl_path = folder / PAPER_RL_FILE if path.name != PAPER_RL_FILE else path
    if path.name not in (PAPER_SL_FILE, PAPER_RL_FILE):
        if isinstance(read_json_file(path), list):
            rl_path = path
        else:
            sl_path = path
    principles: list[dict[str, Any]] = []
    read: list[str] = []
    if sl_path.is_file():
        sl_principles = _paper_sl_principles(sl_path)
        principles += sl_principles
        read.append(f"{sl_path.name} ({len(sl_principles)} critique/revision principles)")
    if rl_path.is_file():
        rl_principles = _paper_rl_principles(rl_path)
        principles += rl_principles
        read.append(f"{rl_path.name} ({len(rl_principles)} feedback principles)")
    critique_examples: list[Conversation] = []
    sl_few_shot = folder / PAPER_SL_FEW_SHOT_FILE
    if sl_few_shot.is_file():
        critique_examples = [parse_transcript(transcript) for transcript in read_json_file(sl_few_shot)]
        read.append(f"{sl_few_shot.name} ({len(critique_examples)} critique/revision examples)")
    preference_examples: list[dict[str, str]] = []
    rl_few_shot = folder / PAPER_RL_FEW_SHOT_FILE
    rl_questions = [p["preference"] for p in principles if p.get("preference")]
    if rl_few_shot.is_file() and rl_questions:
        preference_examples = _paper_preference_examples(rl_few_shot, rl_questions[0])
        read.append(f"{rl_few_shot.name} ({len(preference_examples)} preference examples)")
    logger.info("imported the paper's files from %s: %s", folder, "; ".join(read))
    return _schema_data(
        name="anthropic-paper",
        version="2022.12",
        description="Imported from the supplementary material of Bai et al. 2022, 'Constitutional AI: "
        "Harmlessness from AI Feedback' (arXiv 2212.08073).",
        license="cc-by-4.0",
        principles=principles,
        critique_revision_examples=critique_examples,
        preference_examples=preference_examples,
    )


def _schema_data(
    *,
    name: str,
    version: str,
    description: str,
    license: str,
    principles: list[dict[str, Any]],
    critique_revision_examples: list[Conversation],
    preference_examples: list[dict[str, str]],
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": description,
        "license": license,
        "principles": principles,
    }
    few_shot: dict[str, Any] = {}
    if critique_revision_examples:
        few_shot["critique_revision"] = critique_revision_examples
    if preference_examples:
        few_shot["preference"] = preference_examples
    if few_shot:
        data["few_shot"] = few_shot
    return data


def _strip_marker(text: str, label: str, answer: str) -> str:
    text = text.strip()
    text = text.removeprefix(f"{label}:").strip()
    return text.removesuffix(f"{answer}:").strip()


def _paper_sl_principles(path: Path) -> list[dict[str, Any]]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise ConstitutionError("expected a mapping of principle ids", source=str(path))
    principles = []
    for key, entry in data.items():
        prompts = entry.get("prompt") if isinstance(entry, dict) else None
        if not isinstance(prompts, list) or not prompts or not isinstance(prompts[0], str):
            raise ConstitutionError("expected a list with one critique request", source=str(path), field_path=f"{key}.prompt")
        if not isinstance(entry.get("edit_request"), str):
            raise ConstitutionError("missing revision request", source=str(path), field_path=f"{key}.edit_request")
        principles.append(
            {
                "id": key,
                "critique": _strip_marker(prompts[0], "CritiqueRequest", "Critique"),
                "revision": _strip_marker(entry["edit_request"], "RevisionRequest", "Revision"),
                "tags": ["sl"],
            }
        )
    return principles


def _paper_rl_principles(path: Path) -> list[dict[str, Any]]:
    data = read_json_file(path)
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ConstitutionError("expected a list of feedback questions", source=str(path))
    return [
        {"id": f"rl{index}", "preference": text.strip().removesuffix("Options:").strip(), "tags": ["rl"]}
        for index, text in enumerate(data)
    ]


def _paper_preference_examples(path: Path, question: str) -> list[dict[str, str]]:
    examples = []
    for index, item in enumerate(read_json_file(path)):
        turns = parse_transcript(item["prompt"])
        prompt = turns[0]["content"] if len(turns) == 1 else item["prompt"].strip().removesuffix("Assistant:").strip()
        correct, incorrect = item["corrects"][0].strip(), item["incorrects"][0].strip()
        first_is_correct = index % 2 == 0
        examples.append(
            {
                "prompt": prompt,
                "response_a": correct if first_is_correct else incorrect,
                "response_b": incorrect if first_is_correct else correct,
                "question": question,
                "answer": "A" if first_is_correct else "B",
            }
        )
    return examples
