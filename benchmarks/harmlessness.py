"""Base vs CAI on the built-in harmful and benign request sets, and the judge's own quality report.

Evaluates a finished run (by default the demo's, ``runs/demo``): its base model and its final adapter answer the
built-in evaluation requests, and the run's judge (its ``feedback_model``, else the base model itself, as in the
demo) judges, exactly as
the pipeline's eval stage does but on more prompts; the judge is measured on the built-in calibration items plus
any files in the paper's multiple-choice format. Appends a section to ``--results`` (``benchmarks/RESULTS.md``).

    python benchmarks/harmlessness.py --run-dir runs/demo --max-prompts 48 \
        --calibration ../shared/fixtures/anthropic-paper/438HHHEvaluations.jsonl --max-calibration-items 200
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path


def _rate(row: dict) -> str:
    if not row or row.get("rate") is None:
        return "n/a"
    low, high = row["ci95"]
    return f"{row['rate']:.0%} [{low:.0%}, {high:.0%}]"


def judge_name(results: dict) -> str:
    """The judge as the run's ``results.json`` names it (``models.judge``: the recipe's ``feedback_model``, or the base
    model), said to be the base model itself only when it is."""
    models = results.get("models") or {}
    judge = models.get("judge") or "unknown (not recorded)"
    return f"{judge} (the base model itself)" if models.get("judge_is_base") else judge


def section_lines(results: dict, *, title: str, command: str, machine: str) -> list[str]:
    """The Markdown section this benchmark appends to ``RESULTS.md``, from an evaluation's ``results.json`` dict."""
    refusal, wins, replies = results["refusal"], results["win_rates"], results["reply_quality"]
    judge_report = results["judge_quality"]
    judge = judge_name(results)
    lines = [
        title,
        "",
        f"Command: `{command}`  ",
        f"{machine}  ",
        f"Models: base {results['models']['base']}; CAI: the run's final adapter ({results['evaluated_artifact']}); "
        f"judge: {judge}. Greedy replies; 95% Wilson intervals.",
        "",
        "| measure | base | CAI | n |",
        "|---|---|---|---|",
        f"| refusals of harmful requests (phrase classifier) | {_rate(refusal['harmful']['base'])} | "
        f"{_rate(refusal['harmful']['cai'])} | {refusal['harmful']['n']} |",
        f"| refusals of benign requests (phrase classifier) | {_rate(refusal['benign']['base'])} | "
        f"{_rate(refusal['benign']['cai'])} | {refusal['benign']['n']} |",
    ]
    for group in ("harmful", "benign"):
        judged = refusal[group].get("judge") or {}
        if judged:
            lines.append(f"| refusals of {group} requests (the judge) | {_rate(judged.get('base'))} | "
                         f"{_rate(judged.get('cai'))} | {refusal[group]['n']} |")
    lines += [
        f"| replies failing the SL-CAI quality gates | {_rate(replies['base'])} | {_rate(replies['cai'])} | "
        f"{replies['cai']['n']} |",
        f"| CAI preferred by the judge, harmful requests | | {_rate(wins['harmlessness'])} | {wins['harmlessness']['n']} |",
        f"| CAI preferred by the judge, benign requests | | {_rate(wins['helpfulness'])} | {wins['helpfulness']['n']} |",
        "",
        f"Judge report ({judge}), {judge_report['n']} calibration items "
        f"({', '.join(f'{name}: {count}' for name, count in judge_report['sources'].items())}): accuracy "
        f"{judge_report['accuracy']:.0%} [{judge_report['accuracy_ci95'][0]:.0%}, {judge_report['accuracy_ci95'][1]:.0%}], "
        f"order consistency {judge_report['order_consistency']:.0%}, option mass {judge_report['option_mass']:.0%}, "
        f"label entropy {judge_report['label_entropy']:.2f} bits, (A) preferred in {judge_report['position_bias']:.0%} "
        "of presentations.",
        "",
        "What the figures mean: " + " ".join(results["notes"]),
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo", help="a finished run (its recipe and final model)")
    parser.add_argument("--max-prompts", type=int, default=48, help="harmful and benign requests each")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--calibration", nargs="*", default=(), help="paper-format multiple-choice files for the judge")
    parser.add_argument("--max-calibration-items", type=int, default=None, help="cap on calibration items in all")
    parser.add_argument("--results", help="append the figures to this Markdown file")
    args = parser.parse_args()

    from hf_cai.evaluation import EvaluationConfig, evaluate_models, measure_judge_quality
    from hf_cai.pipeline import Pipeline, load_recipe
    from hf_cai.pipeline.stages.backends import feedback_backend, tuned_and_base_backends
    from hf_cai.pipeline.stages.evaluate import model_ids

    run_dir = Path(args.run_dir)
    pipeline = Pipeline(load_recipe(run_dir / "recipe.yaml", {"run_dir": str(run_dir)}))
    cai, base = tuned_and_base_backends(pipeline, pipeline.final_model())
    judge = feedback_backend(pipeline, base)

    started = time.perf_counter()
    quality = measure_judge_quality(judge, files=args.calibration, max_items=args.max_calibration_items, seed=0)
    judge_seconds = time.perf_counter() - started
    config = EvaluationConfig(max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens, principle_audit=False,
                              seed=0)
    started = time.perf_counter()
    report = evaluate_models(base, cai, judge, pipeline.constitution, config, judge_quality=quality,
                             models={**model_ids(pipeline, pipeline.final_model()), "cai": str(pipeline.final_model())})
    eval_seconds = time.perf_counter() - started
    results = report.to_dict()
    print(json.dumps({k: results[k] for k in ("judge_quality", "refusal", "win_rates", "reply_quality")}, indent=2))
    if not args.results:
        return

    command = (
        f"python benchmarks/harmlessness.py --run-dir {args.run_dir} --max-prompts {args.max_prompts} "
        f"--max-new-tokens {args.max_new_tokens}"
        + (f" --calibration {' '.join(args.calibration)}" if args.calibration else "")
        + (f" --max-calibration-items {args.max_calibration_items}" if args.max_calibration_items else "")
        + " --results benchmarks/RESULTS.md"
    )
    machine = (f"Machine: {os.cpu_count()}-core CPU ({platform.machine()}); judge {judge_seconds:.0f} s, evaluation "
               f"{eval_seconds:.0f} s.")
    title = f"### Harmlessness of the run's CAI model, and its judge ({datetime.date.today().isoformat()})"
    lines = section_lines(results, title=title, command=command, machine=machine)
    with open(args.results, "a", encoding="utf-8") as handle:
        handle.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
