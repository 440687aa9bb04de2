"""What an evaluation found, as ``results.json`` holds it, and what those figures mean in plain sentences.

:class:`EvaluationReport` is what :func:`~hf_cai.evaluation.comparison.evaluate_models` returns; :meth:`~EvaluationReport.save`
writes ``results.json`` (its schema below) and ``chart.png`` (:mod:`~hf_cai.evaluation.chart`).
:mod:`~hf_cai.evaluation.verdict` turns a ``results.json`` into plain sentences.

``results.json`` (format 2), every rate a share in ``[0, 1]`` with its 95% Wilson interval::

    {
      "format": 2,
      "constitution_sha256": str,
      "models": {                        # who was compared and who judged
        "base": str,                     #   Hub id (or alias / folder) of the model before alignment
        "cai": str,                      #   the aligned model: its repository, or the folder it was saved to
        "judge": str,                    #   the feedback model that judged win rates, refusals and principles
        "judge_is_base": bool,           #   the judge is the base model itself
        "base_weights": null | {         #   the GGUF file the local base weights were de-quantised from
          "format": "gguf", "file": str, "sha256": str, "quantization": str,   # e.g. "Q4_1"
          "tensor_types": {type: int}, "hub_id": str | null, "dequantized_to": str
        }
      },
      "evaluated_artifact": str,         # what generated the CAI replies, e.g. "LoRA adapter on org/base (...)"
      "loading": {                       # how each model's weights were loaded ("4-bit", "bfloat16", ...; null: unknown)
        "base": str | null, "cai": str | null,
        "alike": bool | null             #   false: the comparison mixes training with loading (said in "notes")
      },
      "eval_sets": [{"name": str, "source": str, "harmful": int, "benign": int}],   # the sets prompts came from
      "judge_quality": null | {          # JudgeQualityReport.to_dict(), plus where it came from
        "accuracy": float, "accuracy_ci95": [lo, hi], "order_consistency": float, "option_mass": float,
        "label_entropy": float, "position_bias": float, "near_chance": bool, "n": int, "warnings": [str],
        "source": "pref_data stage" | "measured by the evaluation" | str, ...
      },
      "refusal": {
        "measured_by": str,              # what "base" / "cai" below count by: "refusal phrases" or a classifier's id
        "classifier": str,               # how that measure counts
        "phrase_classifier": {           # the phrase classifier against people's labels (refusal.measure_phrase_classifier)
          "precision": {"rate", "ci95", "n"}, "recall": {"rate", "ci95", "n"}, "n": int,
          "labelled_set": str, "split": "held_out"   #   the half not read while improving the phrases
        },
        "harmful" | "benign": {          # requests a good assistant declines | answers (over-refusal probes)
          "n": int,
          "dataset": {"type": str, "name": str},
          "base": {"rate": float | null, "ci95": [lo, hi], "refusals": int, "n": int},   # by "measured_by"
          "cai": {...same...},
          "phrases": null | {"base": {...}, "cai": {...}},   # the phrase list, when a classifier leads
          "harmful_response": null | {"base": {"rate", "ci95", "harmful", "n"}, "cai": {...}},   # by the classifier
          "judge": null | {"base": {"rate", "ci95", "refusals", "n"}, "cai": {...}},     # the AI judge's opinion
          "evasive": {"base": {...}, "cai": {...}}    # harmful only: short refusals that explain nothing
        }
      },
      "safety_classifier": null | {      # eval.classifier: the independent classifier that judged the replies
        "model": str, "format": "llama-guard-3" | "wildguard" | "harmbench", "judges_refusal": bool,
        "unparsed": {group: {"base" | "cai": int}},   # answers not in its published format (left out of the rates)
        "categories": {"base" | "cai": {category: int}}
      },
      "win_rates": {                     # the judge's preference for the CAI reply over the base reply
        "helpfulness": {"rate", "ci95", "wins", "n", "prompts": "benign", "constitution": str},
        "harmlessness": {"rate", "ci95", "wins", "n", "prompts": "harmful", "constitution": str}
      },
      "reply_quality": {                 # replies the SL-CAI quality gates would flag, over both groups
        "base" | "cai": {"rate", "ci95", "flagged", "n", "counts": {flag: int}}
      },
      "principles": [                    # per-principle audit of the replies to the harmful prompts
        {"principle_id": str, "principle": str, "n": int,
         "base": {"rate", "ci95", "violations"}, "cai": {...}, "change": float | null}
      ],
      "multiple_choice": {file_name: {   # the judge on the paper's multiple-choice files, each question in both orders
        "rate", "ci95", "correct", "n",  #   accuracy averaged over both option orders
        "order_consistency": null | {"rate", "ci95", "consistent", "n"}   # same reply chosen in both orders
      }},
      "benchmarks": null | {             # lm-evaluation-harness tasks, both models (evaluation.benchmarks.paired_table)
        "harness": "lm-evaluation-harness", "lm_eval_version": str, "settings": {...}, "models": {"base", "cai"},
        "tasks": [{"task": str, "version", "output_type", "num_fewshot", "n", "n_total",
                   "dataset": {"path", "name", "split", "local"} | null,
                   "metrics": [{"metric", "filter", "higher_is_better", "base": {"value", "stderr"},
                                "cai": {"value", "stderr"}, "difference": {"value", "stderr", "paired", "n"}}]}]
      },
      "overlap": {"checked": bool, "training_prompts": int, "overlapping": [str], "allowed": bool},
      "settings": {...},                 # the EvaluationConfig
      "samples": [{"prompt": str, "harmful": bool, "category": str, "base": str, "cai": str}],
      "notes": [str],                    # verdict.verdict_lines(): what the figures support
      "metrics": [{"name", "value", "ci95", "n", "type", "dataset"}]   # flat list, for older readers
    }

Readers written for the first format (``{"constitution_sha256", "metrics", "samples"}``) keep working: ``metrics``
and ``samples`` keep their shapes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_cai.evaluation.refusal import PHRASE_CLASSIFIER_NOTE, measure_phrase_classifier
from hf_cai.evaluation.verdict import GROUPS, report_lines, verdict_lines
from hf_cai.stats import Proportion

RESULTS_FORMAT = 2

logger = logging.getLogger(__name__)


def rate_dict(proportion: Proportion) -> dict[str, Any]:
    """``{"rate", "ci95", "<successes>", "n"}`` of a proportion; ``rate`` is ``None`` without data."""
    low, high = proportion.interval
    return {
        "rate": proportion.value if proportion.total else None,
        "ci95": [low, high],
        "count": proportion.successes,
        "n": proportion.total,
    }


def _named(proportion: Proportion, count_key: str) -> dict[str, Any]:
    row = rate_dict(proportion)
    count = row.pop("count")
    row[count_key] = int(count) if float(count).is_integer() else count
    return row


@dataclass
class EvaluationReport:
    """Results of :func:`~hf_cai.evaluation.comparison.evaluate_models`; :meth:`save` writes ``results.json`` (see the
    module notes for its schema) and ``chart.png``.

    Attributes:
        harmlessness_win_rate: How often the judge preferred the CAI reply to a harmful request (ties count half).
        helpfulness_win_rate: The same on the benign requests, judged by the helpfulness constitution.
        refusal: ``{"harmful" | "benign": {"base" | "cai": Proportion}}`` by the refusal-phrase classifier, or by the
            safety classifier when it judges refusals.
        phrase_refusal: The refusal-phrase classifier's rates when the safety classifier's lead (else empty).
        harmful_response: The safety classifier's harmful-reply rates, same shape (empty without one).
        safety_classifier: ``results.json``'s ``safety_classifier`` section, or ``None``.
        judged_refusal: The same by the AI judge (empty when not asked).
        evasive: ``{"base" | "cai": Proportion}``: short refusals of harmful requests that explain nothing.
        reply_quality: ``{"base" | "cai": {"rate", "ci95", "flagged", "n", "counts"}}``: replies the SL-CAI quality
            gates would flag (degenerate, echoing the constitution, leaked role headers, nearly empty).
        principles: The per-principle audit rows (:func:`~hf_cai.evaluation.judge_questions.principle_audit`).
        feedback_accuracy: The judge's accuracy per multiple-choice file, averaged over both option orders.
        feedback_order_consistency: Per multiple-choice file, how often the judge chose the same reply in both orders.
        judge_quality: The judge's calibration report as a dict (``JudgeQualityReport.to_dict()`` and ``source``).
        models: ``{"base", "cai", "judge"}`` ids, ``judge_is_base``, and ``base_weights`` (the GGUF file the base
            weights came from, see :func:`hf_cai.gguf.weights_source`) when the caller records it.
        evaluated_artifact: What generated the CAI replies.
        loading: ``{"base", "cai"}``: how each model's weights were loaded (``"4-bit"``, ``"bfloat16"``, ...; ``None``
            when the backend does not say), and ``"alike"``: whether the two were loaded the same way (``None``:
            unknown).
        eval_sets: The sets the prompts came from, with their sizes.
        datasets: ``{"harmful" | "benign": {"type", "name"}}``: how the model card names each group's prompts.
        overlap: What the train/eval overlap check found.
        settings: The evaluation's settings.
        samples: Replies of both models to the first prompts of each group.
        constitution_sha256: The constitution judged against.
        constitution_name: Its name.
        benchmarks: Both models on lm-evaluation-harness tasks
            (:func:`~hf_cai.evaluation.benchmarks.run_benchmarks`), or ``None`` when none ran.
    """

    harmlessness_win_rate: Proportion
    helpfulness_win_rate: Proportion
    refusal: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    phrase_refusal: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    harmful_response: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    safety_classifier: dict[str, Any] | None = None
    judged_refusal: dict[str, dict[str, Proportion]] = field(default_factory=dict)
    evasive: dict[str, Proportion] = field(default_factory=dict)
    reply_quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    principles: list[dict[str, Any]] = field(default_factory=list)
    feedback_accuracy: dict[str, Proportion] = field(default_factory=dict)
    feedback_order_consistency: dict[str, Proportion] = field(default_factory=dict)
    judge_quality: dict[str, Any] | None = None
    models: dict[str, Any] = field(default_factory=dict)
    evaluated_artifact: str = ""
    loading: dict[str, Any] = field(default_factory=dict)
    eval_sets: list[dict[str, Any]] = field(default_factory=list)
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)
    overlap: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    constitution_sha256: str = ""
    constitution_name: str = ""
    benchmarks: dict[str, Any] | None = None

    def metrics(self) -> list[dict[str, Any]]:
        """Flat metric list with intervals (``results.json``'s ``metrics``, kept for readers of the first format)."""
        harmful_set = self.datasets.get("harmful", {}).get("name", "harmful requests")
        benign_set = self.datasets.get("benign", {}).get("name", "benign requests")
        sets = {"harmful": harmful_set, "benign": benign_set}
        rows = [
            {**self.harmlessness_win_rate.to_dict(), "type": "win_rate", "dataset": harmful_set},
            {**self.helpfulness_win_rate.to_dict(), "type": "win_rate", "dataset": benign_set},
        ]
        for kind, table in (("refusal_rate", self.refusal), ("judged_refusal_rate", self.judged_refusal),
                            ("phrase_refusal_rate", self.phrase_refusal),
                            ("harmful_response_rate", self.harmful_response)):
            for group, by_model in table.items():
                for proportion in by_model.values():
                    rows.append({**proportion.to_dict(), "type": kind, "dataset": sets[group]})
        for proportion in self.evasive.values():
            rows.append({**proportion.to_dict(), "type": "evasive_refusal_rate", "dataset": harmful_set})
        for file_name, accuracy in self.feedback_accuracy.items():
            rows.append({**accuracy.to_dict(), "type": "accuracy", "dataset": file_name})
        return rows

    def _multiple_choice_row(self, name: str) -> dict[str, Any]:
        consistency = self.feedback_order_consistency.get(name)
        return {**_named(self.feedback_accuracy[name], "correct"),
                "order_consistency": _named(consistency, "consistent") if consistency else None}

    def to_dict(self) -> dict[str, Any]:
        """``results.json``'s content (see the module notes)."""
        led = bool(self.phrase_refusal) and self.safety_classifier is not None
        refusal: dict[str, Any] = {
            "measured_by": self.safety_classifier["model"] if led else "refusal phrases",
            "classifier": (f"safety classifier {self.safety_classifier['model']} ({self.safety_classifier['format']} "
                           "format), on the request and the whole reply") if led else PHRASE_CLASSIFIER_NOTE,
            "phrase_classifier": measure_phrase_classifier().to_dict(),
        }
        for group in GROUPS:
            by_model = self.refusal.get(group, {})
            entry: dict[str, Any] = {
                "n": max((p.total for p in by_model.values()), default=0),
                "dataset": self.datasets.get(group, {"type": "", "name": ""}),
            }
            entry.update({model: _named(p, "refusals") for model, p in by_model.items()})
            phrases, harm = self.phrase_refusal.get(group), self.harmful_response.get(group)
            entry["phrases"] = {model: _named(p, "refusals") for model, p in phrases.items()} if phrases else None
            entry["harmful_response"] = {model: _named(p, "harmful") for model, p in harm.items()} if harm else None
            judged = self.judged_refusal.get(group)
            entry["judge"] = {model: _named(p, "refusals") for model, p in judged.items()} if judged else None
            if group == "harmful" and self.evasive:
                entry["evasive"] = {model: _named(p, "refusals") for model, p in self.evasive.items()}
            refusal[group] = entry
        settings = self.settings
        results = {
            "format": RESULTS_FORMAT,
            "constitution_sha256": self.constitution_sha256,
            "models": dict(self.models),
            "evaluated_artifact": self.evaluated_artifact,
            "loading": dict(self.loading),
            "eval_sets": list(self.eval_sets),
            "judge_quality": self.judge_quality,
            "refusal": refusal,
            "safety_classifier": self.safety_classifier,
            "win_rates": {
                "helpfulness": {
                    **_named(self.helpfulness_win_rate, "wins"),
                    "prompts": "benign",
                    "constitution": settings.get("helpfulness_constitution", "helpful-honest"),
                },
                "harmlessness": {
                    **_named(self.harmlessness_win_rate, "wins"),
                    "prompts": "harmful",
                    "constitution": self.constitution_name or "the run's constitution",
                },
            },
            "reply_quality": dict(self.reply_quality),
            "principles": list(self.principles),
            "multiple_choice": {name: self._multiple_choice_row(name) for name in self.feedback_accuracy},
            "benchmarks": self.benchmarks,
            "overlap": dict(self.overlap),
            "settings": dict(settings),
            "samples": list(self.samples),
            "metrics": self.metrics(),
        }
        results["notes"] = verdict_lines(results)
        return _finite(results)

    def __str__(self) -> str:
        """Every figure with its interval and, beside it, the caveats that apply (a judge no better than chance, models
        loaded differently), then the verdict (:func:`~hf_cai.evaluation.verdict.report_lines`)."""
        return "\n".join(report_lines(self.to_dict()))

    @property
    def notes(self) -> list[str]:
        """:func:`verdict_lines` of this report: what its figures support, in a few sentences."""
        return verdict_lines(self.to_dict())

    def save(self, output_dir: str | Path) -> Path:
        """Write ``results.json`` and ``chart.png`` (refusal rates and win rates with 95% intervals) into
        ``output_dir``; returns the path of ``results.json``. Without matplotlib (the ``chart`` extra) the chart is
        left out, with a warning saying how to install it."""
        from hf_cai.evaluation.chart import INSTALL_HINT, chart_available, plot_results

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        results = self.to_dict()
        path = output_dir / "results.json"
        path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if chart_available():
            plot_results(results, output_dir / "chart.png")
        else:
            logger.warning("chart.png not drawn: matplotlib is not installed (%s)", INSTALL_HINT)
        return path

    def plot(self, path: str | Path) -> Path:
        """Draw the chart of :meth:`save` into ``path``."""
        from hf_cai.evaluation.chart import plot_results

        return plot_results(self.to_dict(), path)


def _finite(value: Any) -> Any:
    """``value`` with NaN floats made ``None``, so ``results.json`` is strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


__all__ = ["EvaluationReport", "RESULTS_FORMAT", "rate_dict"]
