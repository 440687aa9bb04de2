"""Generation throughput: batched builders vs a naive loop, and endpoint concurrency vs sequential requests.

Measured in one run on the same model and prompts, reported as ratios (machines differ; ratios travel):

1. ``CritiqueRevisionBuilder`` (batched across prompts, length-sorted, left-padded) vs a naive loop that calls
   ``model.generate`` one prompt and one step at a time: prompts/s of an SL-CAI build.
2. The same build through ``EndpointBackend`` against an OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py,
   which batches concurrent requests like vLLM or TGI), with ``max_concurrency`` requests in flight vs one at a time.

Usage: ``python benchmarks/generation.py [--prompts 32] [--model PATH] [--results benchmarks/RESULTS.md]``. Without
``--model`` the tiny offline model is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_cai.backends import EndpointBackend, TransformersBackend
from hf_cai.builders import CritiqueRevisionBuilder, CritiqueRevisionConfig, builtin_prompts, load_prompts
from hf_cai.constitution import Constitution

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32, help="red-team prompts per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--model", default=None, help="model folder or id (default: the tiny offline model)")
    parser.add_argument("--results", default=None, help="append a Markdown section with the figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/generation.py", *sys.argv[1:]])
    header = (
        f"### Generation throughput ({datetime.date.today().isoformat()})\n\n"
        f"Command: `{command}`  \nMachine: 2-core CPU ({platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), load average {os.getloadavg()[0]:.1f} at the end)  \n"
        f"Model: {args.model or 'tiny offline model (hf_cai.tiny)'}; {count} red-team prompts, {args.rounds} rounds, "
        f"max_new_tokens={args.max_new_tokens}, batch_size={args.batch_size}.\n"
    )
    report = header + "\n" + "\n".join(lines) + "\n"
    print(report)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n" + report)


if __name__ == "__main__":
    main()
