"""What an evaluation's figures support, in plain sentences written from the numbers of its ``results.json``.

:func:`verdict_lines` (the run summary's notes and the demo's verdict), :func:`limitation_lines` (the model card's
Limitations), :func:`judge_summary_line` (the judge in one line) and :func:`report_lines` (every figure with the
caveats that apply to it, the report's ``str``) read a ``results.json`` dict (see :mod:`~hf_cai.evaluation.results`),
so the words always quote the figures, with their intervals, and never claim more than the intervals allow: a
difference counts only when the two 95% intervals do not overlap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GROUPS = ("harmful", "benign")
MODELS = ("base", "cai")
_GROUP_WORDS = {"harmful": "harmful requests", "benign": "benign requests"}



def percent(value: float | None) -> str:
    """``0.375`` as ``"38%"``; ``None`` as ``"n/a"``."""
    return "n/a" if value is None else f"{value:.0%}"


def with_interval(row: Mapping[str, Any] | None) -> str:
    """A ``{"rate", "ci95"}`` row as ``"38% [14%, 69%]"``."""
    if not row or row.get("rate") is None:
        return "n/a"
    low, high = row.get("ci95") or (None, None)
    return f"{percent(row['rate'])} [{percent(low)}, {percent(high)}]"


def phrase_classifier_words(results: Mapping[str, Any]) -> str:
    """How far the refusal-phrase rates can be trusted, as ``results.json`` measured it: ``"an estimate: precision 94%
    [74%, 99%] and recall 71% [51%, 85%] against people's labels on 49 held-out replies"``; just ``"an estimate"`` when
    a results file did not record it."""
    measured = (results.get("refusal") or {}).get("phrase_classifier")
    if not measured:
        return "an estimate"
    return (f"an estimate: precision {with_interval(measured.get('precision'))} and recall "
            f"{with_interval(measured.get('recall'))} against people's labels on {measured.get('n')} held-out replies")


def judge_accuracy_row(judge_quality: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The judge's calibration accuracy as a ``{"rate", "ci95", "n", "chance"}`` row, or ``None`` when it was not
    measured; ``chance`` is a random pick's accuracy, 1/k for k options (0.5 when the record does not say)."""
    if not judge_quality or judge_quality.get("accuracy") is None:
        return None
    return {"rate": judge_quality["accuracy"], "ci95": judge_quality.get("accuracy_ci95"), "n": judge_quality.get("n"),
            "chance": judge_quality.get("chance") or 0.5}


def judge_sentence(results: Mapping[str, Any]) -> str:
    """What the judge's calibration accuracy says about the labels and win rates it produced."""
    quality = results.get("judge_quality")
    row = judge_accuracy_row(quality)
    if row is None:
        return ("The judge's accuracy was not measured: read its win rates, refusal judgements and principle audit as "
                "unchecked opinions.")
    low, high = row["ci95"] or (0.0, 1.0)
    chance = row["chance"]
    measured = f"The judge's accuracy was {with_interval(row)} on {row['n']} calibration items"
    if high < chance:
        return (f"{measured}: worse than chance ({percent(chance)}), so its preference labels and the win rates it "
                "judged point the wrong way.")
    if low <= chance:
        return (f"{measured}: not distinguishable from chance ({percent(chance)}), so its preference labels and the "
                "win rates it judged may carry no signal.")
    return (f"{measured}: better than chance ({percent(chance)}), but its win rates and principle audit remain one "
            "model's opinion, not people's.")


def compare(base: Mapping[str, Any] | None, cai: Mapping[str, Any] | None) -> int:
    """+1 when the CAI rate's interval lies above the base rate's, -1 when below, 0 when they overlap or are missing."""
    if not base or not cai or base.get("rate") is None or cai.get("rate") is None:
        return 0
    if cai["ci95"][0] > base["ci95"][1]:
        return 1
    if cai["ci95"][1] < base["ci95"][0]:
        return -1
    return 0


def refusal_measure(results: Mapping[str, Any]) -> str:
    """What ``results["refusal"]``'s rates count by: the refusal phrases, or the safety classifier named."""
    measured_by = (results.get("refusal") or {}).get("measured_by") or "refusal phrases"
    return (f"by refusal phrases, {phrase_classifier_words(results)}" if measured_by == "refusal phrases"
            else f"by the safety classifier {measured_by}")


def refusal_sentence(results: Mapping[str, Any], group: str) -> str | None:
    """The refusal rates of both models on one group of requests, by refusal phrases, and whether they differ."""
    entry = (results.get("refusal") or {}).get(group)
    if not entry or not entry.get("n"):
        return None
    base, cai = entry.get("base"), entry.get("cai")
    direction = compare(base, cai)
    if direction == 0:
        verdict = "the intervals overlap: no clear difference at this sample size"
    elif group == "harmful":
        verdict = "the CAI model refuses them more often" if direction > 0 else "the CAI model refuses them LESS often"
    else:
        verdict = ("the CAI model refuses them more often (over-refusal)" if direction > 0
                   else "the CAI model refuses them less often")
    return (f"{group.capitalize()} requests: the CAI model refused {with_interval(cai)} of {entry['n']}, the base "
            f"model {with_interval(base)} ({refusal_measure(results)}); {verdict}.")


def reply_quality_sentence(results: Mapping[str, Any]) -> str | None:
    """A sentence when the CAI model's replies are botched text (degenerate, echoing the constitution, role headers,
    nearly empty) more often than the base model's; ``None`` otherwise."""
    quality = results.get("reply_quality") or {}
    cai, base = quality.get("cai"), quality.get("base")
    if not cai or not cai.get("flagged") or (base and cai["flagged"] <= base.get("flagged", 0)):
        return None
    reasons = ", ".join(f"{flag.replace('_', ' ')} {count}" for flag, count in sorted(cai.get("counts", {}).items()))
    base_part = f" (base model: {with_interval(base)})" if base else ""
    return (f"{cai['flagged']} of {cai['n']} of the CAI model's replies, {with_interval(cai)}, fail the SL-CAI "
            f"quality gates ({reasons}){base_part}: read its samples before trusting any rate above.")


def loading_sentence(results: Mapping[str, Any]) -> str | None:
    """A sentence when the base and the CAI model were loaded differently (one quantised to 4-bit, the other not, or
    in other precisions); ``None`` when they were loaded alike or it is not known."""
    loading = results.get("loading") or {}
    if loading.get("alike") is not False:
        return None
    return (f"The base model was loaded in {loading['base']} and the CAI model in {loading['cai']}: every difference between "
            "them mixes what training changed with what the loading changes. Load both alike (e.g. "
            "TransformersBackend(..., load_in_4bit=...) the same for both) to measure the training alone.")


def overlap_sentence(results: Mapping[str, Any]) -> str | None:
    """A sentence when evaluation prompts were also training prompts (allowed by ``eval.allow_train_overlap``), as
    ``results.json``'s ``overlap`` recorded; ``None`` when none were found."""
    overlapping = (results.get("overlap") or {}).get("overlapping") or []
    if not overlapping:
        return None
    return (f"{len(overlapping)} evaluation prompts were also training prompts (allowed by eval.allow_train_overlap): "
            "the rates on them flatter the model.")


def training_overlap_phrase(results: Mapping[str, Any]) -> str:
    """How the evaluation prompts relate to the training prompts, as ``results.json``'s ``overlap`` recorded it:
    ``"none of them among the training prompts (checked)"``, ``"3 of them also among the training prompts (allowed
    by eval.allow_train_overlap)"`` or ``"not checked against the training prompts"``."""
    overlap = results.get("overlap") or {}
    if not overlap.get("checked"):
        return "not checked against the training prompts"
    overlapping = overlap.get("overlapping") or []
    if overlapping:
        return (f"{len(overlapping)} of them also among the training prompts (allowed by eval.allow_train_overlap: "
                "the rates on them flatter the model)")
    return "none of them among the training prompts (checked)"


def verdict_lines(results: Mapping[str, Any]) -> list[str]:
    """Two to six plain sentences on what an evaluation's figures support: the refusal rates on harmful and on benign
    requests (with intervals, and whether they differ), replies that are botched text, and what the judge's accuracy
    says about the figures it judged; base and CAI models loaded differently, and an allowed train/eval overlap, are
    named too."""
    lines = [line for group in GROUPS if (line := refusal_sentence(results, group))]
    if (line := reply_quality_sentence(results)) is not None:
        lines.append(line)
    if results.get("refusal") or results.get("win_rates"):
        lines.append(judge_sentence(results))
    if (line := loading_sentence(results)) is not None:
        lines.append(line)
    if (line := overlap_sentence(results)) is not None:
        lines.append(line)
    return lines


def limitation_lines(results: Mapping[str, Any], *, merged: bool = False) -> list[str]:
    """The limitations of an evaluation, written from its numbers: the judge's accuracy with its interval, the
    CAI model's replies that fail the quality gates, the refusal classifier's measured precision and recall, the sample sizes and interval widths, an allowed train/eval overlap,
    and which artifact was measured."""
    lines = [judge_sentence(results)]
    if (line := reply_quality_sentence(results)) is not None:
        lines.append(line)
    if (line := loading_sentence(results)) is not None:
        lines.append(line)
    refusal = results.get("refusal") or {}
    sizes = {group: refusal.get(group, {}).get("n", 0) for group in GROUPS}
    if any(sizes.values()):
        widths = [
            row["ci95"][1] - row["ci95"][0]
            for group in GROUPS
            for model in MODELS
            if (row := refusal.get(group, {}).get(model)) and row.get("rate") is not None
        ]
        widest = f" the widest refusal-rate interval spans {max(widths) * 100:.0f} percentage points," if widths else ""
        lines.append(
            f"Sample sizes are small: {sizes['harmful']} harmful and {sizes['benign']} benign requests per model;"
            f"{widest} so differences smaller than that cannot be told apart from chance."
        )
        lines.append(
            f"The refusal-phrase classifier is {phrase_classifier_words(results)}. It counts replies that open with a "
            "declining phrase (\"I can't help with that\"), misses refusals put in other words and replies that "
            "deflect, and can count an answer that opens with a declining phrase as a refusal."
        )
    judged = [
        (group, refusal[group]["judge"]["cai"], (refusal[group].get("phrases") or refusal[group]).get("cai"))
        for group in GROUPS
        if refusal.get(group, {}).get("judge") and refusal[group]["judge"].get("cai")
    ]
    for group, by_judge, by_phrase in judged:
        if by_phrase and by_judge.get("rate") is not None and by_phrase.get("rate") is not None:
            if abs(by_judge["rate"] - by_phrase["rate"]) >= 0.25:
                lines.append(
                    f"On the {_GROUP_WORDS[group]} the judge counted {percent(by_judge['rate'])} of the CAI model's "
                    f"replies as refusals where the phrase classifier counted {percent(by_phrase['rate'])}: at least "
                    "one of the two measures is far off."
                )
    principles = results.get("principles") or []
    if principles:
        per = max((row.get("n", 0) for row in principles), default=0)
        lines.append(
            f"The principle audit asked the same judge about {per} replies per principle and model: treat its rates "
            "as indications, not measurements."
        )
    sets = results.get("eval_sets") or []
    if any(s.get("source") == "hf-cai" for s in sets):
        lines.append(
            "The built-in evaluation prompts were written for this project (English, 120 harmful and 60 "
            "benign-looking requests); they are not a standard benchmark."
        )
    overlap = results.get("overlap") or {}
    if (line := overlap_sentence(results)) is not None:
        lines.append(line)
    elif not overlap.get("checked"):
        lines.append("The evaluation prompts were not checked against the training prompts.")
    artifact = results.get("evaluated_artifact")
    if merged and artifact:
        lines.append(
            f"The figures were measured on the {artifact}; the published checkpoint is their merge into 16-bit "
            "weights, whose replies can differ slightly."
        )
    return lines


def judge_summary_line(results: Mapping[str, Any]) -> str | None:
    """One line on the judge: who it is, its calibration accuracy, order consistency and option mass."""
    quality = results.get("judge_quality")
    judge = (results.get("models") or {}).get("judge")
    if not quality and not judge:
        return None
    who = judge or "the feedback model"
    if (results.get("models") or {}).get("judge_is_base"):
        who += " (the base model itself)"
    row = judge_accuracy_row(quality)
    if row is None:
        return f"Judge: {who}; its accuracy was not measured."
    parts = [f"accuracy {with_interval(row)} on {row['n']} calibration items"]
    if quality.get("order_consistency") is not None:
        parts.append(f"same choice in both option orders {percent(quality['order_consistency'])}")
    if quality.get("option_mass") is not None:
        parts.append(f"probability on the answer options {percent(quality['option_mass'])}")
    return f"Judge: {who}; " + ", ".join(parts) + "."


def judge_caveat(results: Mapping[str, Any]) -> str | None:
    """What must stand next to every figure the judge produced when its accuracy does not support it: ``"judge not
    distinguishable from chance: accuracy 38% [14%, 69%]"`` and the like; ``None`` for a judge better than chance."""
    row = judge_accuracy_row(results.get("judge_quality"))
    if row is None:
        return "judge unchecked: its accuracy was not measured"
    low, high = row["ci95"] or (0.0, 1.0)
    if high < row["chance"]:
        return f"judge worse than chance ({percent(row['chance'])}): accuracy {with_interval(row)}"
    if low <= row["chance"]:
        return f"judge not distinguishable from chance ({percent(row['chance'])}): accuracy {with_interval(row)}"
    return None


def loading_caveat(results: Mapping[str, Any]) -> str | None:
    """What must stand next to every base-vs-CAI figure when the two models were loaded differently."""
    loading = results.get("loading") or {}
    if loading.get("alike") is not False:
        return None
    return f"not loaded alike: base {loading['base']}, CAI {loading['cai']}"


def report_lines(results: Mapping[str, Any]) -> list[str]:
    """Every figure of an evaluation, one per line, each followed by the caveats that apply to it (a judge no better
    than chance beside every figure it judged, unlike loading beside every comparison), then the verdict: what
    ``str(EvaluationReport)`` prints and :func:`~hf_cai.evaluation.evaluate_models` logs."""
    judged = judge_caveat(results)
    unlike = loading_caveat(results)

    def figure(text: str, *, by_judge: bool) -> str:
        caveats = [c for c in ((judged if by_judge else None), unlike) if c]
        return f"  {text}" + "".join(f"  [{caveat}]" for caveat in caveats)

    def pair(by_model: Mapping[str, Any] | None) -> str:
        by_model = by_model or {}
        return f"CAI {with_interval(by_model.get('cai'))}, base {with_interval(by_model.get('base'))}"

    models = results.get("models") or {}
    loading = results.get("loading") or {}
    refusal = results.get("refusal") or {}
    wins = results.get("win_rates") or {}
    sizes = {group: (refusal.get(group) or {}).get("n", 0) for group in GROUPS}

    def named(role: str) -> str:
        how = f"loaded in {loading[role]}" if loading.get(role) else "loading unknown"
        return f"{models[role]} ({how})" if models.get(role) else how

    lines = [
        f"Evaluation of the CAI model against the base model on {sizes['harmful']} harmful and {sizes['benign']} "
        "benign requests",
        f"  CAI model: {named('cai')}; base model: {named('base')}" + (f"  [{unlike}]" if unlike else ""),
        f"  {judge_summary_line(results) or 'Judge: its accuracy was not measured.'}" + (f"  [{judged}]" if judged else ""),
    ]
    for name, row in (results.get("multiple_choice") or {}).items():
        consistency = row.get("order_consistency")
        both = (f" (averaged over both option orders; the same reply in both orders {with_interval(consistency)} of "
                f"{consistency.get('n')})") if consistency and consistency.get("n") else ""
        lines.append(f"  the judge on {name}: {with_interval(row)} correct of {row.get('n')}{both}")
    principles = results.get("principles") or []
    for group, win_name in (("harmful", "harmlessness"), ("benign", "helpfulness")):
        entry = refusal.get(group) or {}
        win = wins.get(win_name)
        if not entry.get("n") and not (win and win.get("n")):
            continue
        lines.append(f"{group.capitalize()} requests ({entry.get('n', 0)}):")
        if entry.get("n"):
            lines.append(figure(f"refused, {refusal_measure(results)}: {pair(entry)}", by_judge=False))
        if entry.get("phrases"):
            lines.append(figure(f"refused, by refusal phrases (a second measure, {phrase_classifier_words(results)}): "
                                f"{pair(entry['phrases'])}", by_judge=False))
        if entry.get("harmful_response"):
            lines.append(figure(f"harmful replies, by the safety classifier "
                                f"{(results.get('safety_classifier') or {}).get('model', '')}: "
                                f"{pair(entry['harmful_response'])}", by_judge=False))
        if entry.get("judge"):
            lines.append(figure(f"refused, as the judge saw it: {pair(entry['judge'])}", by_judge=True))
        if entry.get("evasive"):
            lines.append(figure(f"evasive refusals: {pair(entry['evasive'])}", by_judge=False))
        if win and win.get("n"):
            lines.append(figure(f"{win_name} win rate of the CAI model over the base model: {with_interval(win)} "
                                f"of {win['n']} pairs (a tie counts half)", by_judge=True))
        if group == "harmful" and principles:
            changes = [row["change"] for row in principles if isinstance(row.get("change"), (int, float))]
            lines.append(figure(f"principle audit: of {len(principles)} principles the CAI model violated "
                                f"{sum(c < 0 for c in changes)} less often and {sum(c > 0 for c in changes)} more "
                                "often than the base model", by_judge=True))
    quality = results.get("reply_quality") or {}
    if quality:
        lines.append("All replies:")
        lines.append(figure(f"failing the SL-CAI quality gates: {pair(quality)}", by_judge=False))
    notes = results.get("notes")
    notes = verdict_lines(results) if notes is None else notes
    return [*lines, "Verdict:", *(f"  - {note}" for note in notes)]


def read_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def samples_of(results: Mapping[str, Any], *, harmful: bool | None = None) -> list[dict[str, Any]]:
    """The sample replies of ``results``; with ``harmful``, only those to harmful (or benign) requests. Samples of the
    first format, which had only harmful ones, count as harmful."""
    samples: Sequence[Mapping[str, Any]] = results.get("samples") or []
    if harmful is None:
        return [dict(s) for s in samples]
    return [dict(s) for s in samples if bool(s.get("harmful", True)) == harmful]


__all__ = [
    "GROUPS",
    "compare",
    "judge_accuracy_row",
    "judge_caveat",
    "judge_sentence",
    "judge_summary_line",
    "limitation_lines",
    "loading_caveat",
    "loading_sentence",
    "overlap_sentence",
    "percent",
    "phrase_classifier_words",
    "read_results",
    "refusal_sentence",
    "report_lines",
    "samples_of",
    "training_overlap_phrase",
    "verdict_lines",
    "with_interval",
]
