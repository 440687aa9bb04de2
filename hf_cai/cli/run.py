"""``hf-cai run``, ``hf-cai demo`` and ``hf-cai eval``: the pipeline and the evaluation from the command line."""

from __future__ import annotations

import argparse
import logging
import re
from importlib import resources
from typing import Any

import yaml

from hf_cai.cli import CommandError, refuse_command_line_secrets

logger = logging.getLogger(__name__)


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--section.key=value`` pairs into recipe overrides (values parsed as YAML scalars).

    Tokens are refused here (see :func:`~hf_cai.cli.refuse_command_line_secrets`).
    """
    refuse_command_line_secrets(tokens)
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or len(token) == 2:
            raise CommandError(f"unexpected argument '{token}'; recipe overrides look like --max_prompts 8 or --sft.max_steps=4")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if index + 1 >= len(tokens) or tokens[index + 1].startswith("--"):
                raise CommandError(f"override '{token}' needs a value: {token} VALUE or {token}=VALUE")
            index += 1
            value = tokens[index]
        overrides[key.replace("-", "_")] = _parse_value(value)
        index += 1
    return overrides


_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _parse_value(text: str) -> Any:
    """A YAML scalar, reading ``1e-4`` as a number (YAML 1.1 would keep it a string)."""
    if _EXPONENT_FLOAT.match(text):
        return float(text)
    return yaml.safe_load(text)


def _run_recipe(recipe, args: argparse.Namespace) -> int:
    from hf_cai.pipeline import Pipeline, format_summary

    pipeline = Pipeline(recipe)
    results = pipeline.run(from_stage=args.from_stage, until=args.until)
    print(format_summary(pipeline, results))
    return 0


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    from hf_cai.pipeline import load_recipe

    recipe_path = args.config or args.recipe
    if recipe_path is None:
        raise CommandError("give a recipe: hf-cai run --config recipe.yaml (see examples/recipes/)")
    return _run_recipe(load_recipe(recipe_path, parse_overrides(extra)), args)


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    from hf_cai.demo import demo_report
    from hf_cai.pipeline import Pipeline, load_recipe

    overrides = parse_overrides(extra)
    overrides.setdefault("run_dir", args.run_dir)
    if args.model:
        overrides["model"] = args.model
        overrides.setdefault("load_in_4bit", False)
    recipe_file = resources.files("hf_cai") / "recipes" / "demo.yaml"
    with resources.as_file(recipe_file) as path:
        recipe = load_recipe(path, overrides)
    recipe.publish = {**recipe.publish, "folder": f"{recipe.run_dir}/publish/hub-repo"}
    status = _run_recipe(recipe, args)
    print(f"\n{demo_report(Pipeline(recipe))}")
    return status


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from hf_cai.backends import TransformersBackend
    from hf_cai.constitution import Constitution
    from hf_cai.evaluation import (
        EvaluationConfig,
        backend_option_scorer,
        evaluate_models,
        load_multiple_choice,
        multiple_choice_scores,
    )
    from hf_cai.evaluation.benchmarks import run_benchmarks

    if extra:
        raise CommandError(f"unexpected arguments: {' '.join(extra)}")
    benchmarks = _benchmark_config(args)
    if args.benchmarks_only:
        return _print_benchmarks(args, benchmarks)
    feedback = TransformersBackend(args.feedback or args.base, load_in_4bit=args.load_in_4bit)
    if args.model is None:
        if not args.multiple_choice:
            raise CommandError("give --model to compare with the base, or --multiple-choice FILE to rate the judge")
        for file_name in args.multiple_choice:
            scores = multiple_choice_scores(load_multiple_choice(file_name), backend_option_scorer(feedback))
            print(f"{file_name}: accuracy {scores.accuracy} (both option orders); same reply in both orders "
                  f"{scores.order_consistency}")
        return 0
    config = EvaluationConfig(
        max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens,
        multiple_choice_files=args.multiple_choice or (), benchmarks=benchmarks,
    )
    base = TransformersBackend(args.base, load_in_4bit=args.load_in_4bit)
    cai = TransformersBackend(args.model, load_in_4bit=args.load_in_4bit)
    report = evaluate_models(base, cai, feedback, Constitution.resolve(args.constitution), config)
    del base, cai, feedback  # the benchmarks load their own copies
    if benchmarks.enabled:
        report.benchmarks = run_benchmarks(args.base, args.model, benchmarks, load_in_4bit=args.load_in_4bit,
                                           seed=config.seed)
    path = report.save(args.output_dir)
    for metric in report.metrics():
        low, high = metric["ci95"]
        print(f"{metric['name']:<44} {metric['value']:.1%}  [{low:.1%}, {high:.1%}]  n={metric['n']}")
    _print_benchmark_lines(report.benchmarks)
    print(f"results: {path}")
    return 0


def _benchmark_config(args: argparse.Namespace):
    """The ``--benchmarks`` settings, checked (lm-eval installed, tasks known) before any model is loaded."""
    from hf_cai.evaluation.benchmarks import BenchmarkConfig, task_manager

    tasks = [task for value in args.benchmarks or () for task in value.split(",")]
    config = BenchmarkConfig(tasks=tasks, limit=args.benchmark_limit, num_fewshot=args.num_fewshot,
                             batch_size=_batch_size(args.benchmark_batch_size), include_path=args.include_path,
                             apply_chat_template=args.apply_chat_template)
    if not config.enabled:
        if args.benchmarks_only or args.include_path:
            raise CommandError("name the lm-eval tasks to run: --benchmarks TASK[,TASK]")
        return config
    if args.model is None:
        raise CommandError("--benchmarks compares the CAI model with its base: give --model")
    try:
        task_manager(config)
    except ImportError as error:
        raise CommandError(str(error)) from error
    return config


def _batch_size(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _print_benchmarks(args: argparse.Namespace, config) -> int:
    """``--benchmarks-only``: the benchmarks alone, written to ``benchmarks.json`` in ``--output-dir``."""
    import json
    from pathlib import Path

    from hf_cai.evaluation.benchmarks import run_benchmarks

    table = run_benchmarks(args.base, args.model, config, load_in_4bit=args.load_in_4bit)
    path = Path(args.output_dir) / "benchmarks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _print_benchmark_lines(table)
    print(f"results: {path}")
    return 0


def _print_benchmark_lines(table) -> None:
    from hf_cai.evaluation.benchmarks import benchmark_lines

    if table:
        models = table["models"]
        print(f"{table['harness']} {table['lm_eval_version']}: base {models['base']['pretrained']}, CAI "
              f"{models['cai']['peft'] or models['cai']['pretrained']}")
        for line in benchmark_lines(table):
            print(f"  {line}")


def _add_stage_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_stage", help="start at this stage (it runs again even if finished)")
    parser.add_argument("--until", help="stop after this stage")


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a CAI recipe: sl_data → sft → pref_data → dpo|reward+grpo → eval → card → publish → space",
        description="Extra --key value pairs override recipe fields, e.g. --max_prompts 8 --sft.max_steps 4.",
    )
    run.add_argument("recipe", nargs="?", help="recipe YAML (same as --config)")
    run.add_argument("--config", help="recipe YAML")
    _add_stage_selection(run)
    run.set_defaults(handler=_run, accepts_overrides=True)

    demo = subparsers.add_parser(
        "demo",
        help="the whole pipeline offline on SmolLM2-135M-Instruct (or --model tiny|HUB_ID)",
        description="Run the built-in demo recipe end to end (SL-CAI data, SFT, AI feedback, DPO, evaluation, model "
        "card, a local publication folder) offline on SmolLM2-135M-Instruct, then print what changed. Extra --key "
        "value pairs override recipe fields, e.g. --max_prompts 4.",
    )
    demo.add_argument("--run-dir", default="runs/demo", help="where the run is written")
    demo.add_argument("--model", help="'tiny' for the tiny test model, or a Hub id (needs the internet) or .gguf file")
    _add_stage_selection(demo)
    demo.set_defaults(handler=_demo, accepts_overrides=True)

    evaluate = subparsers.add_parser(
        "eval",
        help="compare a CAI model with its base, or rate a feedback model",
        description="With --model: the base and the CAI model answer held-out red-team and helpful prompts and the "
        "feedback model judges the replies (harmlessness and helpfulness win rates, with 95% intervals); "
        "results.json and chart.png go to --output-dir. Without --model: the accuracy of the feedback model on the "
        "--multiple-choice files. With --benchmarks: both models also run those lm-evaluation-harness tasks, printed "
        "with standard errors and the difference (results.json's 'benchmarks').",
    )
    evaluate.add_argument("--base", required=True, help="base model: Hub id or local folder")
    evaluate.add_argument("--model", help="CAI model: merged folder/id or adapter folder/id")
    evaluate.add_argument("--feedback", help="feedback (judge) model (default: the base model)")
    evaluate.add_argument("--constitution", default="harmless", help="built-in name or constitution file")
    evaluate.add_argument(
        "--multiple-choice", action="append", help="file in the paper's multiple-choice format (repeatable)"
    )
    evaluate.add_argument("--max-prompts", type=int, default=32, help="number of held-out prompts to evaluate on")
    evaluate.add_argument("--max-new-tokens", type=int, default=128, help="length limit of each generated reply")
    evaluate.add_argument("--load-in-4bit", action="store_true", help="load the models quantized to 4 bits (QLoRA)")
    evaluate.add_argument("--output-dir", default="eval-results", help="folder for results.json and chart.png")
    benchmarks = evaluate.add_argument_group(
        "standard benchmarks", "lm-evaluation-harness tasks run for both models (pip install 'hf-cai[eval]')"
    )
    benchmarks.add_argument("--benchmarks", action="append", metavar="TASK[,TASK]",
                            help="lm-eval tasks, e.g. truthfulqa_mc2,bbq,arc_easy, or local tasks of --include-path")
    benchmarks.add_argument("--include-path", action="append", metavar="DIR",
                            help="folder of local lm-eval task files (repeatable)")
    benchmarks.add_argument("--benchmark-limit", type=int, metavar="N",
                            help="items per task, drawn at random, the same for both models (default: all)")
    benchmarks.add_argument("--num-fewshot", type=int, metavar="K", help="solved examples before each item "
                            "(default: each task's own)")
    benchmarks.add_argument("--benchmark-batch-size", default="8", metavar="N|auto", help="items per forward pass")
    benchmarks.add_argument("--apply-chat-template", action="store_true",
                            help="put each item in the model's chat template (off: comparable with most published "
                            "lm-eval figures)")
    benchmarks.add_argument("--benchmarks-only", action="store_true",
                            help="run only the benchmarks (no judged comparison); writes benchmarks.json")
    evaluate.set_defaults(handler=_eval, accepts_overrides=True)
