"""Importers for constitution files users already have, and the Anthropic-style transcript parser.

Supported formats:

* ``llm-swarm``: Hugging Face's open CAI replication, ``{"constitutions": [{"critic", "revision"}], "system_chat": [...]}``.
* ``anthropic-paper``: the supplementary files of Bai et al. 2022: ``CritiqueRevisionInstructions.json``
  (SL principles), ``RLMadisonInstructions.json`` (RL feedback principles) and their few-shot files, read from one folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hf_cai.constitution import (
    Constitution,
    ConstitutionError,
    Message,
    PreferenceExample,
    Principle,
)

PAPER_SL_FILE = "CritiqueRevisionInstructions.json"
PAPER_RL_FILE = "RLMadisonInstructions.json"
PAPER_SL_FEW_SHOT_FILE = "CritiqueRevisionFewShotPrompts.json"
PAPER_RL_FEW_SHOT_FILE = "RLMadisonFewShotPrompts.json"

_TRANSCRIPT_ROLES = {
    "Human": "user",
    "Assistant": "assistant",
    "CritiqueRequest": "user",
    "Critique": "assistant",
    "RevisionRequest": "user",
    "Revision": "assistant",
}
_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant|CritiqueRequest|Critique|RevisionRequest|Revision):")


def parse_transcript(text: str) -> list[Message]:
    """Split an Anthropic-style transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) into chat messages.

    Speaker labels are only recognised at the start of the text or after a blank line, so a ``": "`` inside a
    turn stays part of it. Empty trailing turns (a transcript ending in ``"Assistant:"``) are dropped.
    """
    matches = list(_SPEAKER.finditer(text))
    if not matches:
        stripped = text.strip()
        return [{"role": "user", "content": stripped}] if stripped else []
    messages: list[Message] = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        content = text[match.end() : end].strip()
        if content:
            messages.append({"role": _TRANSCRIPT_ROLES[match.group(1)], "content": content})
    return messages


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


def from_llm_swarm(data: Any, *, source: str | Path) -> Constitution:
    """Import an llm-swarm constitution JSON (critique/revision principles + few-shot chats)."""
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
        principles.append(Principle(id=f"principle-{index}", critique=entry["critic"], revision=entry["revision"]))
    chats = data.get("system_chat") or []
    if not isinstance(chats, list):
        raise ConstitutionError("must be a list of chats", source=source, field_path="system_chat")
    name = Path(source).stem.removeprefix("constitution_") or "imported"
    return Constitution(
        name=name,
        version="1.0",
        description=f"Imported from the llm-swarm constitution file {Path(source).name}.",
        license="mit",
        principles=tuple(principles),
        critique_revision_examples=tuple(
            tuple({"role": m["role"], "content": m["content"]} for m in chat) for chat in chats
        ),
    )


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConstitutionError(
            f"JSON syntax error at line {error.lineno}, column {error.colno}: {error.msg}", source=str(path)
        ) from None


def _strip_marker(text: str, label: str, answer: str) -> str:
    text = text.strip()
    text = text.removeprefix(f"{label}:").strip()
    return text.removesuffix(f"{answer}:").strip()


def _paper_sl_principles(path: Path) -> list[Principle]:
    data = _load_json(path)
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
            Principle(
                id=key,
                critique=_strip_marker(prompts[0], "CritiqueRequest", "Critique"),
                revision=_strip_marker(entry["edit_request"], "RevisionRequest", "Revision"),
                tags=("sl",),
            )
        )
    return principles


def _paper_rl_principles(path: Path) -> list[Principle]:
    data = _load_json(path)
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise ConstitutionError("expected a list of feedback questions", source=str(path))
    return [
        Principle(id=f"rl{index}", preference=text.strip().removesuffix("Options:").strip(), tags=("rl",))
        for index, text in enumerate(data)
    ]


def _paper_preference_examples(path: Path, question: str) -> list[PreferenceExample]:
    examples = []
    for index, item in enumerate(_load_json(path)):
        turns = parse_transcript(item["prompt"])
        prompt = turns[0]["content"] if len(turns) == 1 else item["prompt"].strip().removesuffix("Assistant:").strip()
        correct, incorrect = item["corrects"][0].strip(), item["incorrects"][0].strip()
        first_is_correct = index % 2 == 0
        examples.append(
            PreferenceExample(
                prompt=prompt,
                response_a=correct if first_is_correct else incorrect,
                response_b=incorrect if first_is_correct else correct,
                question=question,
                answer="A" if first_is_correct else "B",
            )
        )
    return examples


def from_anthropic_paper(path: str | Path) -> Constitution:
    """Import the paper's instruction files from the folder of ``path``.

    ``path`` may be ``CritiqueRevisionInstructions.json`` or ``RLMadisonInstructions.json``; the other file and the
    few-shot files (``CritiqueRevisionFewShotPrompts.json``, ``RLMadisonFewShotPrompts.json``) are read when present
    beside it. SL principles keep the paper's ids (``harmful0`` ...); RL principles get ``rl0`` ...
    """
    path = Path(path)
    folder = path.parent
    sl_path = folder / PAPER_SL_FILE if path.name != PAPER_SL_FILE else path
    rl_path = folder / PAPER_RL_FILE if path.name != PAPER_RL_FILE else path
    if path.name not in (PAPER_SL_FILE, PAPER_RL_FILE):
        data = _load_json(path)
        if isinstance(data, list):
            rl_path = path
        else:
            sl_path = path
    principles: list[Principle] = []
    if sl_path.is_file():
        principles += _paper_sl_principles(sl_path)
    if rl_path.is_file():
        principles += _paper_rl_principles(rl_path)
    critique_examples: list[tuple[Message, ...]] = []
    sl_few_shot = folder / PAPER_SL_FEW_SHOT_FILE
    if sl_few_shot.is_file():
        for transcript in _load_json(sl_few_shot):
            critique_examples.append(tuple(parse_transcript(transcript)))
    preference_examples: list[PreferenceExample] = []
    rl_few_shot = folder / PAPER_RL_FEW_SHOT_FILE
    rl_questions = [p.preference for p in principles if p.preference]
    if rl_few_shot.is_file() and rl_questions:
        preference_examples = _paper_preference_examples(rl_few_shot, rl_questions[0])
    return Constitution(
        name="anthropic-paper",
        version="2022.12",
        description="Imported from the supplementary material of Bai et al. 2022, 'Constitutional AI: "
        "Harmlessness from AI Feedback' (arXiv 2212.08073).",
        license="cc-by-4.0",
        principles=tuple(principles),
        critique_revision_examples=tuple(critique_examples),
        preference_examples=tuple(preference_examples),
    )

