"""Generation throughput, each figure a ratio against a baseline measured in the same run (machines differ; ratios
travel).

``--measure builders`` (on ``--model``, by default the tiny offline model built in a temporary folder):

1. ``CritiqueRevisionBuilder`` (batched across prompts, length-sorted, left-padded) vs a naive loop that calls
   ``model.generate`` one prompt and one step at a time: prompts/s of an SL-CAI build.
2. The same build through ``EndpointBackend`` against an OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py,
   which batches concurrent requests like vLLM or TGI), with ``max_concurrency`` requests in flight vs one at a time.

``--measure backend`` (on ``--backend-model``, by default the embedded SmolLM2-135M-Instruct):

3. ``TransformersBackend.generate`` vs a plain ``model.generate`` on the same loaded model, the same left-padded batch
   of red-team prompts and the same sampling settings (no top-k), greedy and sampled: tokens/s, the overhead of the
   backend's per-row seeded sampling, stop handling and finish reasons.
4. Plain ``model.generate`` in float32 vs in ``compute_dtype()`` (bfloat16 where the hardware runs it fast): why
   models load in that dtype by default.

Runs of each pair alternate, so load from other processes falls on both sides alike. Tokens count every row at every
decoding step (finished rows included, as ``generate`` computes them); tokens per CPU-second are the steadier figure
on a shared machine.

Usage: ``python benchmarks/generation.py [--measure builders backend] [--results benchmarks/RESULTS.md] ...``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from hf_cai.backends import EndpointBackend, TransformersBackend
from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig, builtin_prompts, load_prompts
from hf_cai.constitution import Constitution
from hf_cai.modeling import compute_dtype, load_causal_lm, load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from openai_server import OpenAIServer  # noqa: E402


def naive_loop(backend: TransformersBackend, constitution: Constitution, prompts, config: CritiqueRevisionConfig) -> None:
    """What one writes without batching: every prompt, every step, its own ``generate`` call."""
    model, tokenizer = backend.model, backend.tokenizer

    def reply(chat):
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=config.max_new_tokens,
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    for index, chat in enumerate(prompts):
        current = reply(chat)
        for principle in constitution.sample(config.rounds, seed=index):
            replied = [*chat, {"role": "assistant", "content": current}]
            critique = reply(constitution.critique_messages(replied, principle, few_shot=config.few_shot))
            current = reply(constitution.revision_messages(replied, principle, critique, few_shot=config.few_shot))


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


class StepCounter:
    """Counts a model's forward passes, to turn a ``generate`` call into tokens computed: every row of the batch at
    the prefill and at each decoding step."""

    def __init__(self, model):
        self.rows = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is not None:
            self.rows += input_ids.shape[0]


def measure(function, counter: StepCounter) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process, and tokens computed by one call of ``function``."""
    counter.rows = 0
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu, counter.rows


def compare(baseline, candidate, counters, repeats: int) -> dict:
    """Alternate ``baseline`` and ``candidate`` (which goes first flips each repeat); medians of both and of the
    per-pair ratios of tokens per CPU-second."""
    runs: dict[str, list[tuple[float, float, int]]] = {"baseline": [], "candidate": []}
    for repeat in range(repeats):
        order = [("baseline", baseline), ("candidate", candidate)]
        for name, function in order if repeat % 2 == 0 else order[::-1]:
            runs[name].append(measure(function, counters[name]))

    def summary(name):
        return {
            "wall": statistics.median(tokens / wall for wall, _, tokens in runs[name]),
            "cpu": statistics.median(tokens / cpu for _, cpu, tokens in runs[name]),
        }

    ratios = [(c_tok / c_cpu) / (b_tok / b_cpu) for (_, b_cpu, b_tok), (_, c_cpu, c_tok) in zip(*runs.values())]
    return {
        "baseline": summary("baseline"),
        "candidate": summary("candidate"),
        "ratio": statistics.median(ratios),
        "range": (min(ratios), max(ratios)),
    }


def backend_vs_generate(args) -> str:
    """Measurements 3 and 4 (see the module docstring) as a Markdown section."""
    dtype = compute_dtype()
    model = load_causal_lm(args.backend_model, dtype=dtype)
    tokenizer = load_tokenizer(args.backend_model)
    backend = TransformersBackend(model, tokenizer, batch_size=args.batch_size)
    chats = [[{"role": "user", "content": p}] for p in builtin_prompts("red_team")["prompt"][: args.batch_size]]
    texts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in chats]
    inputs = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False).to(model.device)
    width = inputs["input_ids"].shape[1]
    counter = StepCounter(model)

    def plain(on_model, temperature: float, top_p: float, seed: int = 0) -> list[str]:
        settings = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0} if temperature else {}
        torch.manual_seed(seed)
        with torch.inference_mode():
            output = on_model.generate(
                **inputs, max_new_tokens=args.new_tokens, pad_token_id=tokenizer.pad_token_id, **settings
            )
        return tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)

    settings = [
        ("greedy", 0.0, 1.0),
        ("sampled, temperature 0.7", 0.7, 1.0),
        ("sampled, temperature 0.7, top_p 0.9", 0.7, 0.9),
    ]
    rows = []
    for name, temperature, top_p in settings:
        sampling = {"temperature": temperature, "top_p": top_p}
        plain(model, **sampling)  # warm-up
        result = compare(
            partial(plain, model, **sampling),
            partial(backend.generate, chats, max_new_tokens=args.new_tokens, seed=0, **sampling),
            {"baseline": counter, "candidate": counter},
            args.repeats,
        )
        rows.append((f"{name}: plain `model.generate` vs `TransformersBackend`", result))
    same = plain(model, 0.0, 1.0) == backend.generate(chats, max_new_tokens=args.new_tokens, temperature=0.0)

    float32 = load_causal_lm(args.backend_model, dtype=torch.float32)
    float32_counter = StepCounter(float32)
    low = dtype if dtype != torch.float32 else torch.bfloat16
    low_model = model if low == dtype else load_causal_lm(args.backend_model, dtype=low)
    low_counter = counter if low_model is model else StepCounter(low_model)
    result = compare(
        partial(plain, float32, 0.0, 1.0),
        partial(plain, low_model, 0.0, 1.0),
        {"baseline": float32_counter, "candidate": low_counter},
        args.repeats,
    )
    rows.append((f"greedy: plain `model.generate` in float32 vs in {str(low).removeprefix('torch.')}", result))

    lines = [
        "| measurement | baseline tok/s | candidate tok/s | baseline tok/CPU-s | candidate tok/CPU-s | "
        "candidate/baseline (tok/CPU-s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['baseline']['wall']:.0f} | {r['candidate']['wall']:.0f} | {r['baseline']['cpu']:.0f} | "
            f"{r['candidate']['cpu']:.0f} | {r['ratio']:.3f} ({r['range'][0]:.3f}-{r['range'][1]:.3f}) |"
        )
    return (
        f"### TransformersBackend vs plain generate ({datetime.date.today().isoformat()})\n\n"
        f"Command: `{_command()}`  \nMachine: {_machine()}  \n"
        f"Model: {args.backend_model} in {str(dtype).removeprefix('torch.')} (`compute_dtype()`); one batch of "
        f"{len(chats)} red-team prompts, {args.new_tokens} new tokens, medians of {args.repeats} alternating runs "
        f"each; greedy replies identical to plain `generate`: {'yes' if same else 'NO'}.\n\n" + "\n".join(lines) + "\n"
    )


def builders_vs_naive(args) -> str:
    """Measurements 1 and 2 (see the module docstring) as a Markdown section."""
    constitution = Constitution.builtin("harmless")
    prompts = load_prompts(list(builtin_prompts("red_team")["prompt"][: args.prompts]))
    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            from hf_cai.tiny import build_tiny_chat_model

            model = str(build_tiny_chat_model(Path(folder) / "tiny"))
        backend = TransformersBackend(model, batch_size=args.batch_size)
        rows = []
        for few_shot in (False, True):
            config = CritiqueRevisionConfig(
                rounds=args.rounds, max_new_tokens=args.max_new_tokens, few_shot=few_shot, shard_size=64, test_size=0
            )
            builder = CritiqueRevisionBuilder(backend, constitution, config)
            builder.build(prompts[:2])  # warm-up
            batched = timed(builder.build, prompts)
            naive = timed(naive_loop, backend, constitution, prompts, config)
            rows.append((f"SL-CAI build, few_shot={few_shot}", "naive loop", naive, "batched builder", batched))

        config = CritiqueRevisionConfig(
            rounds=args.rounds, max_new_tokens=args.max_new_tokens, few_shot=False, shard_size=64, test_size=0
        )
        with OpenAIServer(backend, model_name="bench", max_batch=args.batch_size) as server:
            sequential = EndpointBackend(server.base_url, "bench", max_concurrency=1)
            concurrent = EndpointBackend(server.base_url, "bench", max_concurrency=args.concurrency)
            CritiqueRevisionBuilder(concurrent, constitution, config).build(prompts[:2])  # warm-up
            one = timed(CritiqueRevisionBuilder(sequential, constitution, config).build, prompts)
            many = timed(CritiqueRevisionBuilder(concurrent, constitution, config).build, prompts)
        rows.append(("SL-CAI build via EndpointBackend", "1 request in flight", one, f"{args.concurrency} in flight", many))

    count = len(prompts)
    lines = [
        "| measurement | baseline | prompts/s | optimised | prompts/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, base_name, base_time, fast_name, fast_time in rows:
        lines.append(
            f"| {name} | {base_name} | {count / base_time:.2f} | {fast_name} | {count / fast_time:.2f} | "
            f"{base_time / fast_time:.1f}x |"
        )
    header = (
        f"### Generation throughput ({datetime.date.today().isoformat()})\n\n"
        f"Command: `{_command()}`  \nMachine: {_machine()}  \n"
        f"Model: {args.model or 'tiny offline model (hf_cai.tiny)'}; {count} red-team prompts, {args.rounds} rounds, "
        f"max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}.\n"
    )
    return header + "\n" + "\n".join(lines) + "\n"


def _command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in ["benchmarks/generation.py", *sys.argv[1:]])


def _machine() -> str:
    return (
        f"{os.cpu_count()}-core CPU ({platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op "
        f"thread(s), load average {os.getloadavg()[0]:.1f} at the end)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", nargs="+", choices=("builders", "backend"), default=["builders", "backend"])
    parser.add_argument("--prompts", type=int, default=32, help="red-team prompts per builder measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="per builder generation")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model", default=None, help="builders' model folder or id (default: the tiny offline model)")
    parser.add_argument("--backend-model", default="smollm2-135m-instruct", help="model of the backend measurement")
    parser.add_argument("--new-tokens", type=int, default=128, help="per reply in the backend measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side, backend measurement")
    parser.add_argument("--results", default=None, help="append a Markdown section with the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    sections = []
    if "builders" in args.measure:
        sections.append(builders_vs_naive(args))
    if "backend" in args.measure:
        sections.append(backend_vs_generate(args))
    for report in sections:
        print(report)
        if args.results:
            with open(args.results, "a", encoding="utf-8") as handle:
                handle.write("\n" + report)


if __name__ == "__main__":
    main()
