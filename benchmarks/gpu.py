"""The consumer-GPU promises of hf_cai, measured in one run of at most eight minutes on one CUDA GPU, offline.

Models are random-initialised at the published sizes of Llama-3.1-8B and Qwen2.5-1.5B (configurations written in
code, the tiny ChatML tokenizer of ``hf_cai.tiny``, random token ids): nothing is downloaded. Measured, in this order
of priority (what the time budget leaves out is listed as skipped, with the reason):

* QLoRA SFT at sequence length 2048 with ``CAISFTTrainer`` under the ``8gb`` profile against TRL's ``SFTTrainer`` +
  PEFT with the same settings: peak GPU memory (allocated and reserved), tokens/s, MFU;
* soft-label DPO (``CAIDPOTrainer``, a ``chosen_prob`` column) against TRL's ``DPOTrainer``;
* every stage of the pipeline on the GPU (``model: tiny``, both RL routes), pass or fail per stage;
* generation with ``TransformersBackend`` against plain ``model.generate``, weights in NF4 and in bfloat16, at
  batch 1, 16 and 64;
* memory levers against the profile's settings: TRL's ``use_liger_kernel`` (when ``liger_kernel`` is installed),
  ``activation_offloading``, and ``gradient_checkpointing`` off;
* the same for Qwen2.5-1.5B, then the other QLoRA profiles (``12gb``, ``16gb``, ``24gb``) at 2048 tokens.

Each measurement runs in its own process (fresh CUDA state, its own peak memory) and records its error instead of
stopping the run. The results go to ``--out`` as ``results.md`` (also printed) and ``results.json``.

Usage::

    python benchmarks/gpu.py --out gpu-results                 # on a CUDA GPU, about 8 minutes
    python benchmarks/gpu.py --out gpu-results --only 'sft/*'  # a subset (shell-style patterns on the ids)
    python benchmarks/gpu.py --dry-run --out /tmp/gpu-dry-run  # on CPU: every code path at tiny sizes, in seconds

See ``benchmarks/README.md`` for what must be installed on the GPU machine and how to record the figures.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import importlib.metadata
import importlib.util
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_report import write_report
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

logger = logging.getLogger("benchmarks.gpu")

GPU_PROFILES = ("8gb", "12gb", "16gb", "24gb")
"""The QLoRA profiles sized for a GPU card, in the order they are measured."""

GENERATION_BATCH_SIZES = (1, 16, 64)
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "liger-kernel")


# ----------------------------------------------------------------------------------------------- the plan
def plan(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every measurement of the run, in order of priority, each with its estimated seconds on an H100; the model
    builds come right before the first measurement that needs them."""
    dry = args.dry_run
    training = {"seq_len": args.seq_len, "warmup": 1, "steps": args.steps, "accumulation": args.accumulation}
    specs: list[dict[str, Any]] = []

    def add(section: str, kind: str, name: str, estimate: float, **fields: Any) -> None:
        # A dry run's tiny measurements take a second or two each.
        specs.append({"id": f"{section}/{name}", "section": section, "kind": kind, "estimate": 2.0 if dry else estimate})
        specs[-1].update(fields)

    def model(architecture: str) -> str:
        folder = str(work / architecture)
        if not any(spec["id"] == f"setup/{architecture}" for spec in specs):
            size = 60 if "8b" in architecture else 15
            add("setup", "build", architecture, size, architecture=architecture, folder=folder, dry_run=dry)
        return folder

    def train(section: str, architecture: str, profile: str, implementation: str, estimate: float, **extra: Any):
        name = "/".join([architecture, profile, implementation, *sorted(extra.get("lever", {}))])
        stage = "dpo" if section == "dpo" else "sft"
        output_dir = str(work / "out" / name.replace("/", "-"))
        add(section, "train", name, estimate, stage=stage, implementation=implementation, profile=profile,
            architecture=architecture, model=model(architecture), output_dir=output_dir, **training, **extra)

    def generation(architecture: str, weights: str, estimate: float) -> None:
        add("generation", "generate", f"{architecture}/{weights}", estimate, architecture=architecture,
            model=model(architecture), load_in_4bit=weights == "nf4", repeats=1,
            batch_sizes=[1, 2] if dry else list(GENERATION_BATCH_SIZES), prompt_tokens=16 if dry else 128,
            new_tokens=4 if dry else 64)

    big, small = "llama-3.1-8b", "qwen2.5-1.5b"
    train("sft", big, "8gb", "cai", 45)
    train("sft", big, "8gb", "trl", 40)
    train("dpo", big, "8gb", "cai", 55)
    train("dpo", big, "8gb", "trl", 50)
    pipeline_dir = work / "pipeline"
    add("pipeline", "pipeline", "tiny", 60, run_dir=str(pipeline_dir), recipe=pipeline_recipe(dry, pipeline_dir))
    generation(big, "nf4", 60)
    generation(big, "bf16", 50)
    liger = None if importlib.util.find_spec("liger_kernel") else "liger_kernel is not installed"
    train("levers", big, "8gb", "cai", 45, lever={"use_liger_kernel": True}, unavailable=liger)
    offloading = "TRL's activation offloading needs a GPU" if dry else None
    train("levers", big, "8gb", "cai", 50, lever={"activation_offloading": True}, unavailable=offloading)
    train("levers", big, "8gb", "cai", 40, lever={"gradient_checkpointing": False})
    train("sft", small, "8gb", "cai", 25)
    train("sft", small, "8gb", "trl", 25)
    generation(small, "nf4", 30)
    generation(small, "bf16", 25)
    for profile in GPU_PROFILES[1:]:
        train("sft", big, profile, "cai", 45)
        train("sft", big, profile, "trl", 40)
    if args.only:
        wanted = {spec["id"] for spec in specs if any(fnmatch.fnmatch(spec["id"], p) for p in args.only)}
        needed = {f"setup/{spec['architecture']}" for spec in specs if spec["id"] in wanted and "architecture" in spec}
        specs = [spec for spec in specs if spec["id"] in wanted | needed]
    return specs


def pipeline_recipe(dry: bool, run_dir: Path) -> dict[str, Any]:
    """A small pipeline recipe on the tiny model with every stage (the GRPO route's are added by the worker)."""
    steps = 1 if dry else 2
    tokens = 6 if dry else 16
    one = {"gradient_accumulation_steps": 1}
    return {
        "model": "tiny",
        "tiny_pretrain_steps": 0,
        "constitution": "harmless",
        "prompts": "builtin:red_team",
        "helpful_prompts": None,
        "max_prompts": 4 if dry else 8,
        "qlora_profile": "8gb",
        "seed": 0,
        "sl_data": {"rounds": 1, "max_new_tokens": tokens, "few_shot": False, "test_size": 0.25},
        # Replies cut at a few tokens are all flagged; this run checks that each stage works, not the data.
        "sl_quality": {"exclude_flagged": False},
        "sft": {"max_steps": 2 * steps, "per_device_train_batch_size": 2, **one},
        "pref_data": {"max_new_tokens": tokens, "few_shot": False, "test_size": 0.25},
        "judge_check": {"max_items": 4 if dry else 8},
        "dpo": {"max_steps": steps, "per_device_train_batch_size": 2, **one},
        "reward": {"max_steps": steps, "per_device_train_batch_size": 2, **one},
        "grpo": {
            "max_steps": steps,
            "per_device_train_batch_size": 4,
            "num_generations": 4,
            "max_completion_length": 8,
        },
        "eval": {"max_prompts": 2 if dry else 4, "max_new_tokens": tokens, "principle_audit": not dry},
        "publish": {"folder": str(run_dir / "publication")},
    }


# ----------------------------------------------------------------------------------------------- running it
def run_workers(
    specs: list[dict[str, Any]], args: argparse.Namespace, work: Path, started: float, save: Callable[[dict], None]
) -> dict[str, dict]:
    """Run the specs in worker processes (one each on a GPU; all in one with ``--dry-run``) within the time budget,
    calling ``save`` with the results so far after each worker; a measurement the budget cannot fit, or whose model
    could not be built, is recorded as skipped."""
    results: dict[str, dict[str, Any]] = {}
    pending = list(specs)
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.dry_run:
        # Tiny sizes gain nothing from more threads, and on a busy CPU idle OpenMP threads spin-wait between the
        # many small operations, which made a dry run several times slower.
        environment["OMP_NUM_THREADS"] = "1"
    progress = tqdm(total=len(specs), desc="measurements", unit="run", file=sys.stderr)
    while pending:
        group, committed = [], 0.0
        while pending and (args.dry_run or not group):
            spec = pending.pop(0)
            build = results.get(f"setup/{spec.get('architecture')}")
            remaining = args.budget - (time.monotonic() - started) - committed
            if spec.get("unavailable"):
                results[spec["id"]] = {"status": "not run", "note": spec["unavailable"]}
            elif spec["kind"] != "build" and build is not None and build["status"] != "ok":
                reason = "was skipped" if build["status"] == "skipped" else "failed"
                results[spec["id"]] = {"status": "skipped", "note": f"building {spec['architecture']} {reason}"}
            elif spec["estimate"] > remaining:
                results[spec["id"]] = {
                    "status": "skipped",
                    "note": f"{max(remaining, 0):.0f} s of the {args.budget:.0f} s budget left, "
                    f"about {spec['estimate']:.0f} s needed",
                }
            else:
                group.append(spec)
                committed += spec["estimate"]
                continue
            progress.update(1)
        if not group:
            continue
        remaining = args.budget - (time.monotonic() - started)
        limit = remaining if args.dry_run else min(remaining, max(3 * group[0]["estimate"], 90))
        outcome, failure = run_worker(group, limit, work, environment)
        for spec in group:
            if spec["id"] in outcome:
                results[spec["id"]] = outcome[spec["id"]]
                progress.update(1)
                logger.info("%s: %s", spec["id"], summary(outcome[spec["id"]]))
        missing = [spec for spec in group if spec["id"] not in outcome]
        if missing:
            results[missing[0]["id"]] = {"status": "error", "error": failure}
            progress.update(1)
            logger.info("%s: %s", missing[0]["id"], failure.splitlines()[0])
            pending = missing[1:] + pending
        save(results)
    progress.close()
    return results


def run_worker(group: list[dict], limit: float, work: Path, environment: dict) -> tuple[dict[str, dict], str]:
    """Run a worker on ``group``; its results by id, and what went wrong when some are missing."""
    spec_file = work / "specs.json"
    spec_file.write_text(json.dumps(group), encoding="utf-8")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=max(limit, 1), env=environment, check=False
        )
        stdout, failure = completed.stdout, f"the worker stopped (exit code {completed.returncode})"
        stderr = completed.stderr
    except subprocess.TimeoutExpired as timeout:
        stdout, stderr = _text(timeout.stdout), _text(timeout.stderr)
        failure = f"timed out after {limit:.0f} s (time budget)"
    outcome = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            record = json.loads(line[len("RESULT ") :])
            outcome[record["id"]] = record
    return outcome, f"{failure}; the end of its output:\n{stderr[-1500:]}"


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def summary(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"{record['status']}: {record.get('error') or record.get('note')}"[:300]
    parts = [f"{record['seconds']:.0f} s"]
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:.0f} tokens/s")
    if record.get("peak_allocated_gib") is not None:
        parts.append(f"peak {record['peak_allocated_gib']:.2f} GiB allocated")
    return ", ".join(parts)


def versions() -> dict[str, str | None]:
    found = {}
    for library in LIBRARIES:
        try:
            found[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            found[library] = None
    return found


# ----------------------------------------------------------------------------------------------- main
def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for results.md and results.json (created)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, one worker: checks every code path")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; dry 300)")
    parser.add_argument("--only", action="append", default=[], help="run only the ids matching this pattern")
    parser.add_argument("--seq-len", type=int, default=None, help="training sequence length (default 2048; dry 64)")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps after one warm-up (default 2)")
    parser.add_argument("--accumulation", type=int, default=None, help="micro-batches per step (default 2; dry 1)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--work-dir", default=None, help="where models are built (default: a temporary folder)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is None and not args.out:
        parser.error("--out is required")
    if args.budget is None:
        args.budget = 300.0 if args.dry_run else 450.0
    args.seq_len = args.seq_len or (64 if args.dry_run else 2048)
    args.steps = args.steps or (1 if args.dry_run else 2)
    args.accumulation = args.accumulation or (1 if args.dry_run else 2)
    return args


def main() -> None:
    args = parse_arguments()
    if args.worker:
        from gpu_measure import run_worker as measure

        measure(args.worker)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run on a GPU, or use --dry-run to check the script on CPU")
    run = {
        "date": datetime.date.today().isoformat(),
        "command": "python " + shlex.join(["benchmarks/gpu.py", *sys.argv[1:]]),
        "dry_run": args.dry_run,
        "budget_s": args.budget,
        "settings": {"seq_len": args.seq_len, "steps": args.steps, "warmup": 1, "accumulation": args.accumulation},
        "peak_tflops": args.peak_tflops,
        "versions": versions(),
    }
    with tempfile.TemporaryDirectory(prefix="hf-cai-gpu-") as scratch:
        work = Path(args.work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        specs = plan(args, work)

        def save(results: dict[str, dict]) -> str:
            """Write the report so far: a run cut short still leaves the figures it measured."""
            return write_report(Path(args.out), run | {"elapsed_s": time.monotonic() - started}, specs, results)

        with logging_redirect_tqdm():
            results = run_workers(specs, args, work, started, save)
        print(save(results))


if __name__ == "__main__":
    main()
