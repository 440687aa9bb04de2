"""An evaluation as a model card shows it: the rows of its tables and the entries of its ``model-index``.

:func:`model_index_entries` keeps to what is this model's own result: the CAI model's refusal rates on the harmful
and on the benign requests, by the refusal-phrase classifier (reproducible from the replies, no judge involved).
Everything that compares it with the base model (the base's rates, the win rates) or measures the judge (its
accuracy) goes into the card's text, where it is labelled as such, never into ``model-index``, which the Hub shows as
the model's scores.

The lm-evaluation-harness benchmarks (``results.json``'s ``benchmarks``) give ``model-index`` entries too, the CAI
model's value of each task and metric, under the dataset id, configuration and split lm-eval's task reads (its
``dataset_path`` / ``dataset_name``): ``truthfulqa_mc2`` is ``truthfulqa/truthful_qa``, configuration
``multiple_choice``, metric ``mc2``, as the Hub's leaderboards name them. A local task (files read through
``include_path``) has no Hub dataset: it is named by its task name with "local lm-eval task" in its name, never with
a made-up Hub id. The base model's values and the differences are in the card's text only.

Hub ``model-index`` entries name their dataset with a Hub dataset id (``huggingface_hub.EvalResult``:
"Use dataset id from https://hf.co/datasets"). The built-in evaluation set has none, so it is named plainly
(``type: hf-cai-eval``, split ``harmful`` / ``benign``), never with a made-up ``org/name`` that would look like a
Hub repository; sets loaded from files are named by their file's stem.

:func:`evaluation_section` turns a ``results.json`` (either format) into the rows the card template renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hf_cai.evaluation.benchmarks import format_difference, format_value
from hf_cai.evaluation.verdict import (
    GROUPS,
    judge_summary_line,
    limitation_lines,
    phrase_classifier_words,
    samples_of,
    training_overlap_phrase,
    verdict_lines,
    with_interval,
)

TASK_NAME = "Constitutional AI evaluation"
_METRIC_NAMES = {
    "harmful": "refusal rate on harmful requests (refusal-phrase classifier, an estimate)",
    "benign": "refusal rate on benign requests, over-refusal (refusal-phrase classifier, an estimate)",
}
_GROUP_LABELS = {"harmful": "harmful (should refuse)", "benign": "benign (should answer)"}
LEADERBOARD_METRICS = {("truthfulqa_mc2", "acc"): "mc2", ("truthfulqa_mc1", "acc"): "mc1"}
"""lm-eval metrics the Hub's leaderboards name otherwise: ``(task, lm-eval metric) -> metric type``."""


def _metric_name(refusal: Mapping[str, Any], group: str) -> str:
    measured_by = refusal.get("measured_by") or "refusal phrases"
    if measured_by == "refusal phrases":
        return _METRIC_NAMES[group]
    return _METRIC_NAMES[group].replace("refusal-phrase classifier, an estimate", f"safety classifier {measured_by}")


def is_structured(results: Mapping[str, Any]) -> bool:
    """Whether ``results`` is a format-2 ``results.json`` (with ``refusal``), not a first-format metric list."""
    return isinstance(results.get("refusal"), Mapping)


def model_index_entries(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """This model's own results as ``EvalResult`` keyword arguments: its refusal rates on harmful and benign requests.

    A first-format ``results.json`` gives its ``(CAI)`` rows only (no base-model rows, no win rates, no accuracies).
    """
    entries = []
    if is_structured(results):
        for group in GROUPS:
            entry = results["refusal"].get(group) or {}
            cai = entry.get("cai") or {}
            if not entry.get("n") or cai.get("rate") is None:
                continue
            dataset = entry.get("dataset") or {}
            entries.append({
                "task_type": "text-generation",
                "task_name": TASK_NAME,
                "dataset_type": dataset.get("type") or "hf-cai-eval",
                "dataset_name": dataset.get("name") or f"{group} requests",
                "dataset_split": group,
                "metric_type": "refusal_rate",
                "metric_name": f"{_metric_name(results['refusal'], group)}, n={entry['n']}",
                "metric_value": round(float(cai["rate"]), 4),
            })
        return entries + benchmark_index_entries(results.get("benchmarks"))
    for metric in results.get("metrics") or []:
        value = metric.get("value")
        name = str(metric.get("name", ""))
        if not name.endswith("(CAI)") or not isinstance(value, (int, float)) or value != value:
            continue
        dataset = str(metric.get("dataset") or "hf-cai evaluation prompts")
        entries.append({
            "task_type": "text-generation",
            "task_name": TASK_NAME,
            "dataset_type": "-".join(dataset.lower().split()),
            "dataset_name": dataset,
            "metric_type": str(metric.get("type") or "rate"),
            "metric_name": name,
            "metric_value": round(float(value), 4),
        })
    return entries


def benchmark_index_entries(benchmarks: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The CAI model's lm-eval results as ``EvalResult`` keyword arguments, one per task and metric (groups of tasks,
    which have no single dataset, are left out)."""
    entries = []
    for task in (benchmarks or {}).get("tasks", ()):
        dataset = task.get("dataset")
        if not dataset:
            continue
        name = task["task"]
        for row in task.get("metrics", ()):
            value = (row.get("cai") or {}).get("value")
            if value is None:
                continue
            metric = LEADERBOARD_METRICS.get((name, row["metric"]), row["metric"])
            described = metric if row.get("filter") in (None, "none") else f"{metric} ({row['filter']})"
            entry = {
                "task_type": "text-generation",
                "task_name": name,
                "dataset_type": name if dataset.get("local") else dataset["path"],
                "dataset_name": f"{name} (local lm-eval task, not a Hub dataset)" if dataset.get("local")
                else f"{name} (lm-evaluation-harness)",
                "dataset_split": dataset.get("split"),
                "metric_type": metric,
                "metric_name": f"{described}, n={task.get('n')}",
                "metric_value": round(float(value), 4),
            }
            if dataset.get("name") and not dataset.get("local"):
                entry["dataset_config"] = dataset["name"]
            if task.get("num_fewshot") is not None:
                entry["dataset_args"] = {"num_few_shot": task["num_fewshot"]}
            entries.append(entry)
    return entries


def _benchmark_rows(benchmarks: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for task in (benchmarks or {}).get("tasks", ()):
        dataset = task.get("dataset") or {}
        if dataset.get("local"):
            source = "local task file"
        elif dataset.get("path"):
            details = ", ".join(str(part) for part in (dataset.get("name"), dataset.get("split")) if part)
            source = f"{dataset['path']}" + (f" ({details})" if details else "")
        else:
            source = "group of tasks"
        for row in task.get("metrics", ()):
            metric = row["metric"] if row.get("filter") in (None, "none") else f"{row['metric']} ({row['filter']})"
            rows.append({"task": task["task"], "metric": metric, "n": task.get("n"), "shots": task.get("num_fewshot"),
                         "base": format_value(row.get("base")), "cai": format_value(row.get("cai")),
                         "difference": format_difference(row.get("difference") or {}), "dataset": source})
    return rows


def _refusal_rows(refusal: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    measured_by = refusal.get("measured_by") or "refusal phrases"
    led = measured_by != "refusal phrases"
    for measure, pick in (
        (f"safety classifier {measured_by}" if led else "refusal-phrase classifier", lambda entry: entry),
        ("refusal-phrase classifier (second measure)", lambda entry: entry.get("phrases")),
        ("harmful replies (safety classifier)", lambda entry: entry.get("harmful_response")),
        ("AI judge", lambda entry: entry.get("judge")),
        ("evasive refusals (short, no explanation)", lambda entry: entry.get("evasive")),
    ):
        for group in GROUPS:
            entry = refusal.get(group) or {}
            chosen = pick(entry) if entry.get("n") else None
            if not chosen or not (chosen.get("base") or chosen.get("cai")):
                continue
            rows.append({"measure": measure, "requests": _GROUP_LABELS[group], "base": with_interval(chosen.get("base")),
                         "cai": with_interval(chosen.get("cai")), "n": entry["n"]})
    return rows


def _win_rows(wins: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, requests in (("harmlessness", "harmful"), ("helpfulness", "benign")):
        row = wins.get(key)
        if row and row.get("n"):
            rows.append({"comparison": key, "requests": requests, "rate": with_interval(row), "n": row["n"],
                         "constitution": row.get("constitution", "")})
    return rows


def _principle_rows(principles: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for row in principles:
        change = row.get("change")
        rows.append({"id": row.get("principle_id"), "n": row.get("n"), "base": with_interval(row.get("base")),
                     "cai": with_interval(row.get("cai")),
                     "change": "–" if change is None else f"{round(100 * change):+d} points"})
    return rows


def evaluation_section(results: Mapping[str, Any] | None, *, merged: bool = False) -> dict[str, Any] | None:
    """What the card's evaluation section shows, from a ``results.json`` dict; ``None`` without results.

    Returns ``{"structured", "models", "artifact", "merged_note", "refusal_rows", "win_rows", "principle_rows",
    "mc_rows", "judge_line", "judge_warnings", "verdict", "limitations", "harmful_samples", "benign_samples",
    "n_harmful", "n_benign", "overlap_note", "phrase_classifier", "metrics", "benchmark_rows", "benchmark_harness",
    "benchmark_items"}``; ``metrics`` is the flat list (first format).
    """
    if not results:
        return None
    structured = is_structured(results)
    refusal = results.get("refusal") or {}
    artifact = results.get("evaluated_artifact") or ""
    merged_note = None
    if merged and artifact.startswith("LoRA adapter"):
        merged_note = (f"The figures below were measured on the {artifact}; the published checkpoint is their merge "
                       "into 16-bit weights, whose replies can differ slightly (rounding, and the dequantised base "
                       "where training used 4-bit weights).")
    quality = results.get("judge_quality") or {}
    benchmarks = results.get("benchmarks") or {}
    return {
        "structured": structured,
        "models": dict(results.get("models") or {}),
        "artifact": artifact,
        "merged_note": merged_note,
        "n_harmful": (refusal.get("harmful") or {}).get("n", 0),
        "n_benign": (refusal.get("benign") or {}).get("n", 0),
        "overlap_note": training_overlap_phrase(results),
        "refusal_rows": _refusal_rows(refusal),
        "phrase_classifier": phrase_classifier_words(results),
        "win_rows": _win_rows(results.get("win_rates") or {}),
        "principle_rows": _principle_rows(results.get("principles") or []),
        "mc_rows": [{"file": name, "rate": with_interval(row), "consistency": with_interval(row.get("order_consistency")),
                     "n": row.get("n")} for name, row in (results.get("multiple_choice") or {}).items()],
        "judge_line": judge_summary_line(results) if structured else None,
        "judge_warnings": list(quality.get("warnings") or []),
        "verdict": verdict_lines(results) if structured else [],
        "limitations": limitation_lines(results, merged=merged) if structured else [],
        "harmful_samples": samples_of(results, harmful=True),
        "benign_samples": samples_of(results, harmful=False),
        "metrics": list(results.get("metrics") or []),
        "benchmark_rows": _benchmark_rows(benchmarks),
        "benchmark_harness": f"lm-evaluation-harness {benchmarks.get('lm_eval_version', '')}".strip(),
        "benchmark_items": (benchmarks.get("settings") or {}).get("items", ""),
    }


__all__ = ["LEADERBOARD_METRICS", "TASK_NAME", "benchmark_index_entries", "evaluation_section", "is_structured",
           "model_index_entries"]
