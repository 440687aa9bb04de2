"""The standard harm sets on the Hub by name: :data:`HARM_SET_PRESETS` and :func:`harm_set_preset`.

``eval_sets: ["preset:xstest"]`` (or the bare ``"xstest"``) reads XSTest from its Hub id with the column layout named
here, through :func:`hf_cai.evaluation.harm_sets.load_eval_set`; a local file of the same layout reads offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hf_cai.errors import InputError

__all__ = ["HARM_SET_PRESETS", "HarmSetPreset", "harm_set_preset"]




@dataclass(frozen=True)
class HarmSetPreset:
    """A standard harm set on the Hub: where it is, how to read it, and under which licence it is published.

    Attributes:
        name: The preset's name (``eval_sets: ["preset:<name>"]`` or the bare name).
        hub_id: The Hub dataset read.
        kind: The format its columns are read as (one of :data:`EVAL_SET_KINDS`).
        columns: The columns used, for reports.
        licence: The licence the set is published under.
        splits: Splits tried in order.
        config_name: The dataset configuration, where it has several.
        note: What the set measures and what to know about it.
    """

    name: str
    hub_id: str
    kind: str
    columns: str
    licence: str
    splits: tuple[str, ...] = ("train", "test")
    config_name: str | None = None
    note: str = ""


# Hub ids, configurations, splits and licences as the datasets' Hub pages showed them (HarmBench: MIT, configs
# standard / contextual / copyright; StrongREJECT: MIT; XSTest: CC-BY-4.0, split train); AdvBench's MIT is that of
# the original llm-attacks repository, not checked on the mirror. Do-Not-Answer's Hub page is tagged apache-2.0, but
# its README releases the data under CC-BY-NC-SA-4.0 (Apache-2.0 covers its code): the stricter one is given here.
# Check the dataset's page before redistributing anything from it.
HARM_SET_PRESETS = {
    preset.name: preset
    for preset in (
        HarmSetPreset(
            "harmbench", "walledai/HarmBench", "harmbench", "prompt, category (the original CSV: Behavior, "
            "FunctionalCategory, SemanticCategory, ContextString)", "MIT", config_name="standard",
            note="HarmBench's standard text behaviours (Mazeika et al., 2024); all harmful",
        ),
        HarmSetPreset(
            "strongreject", "walledai/StrongREJECT", "strongreject", "prompt, category (the original CSV: "
            "forbidden_prompt, category, source)", "MIT",
            note="StrongREJECT's forbidden prompts (Souly et al., 2024); all harmful",
        ),
        HarmSetPreset(
            "xstest", "walledai/XSTest", "xstest", "prompt, type, label (safe / unsafe), focus, note",
            "CC-BY-4.0",
            note="XSTest (Röttger et al., 2024): 250 safe prompts that only look harmful (over-refusal) and 200 "
            "unsafe contrasts; also published as Paul/XSTest",
        ),
        HarmSetPreset(
            "advbench", "walledai/AdvBench", "advbench", "prompt, target (the original CSV: goal, target)", "MIT",
            note="AdvBench harmful behaviours (Zou et al., 2023); all harmful; the target is ignored",
        ),
        HarmSetPreset(
            "do-not-answer", "LibrAI/do-not-answer", "do-not-answer",
            "question, risk_area, types_of_harm, specific_harms", "CC-BY-NC-SA-4.0",
            note="Do-Not-Answer (Wang et al., 2023); all harmful; category: the risk area",
        ),
    )
}
"""The standard harm sets :func:`load_eval_set` reads by name (``"preset:xstest"`` or ``"xstest"``)."""

_PRESET_PREFIX = "preset:"


def harm_set_preset(source: str) -> HarmSetPreset | None:
    """The preset ``source`` names (``"preset:<name>"``, or a bare preset name that is not a local path), else ``None``.

    Raises:
        ValueError: ``source`` starts with ``preset:`` but names no preset.
    """
    if source.startswith(_PRESET_PREFIX):
        wanted = _canonical(source[len(_PRESET_PREFIX) :])
        if wanted not in HARM_SET_PRESETS:
            raise InputError(f"no harm set preset '{source}'; presets: {', '.join(HARM_SET_PRESETS)}")
        return HARM_SET_PRESETS[wanted]
    wanted = _canonical(source)
    if wanted in HARM_SET_PRESETS and not Path(source).exists():
        return HARM_SET_PRESETS[wanted]
    return None


def _canonical(name: str) -> str:
    """``"Do_Not_Answer"`` → ``"do-not-answer"``, ``"strong_reject"`` → ``"strongreject"``."""
    name = name.strip().lower().replace("_", "-")
    return {"strong-reject": "strongreject", "donotanswer": "do-not-answer", "dna": "do-not-answer"}.get(name, name)
