"""The measurements of ``benchmarks/gpu.py``, as its worker processes run them.

A worker reads a list of measurement specs (JSON), runs each in turn in a fresh state (garbage collected, CUDA cache
emptied, peak-memory counters reset) and prints one ``RESULT {json}`` line per spec as soon as it is done; an exception
becomes an ``error`` record with its text, so one failure does not lose the others. The kinds of measurement:

* ``build``: a randomly initialised model of a real architecture (its configuration written here with the published
  sizes, no download) with the tiny ChatML tokenizer of :mod:`hf_cai.tiny`, saved in bfloat16;
* ``train``: a few QLoRA steps of SFT or DPO with a CAI trainer and a QLoRA profile, or with TRL + PEFT written the
  way TRL documents QLoRA (a 4-bit model and a ``peft_config``) with the same settings;
* ``generate``: greedy generation with ``TransformersBackend`` and with plain ``model.generate`` on the same loaded
  model, at several batch sizes;
* ``pipeline``: every stage of the CAI pipeline on the tiny model (``model: tiny``), both RL routes.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # The sizes of meta-llama/Llama-3.1-8B(-Instruct)'s config.json.
    "llama-3.1-8b": {
        "family": "llama",
        "config": dict(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
    },
    # The sizes of Qwen/Qwen2.5-1.5B(-Instruct)'s config.json (tied input and output embeddings, biased q/k/v).
    "qwen2.5-1.5b": {
        "family": "qwen2",
        "config": dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    },
}
"""The model geometries the GPU run measures, by name."""

DRY_RUN_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
"""The sizes ``--dry-run`` puts in place of the real ones (the vocabulary shrinks to the tokenizer's)."""

PROMPT_TOKENS = 64
"""Tokens of the user turn in training rows (before the reply that fills the sequence); at most a quarter of it."""


# ----------------------------------------------------------------------------------------------- shared helpers
def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def fresh_state() -> None:
    """Release what the last measurement left on the GPU and reset the peak-memory counters (nothing to do on a CPU,
    where no memory is measured)."""
    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory_figures() -> dict[str, float]:
    """Peak GPU memory since the last :func:`fresh_state`, in GiB (nothing on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_description() -> dict[str, Any]:
    """The device the worker computes on."""
    import torch

    if not torch.cuda.is_available():
        return {"device": f"{os.cpu_count()}-core CPU", "memory_gib": None}
    properties = torch.cuda.get_device_properties(0)
    return {
        "device": torch.cuda.get_device_name(0),
        "memory_gib": properties.total_memory / 2**30,
        "capability": f"{properties.major}.{properties.minor}",
        "cuda": torch.version.cuda,
    }


def random_text(tokenizer: Any, tokens: int, generator: random.Random) -> str:
    """Text decoded from ``tokens`` token ids drawn at random from the tokenizer's ordinary (non-special) tokens."""
    first = len(tokenizer.all_special_ids)
    return tokenizer.decode([generator.randrange(first, len(tokenizer)) for _ in range(tokens)])


def linear_weights(model: Any) -> int:
    """Weights of the model's linear layers, the output head included (the input embedding is a lookup, not a matrix
    product), counting a 4-bit weight by its original shape and leaving LoRA's own layers out: the N of 6N."""
    import torch

    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:
            weight = module.weight
            quant_state = getattr(weight, "quant_state", None)
            total += math.prod(quant_state.shape) if quant_state is not None else weight.numel()
    return total


# ----------------------------------------------------------------------------------------------- build
def build(spec: dict[str, Any]) -> dict[str, Any]:
    """Save a randomly initialised model of ``spec["architecture"]`` (bfloat16, initialised on the GPU when there is
    one) with the tiny ChatML tokenizer in ``spec["folder"]``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from hf_cai.tiny import build_tiny_tokenizer

    folder = Path(spec["folder"])
    architecture = ARCHITECTURES[spec["architecture"]]
    sizes = dict(architecture["config"])
    tokenizer = build_tiny_tokenizer(folder)
    if spec["dry_run"]:
        sizes |= DRY_RUN_SHAPE | {"vocab_size": len(tokenizer)}
    config_class, model_class = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[architecture["family"]]
    config = config_class(
        **sizes, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None
    )
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(str(folder))
    return {"parameters": sum(parameter.numel() for parameter in model.parameters())}


# ----------------------------------------------------------------------------------------------- train
def training_rows(tokenizer: Any, stage: str, count: int, seq_len: int) -> list[dict[str, Any]]:
    """Conversations of random tokens whose reply overfills ``seq_len`` (truncation makes every sequence full length;
    for DPO, prompt + each reply); DPO rows carry a soft label."""
    generator = random.Random(0)
    reply_tokens = seq_len + seq_len // 2

    def turn(role: str, tokens: int) -> dict[str, str]:
        return {"role": role, "content": random_text(tokenizer, tokens, generator)}

    rows = []
    for _ in range(count):
        prompt = [turn("user", min(PROMPT_TOKENS, seq_len // 4))]
        if stage == "sft":
            rows.append({"messages": [*prompt, turn("assistant", reply_tokens)]})
        else:
            rows.append(
                {
                    "prompt": prompt,
                    "chosen": [turn("assistant", reply_tokens)],
                    "rejected": [turn("assistant", reply_tokens)],
                    "chosen_prob": 0.8,
                }
            )
    return rows


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """A few optimizer steps of one (implementation, stage, profile, settings) configuration; speed over the steps
    after the warm-up, peak memory over the whole run (loading included)."""
    from datasets import Dataset
    from transformers import TrainerCallback

    from hf_cai.modeling import load_tokenizer
    from hf_cai.trainers.qlora import get_profile

    profile = get_profile(spec["profile"])
    stage, implementation = spec["stage"], spec["implementation"]
    overrides = {
        "output_dir": spec["output_dir"],
        "max_steps": spec["warmup"] + spec["steps"],
        "max_length": spec["seq_len"],
        "gradient_accumulation_steps": spec["accumulation"],
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "seed": 0,
        **spec.get("lever", {}),
    }
    if stage == "sft":
        overrides["assistant_only_loss"] = True
    tokenizer = load_tokenizer(spec["model"])
    batch_size = profile.training_arguments(stage)["per_device_train_batch_size"]
    rows = training_rows(tokenizer, stage, batch_size * spec["accumulation"] * overrides["max_steps"], spec["seq_len"])
    dataset = Dataset.from_list(rows)
    clock: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            clock.append(time.perf_counter())

    fresh_state()
    trainer = _trainer(implementation, stage, spec["model"], profile, overrides, dataset, tokenizer)
    trainer.add_callback(StepClock())
    trainer.train()
    tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
    warmup = spec["warmup"]
    timed_tokens = tokens[-1] - tokens[warmup - 1]
    sequences = spec["steps"] * trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    if stage == "dpo":
        sequences *= 2  # a chosen and a rejected sequence per pair
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    embeddings = base.get_input_embeddings().weight
    return {
        "tokens_per_s": timed_tokens / (clock[-1] - clock[warmup - 1]),
        "tokens_per_sequence": timed_tokens / sequences,
        "linear_weights": linear_weights(base),
        "embedding_dtype": str(embeddings.dtype).removeprefix("torch."),
        "trainer_settings": {name: getattr(trainer.args, name, None) for name in COMPARED_SETTINGS},
        **memory_figures(),
    }


COMPARED_SETTINGS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "optim",
    "learning_rate",
    "max_length",
    "bf16",
    "padding_free",
    "use_liger_kernel",
    "activation_offloading",
)
"""Training settings recorded for every run, so a CAI run and its TRL baseline can be checked to match."""


def _trainer(implementation: str, stage: str, model_dir: str, profile: Any, overrides: dict, dataset: Any, tokenizer):
    """The CAI trainer given the model's folder and the profile (the user's path), or TRL's given a 4-bit model and
    the profile's LoRA adapter, with the profile's settings written out."""
    if implementation == "cai":
        from hf_cai.trainers import CAIDPOConfig, CAIDPOTrainer, CAISFTConfig, CAISFTTrainer

        config_class, trainer_class = (CAISFTConfig, CAISFTTrainer) if stage == "sft" else (CAIDPOConfig, CAIDPOTrainer)
        config = config_class(qlora_profile=profile.name, **overrides)
        return trainer_class(model=model_dir, args=config, train_dataset=dataset, processing_class=tokenizer)

    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from hf_cai.modeling import bnb_4bit_config, compute_dtype
    from hf_cai.trainers.qlora import peft_config_for, process_device_map

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=bnb_4bit_config(), dtype=compute_dtype(), device_map=process_device_map()
    )
    settings = profile.training_arguments(stage) | overrides
    if not on_cuda():
        settings["use_cpu"] = True  # TrainingArguments refuses bf16 without a GPU otherwise (dry runs on CPU)
    config_class, trainer_class = (SFTConfig, SFTTrainer) if stage == "sft" else (DPOConfig, DPOTrainer)
    return trainer_class(
        model=model,
        args=config_class(**settings),
        train_dataset=dataset.remove_columns([name for name in dataset.column_names if name == "chosen_prob"]),
        processing_class=tokenizer,
        peft_config=peft_config_for(profile),
    )


# ----------------------------------------------------------------------------------------------- generate
def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Greedy tokens/s of ``TransformersBackend`` and of plain ``model.generate`` on the same loaded model, per batch
    size: one warm-up call each, then ``repeats`` timed calls each, alternating; medians."""
    import torch

    from hf_cai.backends import TransformersBackend

    fresh_state()
    started = time.perf_counter()
    backend = TransformersBackend(
        spec["model"], load_in_4bit=spec["load_in_4bit"], dtype=torch.bfloat16, batch_size=max(spec["batch_sizes"])
    )
    load_seconds = time.perf_counter() - started
    model, tokenizer = backend.model, backend.tokenizer
    generator = random.Random(0)
    new_tokens = spec["new_tokens"]

    def plain(conversations: list, tokens: int) -> int:
        inputs = tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
        return len(conversations) * (output.shape[1] - inputs["input_ids"].shape[1])

    ended_early = 0

    def with_backend(conversations: list, tokens: int) -> int:
        nonlocal ended_early
        generations = backend.generate_detailed(conversations, max_new_tokens=tokens, temperature=0.0)
        ended_early += sum(generation.finish_reason != "length" for generation in generations)
        return len(conversations) * tokens

    def tokens_per_s(run, conversations: list, tokens: int) -> float:
        synchronize()
        start = time.perf_counter()
        count = run(conversations, tokens)
        synchronize()
        return count / (time.perf_counter() - start)

    batches = []
    for batch_size in spec["batch_sizes"]:
        conversations = [
            [{"role": "user", "content": random_text(tokenizer, spec["prompt_tokens"], generator)}]
            for _ in range(batch_size)
        ]
        for run in (plain, with_backend):
            run(conversations, min(8, new_tokens))
        ended_early = 0
        speeds: dict[str, list[float]] = {"plain": [], "backend": []}
        for _ in range(spec["repeats"]):
            speeds["plain"].append(tokens_per_s(plain, conversations, new_tokens))
            speeds["backend"].append(tokens_per_s(with_backend, conversations, new_tokens))
        batches.append(
            {
                "batch_size": batch_size,
                "plain_tokens_per_s": statistics.median(speeds["plain"]),
                "backend_tokens_per_s": statistics.median(speeds["backend"]),
                "backend_rows_ended_early": ended_early,
            }
        )
    return {"load_seconds": load_seconds, "batches": batches, **memory_figures()}


# ----------------------------------------------------------------------------------------------- pipeline
def pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """Both routes of the pipeline in one run folder: the DPO route to the local publication, then the GRPO route's
    own stages (``reward``, ``grpo``; the shared stages are reused, their fingerprints being the same). Per stage:
    ``done``, ``failed`` with the error, or ``not run`` after a failure."""
    from hf_cai.pipeline import Pipeline, load_recipe

    run_dir = Path(spec["run_dir"])
    stages: list[dict[str, Any]] = []
    for route, until in (("dpo", None), ("grpo", "grpo")):
        error, sequence = None, []
        try:
            recipe = load_recipe(overrides=spec["recipe"] | {"rl_method": route, "run_dir": str(run_dir)})
            sequence = recipe.stage_sequence()
            sequence = sequence[: sequence.index(until) + 1] if until else sequence
            Pipeline(recipe).run(until=until)
        except Exception as failure:  # noqa: BLE001 - recorded per stage, the other route still runs
            error = f"{type(failure).__name__}: {failure}"[:1500]
        manifest = run_dir / "manifest.json"
        recorded = json.loads(manifest.read_text(encoding="utf-8"))["stages"] if manifest.is_file() else {}
        reported = {row["stage"] for row in stages}
        rows = []
        for stage in sequence:
            status = recorded.get(stage, {}).get("status")
            if stage in reported:
                continue
            if status == "done":
                rows.append(
                    {"route": route, "stage": stage, "status": "done", "seconds": recorded[stage].get("seconds")}
                )
            elif status == "running" and error is not None:
                rows.append({"route": route, "stage": stage, "status": "failed", "error": error})
            else:
                rows.append({"route": route, "stage": stage, "status": "not run"})
        if error is not None and not any(recorded.get(stage, {}).get("status") == "running" for stage in sequence):
            rows.insert(0, {"route": route, "stage": "(before the stages)", "status": "failed", "error": error})
        stages += rows
    failures = [row for row in stages if row["status"] != "done"]
    if failures:
        raise PipelineStagesFailed(stages)
    return {"stages": stages}


class PipelineStagesFailed(RuntimeError):
    """Some pipeline stages failed; carries every stage's row for the report."""

    def __init__(self, stages: list[dict[str, Any]]):
        failed = [f"{row['stage']}: {row.get('error', row['status'])}" for row in stages if row["status"] != "done"]
        super().__init__("; ".join(failed))
        self.stages = stages


# ----------------------------------------------------------------------------------------------- the worker
MEASUREMENTS = {"build": build, "train": train, "generate": generate, "pipeline": pipeline}


def run_worker(spec_file: str) -> None:
    """Run every spec of ``spec_file`` in turn, printing one ``RESULT`` line each."""
    specs = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    for spec in specs:
        started = time.perf_counter()
        try:
            record: dict[str, Any] = {"status": "ok", **MEASUREMENTS[spec["kind"]](spec)}
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the report
            record = {
                "status": "error",
                "error": f"{type(error).__name__}: {error}"[:1500],
                "traceback": traceback.format_exc()[-4000:],
                **memory_figures(),
            }
            if isinstance(error, PipelineStagesFailed):
                record["stages"] = error.stages
        record |= {"id": spec["id"], "seconds": time.perf_counter() - started, **device_description()}
        print("RESULT " + json.dumps(record), flush=True)
        fresh_state()
