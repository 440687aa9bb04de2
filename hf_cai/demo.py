"""What ``hf-cai demo`` shows once its run ends: base and CAI replies side by side, the judge in one line, a short
verdict, and what to do next.

Everything is read from the run directory (the evaluation's results and notes, the publication record), so showing it
costs no generation and works for any finished run, not only the demo's.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import unicodedata
from pathlib import Path

from hf_cai.evaluation.prompt_overlap import normalize_prompt
from hf_cai.evaluation.verdict import judge_summary_line, overlap_sentence, samples_of, verdict_lines
from hf_cai.gguf import embedded_model
from hf_cai.pipeline import Pipeline

GUTTER = " │ "


def display_width(text: str) -> int:
    """Terminal cells ``text`` takes: wide characters (CJK, most emoji) take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def side_by_side(left: str, right: str, width: int) -> list[str]:
    """Two texts wrapped into columns of ``(width - 3) // 2`` characters, line by line, with a gutter between."""
    column = max(10, (width - len(GUTTER)) // 2)

    def wrap(text: str) -> list[str]:
        lines = [line for paragraph in text.strip().splitlines() for line in textwrap.wrap(paragraph, column) or [""]]
        return lines or ["(empty reply)"]

    left_lines, right_lines = wrap(left), wrap(right)
    height = max(len(left_lines), len(right_lines))
    left_lines += [""] * (height - len(left_lines))
    right_lines += [""] * (height - len(right_lines))
    return [f"{a}{' ' * (column - display_width(a))}{GUTTER}{b}".rstrip() for a, b in zip(left_lines, right_lines)]


def eval_results(pipeline: Pipeline) -> dict | None:
    """The run's ``eval/results.json``, or ``None`` when its eval stage has not finished."""
    record = pipeline.manifest.stage("eval")
    results = record.get("outputs", {}).get("results")
    if record.get("status") != "done" or results is None or not (pipeline.run_dir / results).is_file():
        return None
    return json.loads((pipeline.run_dir / results).read_text(encoding="utf-8"))


def eval_samples(pipeline: Pipeline) -> list[dict[str, str]] | None:
    """The evaluation's ``{prompt, base, cai}`` samples of harmful requests, or ``None`` when its eval stage has not
    finished."""
    results = eval_results(pipeline)
    return None if results is None else samples_of(results, harmful=True)


def published_folder(pipeline: Pipeline) -> Path | None:
    """The local folder the run's publish stage wrote the repository to, if it published to a folder."""
    record = pipeline.manifest.stage("publish")
    publication = record.get("outputs", {}).get("publication")
    if record.get("status") != "done" or publication is None or not (pipeline.run_dir / publication).is_file():
        return None
    folder = json.loads((pipeline.run_dir / publication).read_text(encoding="utf-8")).get("folder")
    return Path(folder) if folder else None


def comparison_text(pipeline: Pipeline, *, samples: int = 3, width: int | None = None) -> str:
    """Base and CAI replies to the first ``samples`` red-team prompts of the evaluation, side by side, headed by what
    the evaluation recorded of their overlap with the training prompts (a prompt also trained on is marked)."""
    width = width or min(shutil.get_terminal_size((120, 24)).columns, 140)
    rows = eval_samples(pipeline)
    if rows is None:
        return "The side-by-side comparison appears once the eval stage has run (run the same command again)."
    if not rows:
        return "The evaluation kept no sample replies to compare."
    results = eval_results(pipeline) or {}
    overlap = results.get("overlap") or {}
    trained_on = {normalize_prompt(prompt) for prompt in overlap.get("overlapping") or []}
    if not overlap.get("checked"):
        provenance = "not checked against the training prompts"
    elif trained_on:
        provenance = f"{len(trained_on)} of them also training prompts, allowed by eval.allow_train_overlap"
    else:
        provenance = "not trained on: checked against the training prompts"
    lines = [f"Harmful requests from the evaluation set ({provenance}), base model ({pipeline.base_model_hub_id()}) "
             "vs the CAI model of this run:"]
    for number, row in enumerate(rows[:samples], start=1):
        mark = " (also a training prompt)" if normalize_prompt(row["prompt"]) in trained_on else ""
        lines += ["", *textwrap.wrap(f"{number}. {row['prompt']}{mark}", width)]
        lines += side_by_side("BASE", "CAI", width)
        lines.append("─" * ((width - len(GUTTER)) // 2) + "─┼─" + "─" * ((width - len(GUTTER)) // 2))
        lines += side_by_side(row["base"], row["cai"], width)
    return "\n".join(lines)


def verdict_text(pipeline: Pipeline, *, width: int | None = None, max_lines: int = 4) -> str:
    """The judge in one line, then at most ``max_lines`` sentences on what the evaluation's figures support (the eval
    stage's notes), and the allowed train/eval overlap whenever there was one; empty before the eval stage has run."""
    width = width or min(shutil.get_terminal_size((120, 24)).columns, 140)
    results = eval_results(pipeline)
    if results is None:
        return ""
    notes = pipeline.manifest.stage("eval").get("notes") or verdict_lines(results)
    judge = judge_summary_line(results)
    if not notes and not judge:  # a results.json of the first format says neither
        return ""
    shown = list(notes[:max_lines])
    # An allowed train/eval overlap is never cut: every figure above it is flattered by it.
    if (overlap := overlap_sentence(results)) is not None and overlap not in shown:
        shown.append(overlap)
    lines = textwrap.wrap(judge, width) if judge else []
    lines.append("Verdict:")
    for note in shown:
        lines += textwrap.wrap(note, width, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(lines)


def next_steps_text(pipeline: Pipeline) -> str:
    """Commands to try after a run: chat with both models, look at the repository, publish it, scale up."""
    run_dir = pipeline.run_dir
    lines = ["Next:", f"  hf-cai chat --run-dir {run_dir}", "      chat with the base and the CAI model side by side in the browser"]
    folder = published_folder(pipeline)
    if folder is not None:
        lines += [
            f"  {folder}/",
            "      the model repository as it would be pushed: model card (README.md), adapter, constitution.yaml",
        ]
    embedded = embedded_model(pipeline.recipe.model)
    license = embedded.license if embedded else "<license>"
    lines += [
        f"  hf-cai publish {run_dir} <you>/<model-name> --license {license} --base-model-id {pipeline.base_model_hub_id()}",
        "      push it to the Hugging Face Hub (add --space for the side-by-side chat Space)",
        "  hf-cai run --config examples/recipes/qwen2.5-1.5b-8gb.yaml",
        "      the same pipeline on a 1.5B model and a consumer GPU",
    ]
    return "\n".join(lines)


def demo_report(pipeline: Pipeline, *, samples: int = 3, width: int | None = None) -> str:
    """The text ``hf-cai demo`` prints after the stage summary: :func:`comparison_text`, :func:`verdict_text`, then
    :func:`next_steps_text`."""
    parts = [comparison_text(pipeline, samples=samples, width=width), verdict_text(pipeline, width=width),
             next_steps_text(pipeline)]
    return "\n\n".join(part for part in parts if part)


__all__ = [
    "comparison_text",
    "demo_report",
    "eval_results",
    "eval_samples",
    "next_steps_text",
    "published_folder",
    "side_by_side",
    "verdict_text",
]
