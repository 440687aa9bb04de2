"""The constitution as the Space shows it: every principle's text as readable Markdown, and the principle picker's
choices (id and the start of the critique request)."""

from __future__ import annotations

import re

from hf_cai.constitution import Constitution

PICKER_TEXT_CHARS = 60
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~$])")


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Markdown (a constitution from the Hub is data, not page markup)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def short_text(text: str, limit: int = PICKER_TEXT_CHARS) -> str:
    """The start of ``text``, cut at a word boundary, with an ellipsis when something was left out."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(" ,;:.") + "…"


def principle_choices(constitution: Constitution) -> list[tuple[str, str]]:
    """``(label, id)`` of each principle that can critique: the label is the id and the start of its request."""
    return [(f"{p.id} — {short_text(p.critique)}", p.id) for p in constitution.principles if p.has_critique]


def constitution_header(constitution: Constitution, note: str | None) -> str:
    count = len(constitution.principles)
    lines = [
        f"**{escape_markdown(constitution.name)}** v{escape_markdown(constitution.version)} · "
        f"license {escape_markdown(constitution.license)} · {count} principle{'s' if count != 1 else ''}",
        "",
        escape_markdown(constitution.description),
    ]
    if note:
        lines += ["", f"_{escape_markdown(note)}_"]
    return "\n".join(lines)


def principles_markdown(constitution: Constitution) -> str:
    """A numbered list: each principle's id, its critique request (or its preference question), tags and weight."""
    items = []
    for number, principle in enumerate(constitution.principles, 1):
        text = principle.critique or principle.preference or principle.revision or ""
        extras = [", ".join(principle.tags)] if principle.tags else []
        if principle.weight != 1:
            extras.append(f"weight {principle.weight:g}")
        suffix = f" _({escape_markdown(' · '.join(extras))})_" if extras else ""
        items.append(f"{number}. **{escape_markdown(principle.id)}** — {escape_markdown(text)}{suffix}")
    return "\n".join(items)


def instructions_markdown(constitution: Constitution) -> str:
    """Each principle's revision request and preference question (what the revision and AI-feedback steps ask)."""
    blocks = []
    for principle in constitution.principles:
        lines = [f"**{escape_markdown(principle.id)}**", ""]
        if principle.revision:
            lines.append(f"- Revision: {escape_markdown(principle.revision)}")
        if principle.preference:
            lines.append(f"- Preference: {escape_markdown(principle.preference)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def constitution_footer(constitution: Constitution) -> str:
    return f"sha256 `{constitution.sha256}`"
