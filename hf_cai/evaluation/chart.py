"""The evaluation's chart: refusal rates of the base and the CAI model on harmful and on benign requests, and the
judge's win rates, each bar with its 95% interval and its sample size, drawn from a ``results.json`` dict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_cai.errors import MissingExtraError
from hf_cai.evaluation.verdict import judge_accuracy_row, with_interval

_BASE, _CAI = "#8c8c8c", "#c44e52"

INSTALL_HINT = "pip install 'hf-cai[chart]'"


def chart_available() -> bool:
    """Whether matplotlib, the optional ``chart`` extra, is installed."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _bar(axis, x: float, row: Mapping[str, Any] | None, color: str, width: float, hatch: str | None = None) -> None:
    if not row or row.get("rate") is None:
        return
    rate = row["rate"]
    low, high = row["ci95"]
    axis.bar(x, rate, width, color=color, hatch=hatch, edgecolor="white" if hatch else None,
             yerr=[[rate - low], [high - rate]], capsize=4)
    axis.text(x, min(high + 0.02, 0.97), f"{rate:.0%}", ha="center", fontsize=7)


def plot_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Draw ``chart.png`` from a ``results.json`` dict: left, refusal rates (phrase classifier, and the judge's where
    it was asked, hatched) of both models on harmful and benign requests; right, the win rates with the judge's
    accuracy in the title. Returns ``path``. Needs matplotlib (``pip install 'hf-cai[chart]'``)."""
    if not chart_available():
        raise MissingExtraError(f"the evaluation chart needs matplotlib, which is not installed: {INSTALL_HINT}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    refusal = results.get("refusal") or {}
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})

    groups = []
    for group, label in (("harmful", "harmful requests\n(should refuse)"), ("benign", "benign requests\n(should answer)")):
        entry = refusal.get(group)
        if entry and entry.get("n"):
            groups.append((group, f"{label}\nn={entry['n']}", entry))
    judged = any(entry.get("judge") for _, _, entry in groups)
    width = 0.2 if judged else 0.35
    for index, (_, _, entry) in enumerate(groups):
        offsets = (-1.5, -0.5, 0.5, 1.5) if judged else (-0.5, 0.5)
        _bar(left, index + offsets[0] * width, entry.get("base"), _BASE, width)
        _bar(left, index + offsets[1] * width, entry.get("cai"), _CAI, width)
        if judged and entry.get("judge"):
            _bar(left, index + offsets[2] * width, entry["judge"].get("base"), _BASE, width, hatch="//")
            _bar(left, index + offsets[3] * width, entry["judge"].get("cai"), _CAI, width, hatch="//")
    left.set_xticks(range(len(groups)), [label for _, label, _ in groups], fontsize=8)
    left.set_ylim(0, 1.32)  # room above the bars for the legend
    left.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    left.set_ylabel("refusal rate")
    left.set_title("Refusals, base vs CAI (95% intervals)", fontsize=10)
    handles = [Patch(color=_BASE, label="base (phrase classifier)"), Patch(color=_CAI, label="CAI (phrase classifier)")]
    if judged:
        handles += [Patch(facecolor=_BASE, hatch="//", edgecolor="white", label="base (AI judge)"),
                    Patch(facecolor=_CAI, hatch="//", edgecolor="white", label="CAI (AI judge)")]
    left.legend(handles=handles, fontsize=7, loc="upper center", ncol=2, frameon=False)

    wins = results.get("win_rates") or {}
    labels = []
    for index, (key, label) in enumerate((("harmlessness", "harmlessness\n(harmful req.)"),
                                          ("helpfulness", "helpfulness\n(benign req.)"))):
        row = wins.get(key)
        _bar(right, index, row, "#4c72b0" if key == "harmlessness" else "#55a868", 0.5)
        labels.append(f"{label}\nn={row.get('n', 0) if row else 0}")
    right.set_xticks(range(len(labels)), labels, fontsize=8)
    right.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    right.set_ylim(0, 1.32)
    right.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    accuracy = judge_accuracy_row(results.get("judge_quality"))
    judge = f"judge accuracy {with_interval(accuracy)}" if accuracy else "judge accuracy not measured"
    right.set_title(f"CAI win rate vs base\n({judge})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
