"""Training cost of the CAI trainers vs plain TRL + PEFT with the same settings, measured in one run.

Four runs, each in a fresh process so that peak memory is its own: ``CAISFTTrainer`` and ``CAIDPOTrainer`` (QLoRA
profile, soft labels for DPO) and TRL's ``SFTTrainer`` / ``DPOTrainer`` on the same 4-bit model with the same LoRA
adapter and training settings. Reported per run: tokens/s (non-padding tokens of the timed steps, after warm-up),
peak memory, and MFU on a GPU; then the ratios the project tracks:

* CAI overhead vs TRL on identical settings (target: tokens/s within 3%),
* DPO peak memory / SFT peak memory with the profile (target <= 1.25: no second model, half the pairs per step).

Peak memory is ``torch.cuda.max_memory_allocated`` on a GPU. On CPU it is the process's resident memory sampled
during loading and training, minus what it held before the model was loaded (so Python and library code are left
out). On CPU, speed ratios use tokens per CPU-second of the run (one intra-op thread), which other processes on a
shared machine disturb far less than wall time.

Usage::

    python benchmarks/training.py [--model-config tiny|small|llama-8b] [--seq-len 256] [--steps 8] [--profile cpu]
                                  [--repeats 1] [--results benchmarks/RESULTS.md]

``--model-config llama-8b --seq-len 2048`` builds a randomly initialised Llama-3-8B-shaped model (bf16, ~16 GB on
disk, kept in ``--work-dir`` for reuse) for the GPU figures; the default profile there is ``8gb``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MODEL_SHAPES: dict[str, dict[str, int]] = {
    "small": dict(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}
"""Random-init Llama shapes besides hf_cai.tiny's default; ``vocab_size`` absent means the tiny tokenizer's size."""

PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "L4": 121.0,
    "4090": 165.0,
}
"""Dense bf16 peak of common GPUs, for MFU when ``--peak-tflops`` is not given."""

RUNS = (("cai", "sft"), ("trl", "sft"), ("cai", "dpo"), ("trl", "dpo"))


# ----------------------------------------------------------------------------------------------- model and data
def build_model(shape: str, folder: Path) -> Path:
    """The benchmark model in ``folder`` (built once): the tiny tokenizer with a random-init Llama of ``shape``."""
    if (folder / "config.json").is_file():
        return folder
    from hf_cai.tiny import TinyModelConfig, build_tiny_chat_model, build_tiny_tokenizer

    if shape == "tiny":
        return build_tiny_chat_model(folder)
    dims = dict(MODEL_SHAPES[shape])
    vocab_size = dims.pop("vocab_size", None)
    if vocab_size is None:
        return build_tiny_chat_model(folder, TinyModelConfig(**dims))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        **dims,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(str(folder), max_shard_size="5GB")
    return folder


def synthetic_rows(tokenizer: Any, stage: str, count: int, seq_len: int) -> list[dict]:
    """Conversations whose prompt + reply fill about ``seq_len`` tokens (for DPO: prompt + each reply)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "scripts"))
    from synthetic_cai import COMPLIANCE, REFUSAL, red_team_prompts

    prompts = red_team_prompts()

    def reply(seed_text: str, prompt: str) -> str:
        budget = seq_len - len(tokenizer(prompt)["input_ids"]) - 8
        words, text = seed_text.split(), ""
        while len(tokenizer(text)["input_ids"]) < budget:
            text += " " + " ".join(words)
        return tokenizer.decode(tokenizer(text.strip())["input_ids"][:budget])

    rows = []
    for index in range(count):
        prompt = prompts[index % len(prompts)]
        user = [{"role": "user", "content": prompt}]
        if stage == "sft":
            rows.append({"messages": [*user, {"role": "assistant", "content": reply(REFUSAL, prompt)}]})
        else:
            rows.append(
                {
                    "prompt": user,
                    "chosen": [{"role": "assistant", "content": reply(REFUSAL, prompt)}],
                    "rejected": [{"role": "assistant", "content": reply(COMPLIANCE, prompt)}],
                    "chosen_prob": 0.8,
                }
            )
    return rows


# ----------------------------------------------------------------------------------------------- one measured run
class MemorySampler:
    """Peak resident memory of this process, sampled every few milliseconds from a background thread."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one (implementation, stage) configuration and return its figures."""
    import psutil
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers.qlora import get_profile

    profile = get_profile(spec["profile"])
    stage, implementation = spec["stage"], spec["implementation"]
    settings = profile.training_arguments(stage) | dict(
        output_dir=spec["output_dir"],
        max_steps=spec["warmup"] + spec["steps"],
        max_length=spec["seq_len"],
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    if spec.get("batch_size"):
        settings["per_device_train_batch_size"] = spec["batch_size"]
    if stage == "sft":
        settings["assistant_only_loss"] = True
    tokenizer = load_tokenizer(spec["model"])
    pairs_or_rows = settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"]
    dataset = Dataset.from_list(
        synthetic_rows(tokenizer, stage, pairs_or_rows * settings["max_steps"], spec["seq_len"])
    )

    step_times: list[tuple[float, float]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_times.append((time.perf_counter(), time.process_time()))

    on_cuda = torch.cuda.is_available()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = psutil.Process().memory_info().rss
    with MemorySampler() as sampler:
        trainer = _trainer(implementation, stage, spec["model"], profile, settings, dataset, tokenizer)
        trainer.add_callback(StepClock())
        trainer.train()
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    warmup = spec["warmup"]
    wall = step_times[-1][0] - step_times[warmup - 1][0]
    cpu = step_times[-1][1] - step_times[warmup - 1][1]
    timed_tokens = tokens[-1] - tokens[warmup - 1]
    # A 4-bit parameter stores two weights per byte; its quant_state keeps the original shape.
    parameters = sum(
        math.prod(p.quant_state.shape) if getattr(p, "quant_state", None) is not None else p.numel()
        for p in trainer.model.get_base_model().parameters()
    )
    return {
        "implementation": implementation,
        "stage": stage,
        "tokens_per_s": timed_tokens / wall,
        "tokens_per_cpu_s": timed_tokens / cpu,
        "peak_mb": (torch.cuda.max_memory_allocated() if on_cuda else sampler.peak - baseline) / 2**20,
        "device": torch.cuda.get_device_name(0) if on_cuda else f"{os.cpu_count()}-core CPU",
        "base_parameters": parameters,
        "settings": {k: settings[k] for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "optim")},
    }


def _trainer(implementation, stage, model_dir, profile, settings, dataset, tokenizer):
    """The CAI trainer with the profile, or TRL's with the same 4-bit model, adapter and settings, written plainly."""
    if implementation == "cai":
        from hf_cai.trainers import CAIDPOConfig, CAIDPOTrainer, CAISFTConfig, CAISFTTrainer

        config_class, trainer_class = (CAISFTConfig, CAISFTTrainer) if stage == "sft" else (CAIDPOConfig, CAIDPOTrainer)
        config = config_class(qlora_profile=profile.name, **settings)
        return trainer_class(model=model_dir, args=config, train_dataset=dataset, processing_class=tokenizer)

    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from hf_cai.modeling import bnb_4bit_config, compute_dtype
    from hf_cai.trainers.qlora import peft_config_for, process_device_map

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=bnb_4bit_config(), dtype=compute_dtype(), device_map=process_device_map()
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.gradient_checkpointing)
    config_class, trainer_class = (SFTConfig, SFTTrainer) if stage == "sft" else (DPOConfig, DPOTrainer)
    return trainer_class(
        model=model,
        args=config_class(**settings),
        train_dataset=dataset.remove_columns([c for c in dataset.column_names if c == "chosen_prob"]),
        processing_class=tokenizer,
        peft_config=peft_config_for(profile),
    )


# ----------------------------------------------------------------------------------------------- the report
def mfu(result: dict[str, Any], peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation with the usual 6 x parameters FLOPs per trained token."""
    device = result["device"]
    peak = peak_tflops or next((value for name, value in PEAK_BF16_TFLOPS.items() if name in device), None)
    if peak is None or "CPU" in device:
        return None
    return 6 * result["base_parameters"] * result["tokens_per_s"] / (peak * 1e12)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def values(implementation: str, stage: str, key: str) -> list[float]:
        return [r[key] for r in results if r["implementation"] == implementation and r["stage"] == stage]

    def median(implementation: str, stage: str, key: str) -> float:
        return statistics.median(values(implementation, stage, key))

    def cell(implementation: str, stage: str, key: str) -> str:
        """The median, with the range over repeats when there are several."""
        numbers = values(implementation, stage, key)
        spread = f" ({min(numbers):.0f}-{max(numbers):.0f})" if len(numbers) > 1 else ""
        return f"{statistics.median(numbers):.0f}{spread}"

    device = results[0]["device"]
    on_cpu = "CPU" in device
    # On a shared CPU, wall time swings with other processes; CPU time spent by the run itself is the stable measure.
    speed = "tokens_per_cpu_s" if on_cpu else "tokens_per_s"
    lines = ["| run | tokens/s (wall) | tokens per CPU-second | peak memory (MiB) | MFU |", "|---|---|---|---|---|"]
    for implementation, stage in RUNS:
        sample = next(r for r in results if r["implementation"] == implementation and r["stage"] == stage)
        utilisation = mfu(sample | {"tokens_per_s": median(implementation, stage, "tokens_per_s")}, args.peak_tflops)
        name = {"cai": "CAI", "trl": "TRL + PEFT"}[implementation] + f" {stage.upper()}"
        lines.append(
            f"| {name} | {cell(implementation, stage, 'tokens_per_s')} | {cell(implementation, stage, 'tokens_per_cpu_s')} "
            f"| {cell(implementation, stage, 'peak_mb')} | {'-' if utilisation is None else f'{utilisation:.1%}'} |"
        )
    unit = "tokens per CPU-second" if on_cpu else "tokens/s"
    ratios = [
        (f"CAI / TRL {unit}, SFT", median("cai", "sft", speed) / median("trl", "sft", speed)),
        (f"CAI / TRL {unit}, DPO (CAI with soft labels)", median("cai", "dpo", speed) / median("trl", "dpo", speed)),
        ("CAI / TRL peak memory, SFT", median("cai", "sft", "peak_mb") / median("trl", "sft", "peak_mb")),
        ("CAI / TRL peak memory, DPO", median("cai", "dpo", "peak_mb") / median("trl", "dpo", "peak_mb")),
        ("CAI DPO / CAI SFT peak memory", median("cai", "dpo", "peak_mb") / median("cai", "sft", "peak_mb")),
    ]
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {name} | {value:.3f} |" for name, value in ratios]
    settings = {stage: next(r["settings"] for r in results if r["stage"] == stage) for stage in ("sft", "dpo")}
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/training.py", *sys.argv[1:]])
    memory = "peak RSS above the pre-load baseline" if on_cpu else "torch.cuda.max_memory_allocated"
    if on_cpu:
        memory += "; one intra-op thread per run"
    header = (
        f"### Training: CAI trainers vs TRL + PEFT ({datetime.date.today().isoformat()})\n\n"
        f"Command: `{command}`  \nMachine: {device} ({platform.machine()}, load average {os.getloadavg()[0]:.1f} at "
        f"the end)  \nModel: random-init `{args.model_config}` ({results[0]['base_parameters'] / 1e6:.1f}M parameters), "
        f"4-bit NF4 + LoRA from profile `{args.profile}`, sequence length {args.seq_len}, {args.steps} timed steps after "
        f"{args.warmup} warm-up, median (range) of {args.repeats} interleaved run(s) each; SFT {settings['sft']}, "
        f"DPO {settings['dpo']}. Memory: {memory}.\n"
    )
    return header + "\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="small", choices=["tiny", *MODEL_SHAPES])
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (DPO: prompt + one reply)")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--profile", default=None, help="QLoRA profile; default cpu without a GPU, else 8gb")
    parser.add_argument("--batch-size", type=int, default=None, help="override the profile's SFT per-device batch")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration, interleaved; medians reported")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by GPU name)")
    parser.add_argument("--work-dir", default=None, help="where the model is built and kept (default: a temp folder)")
    parser.add_argument("--results", default=None, help="append a Markdown section with the figures to this file")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: one measurement, as JSON
    args = parser.parse_args()
    if args.run:
        print("RESULT " + json.dumps(measure(json.loads(args.run))), flush=True)
        return

    import torch

    args.profile = args.profile or ("8gb" if torch.cuda.is_available() else "cpu")
    # On CPU, one intra-op thread per run: idle threads spin-waiting on a busy machine would count as CPU time.
    child_environment = os.environ if torch.cuda.is_available() else os.environ | {"OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work_dir or scratch)
        model_dir = build_model(args.model_config, work / f"model-{args.model_config}")
        results = []
        for repeat in range(args.repeats):
            for implementation, stage in RUNS:
                spec = dict(
                    implementation=implementation,
                    stage=stage,
                    model=str(model_dir),
                    profile=args.profile,
                    seq_len=args.seq_len,
                    steps=args.steps,
                    warmup=args.warmup,
                    batch_size=args.batch_size,
                    output_dir=str(Path(scratch) / f"{implementation}-{stage}-{repeat}"),
                )
                completed = subprocess.run(
                    [sys.executable, __file__, "--run", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=child_environment,
                )
                lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
                if completed.returncode != 0 or not lines:
                    raise SystemExit(f"{implementation} {stage} failed:\n{completed.stderr[-4000:]}")
                results.append(json.loads(lines[-1][len("RESULT ") :]))
                print(
                    f"{implementation} {stage}: {results[-1]['tokens_per_s']:.0f} tokens/s, "
                    f"{results[-1]['tokens_per_cpu_s']:.0f} tokens per CPU-second, {results[-1]['peak_mb']:.0f} MiB",
                    file=sys.stderr,
                )
    text = report(results, args)
    print(text)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
