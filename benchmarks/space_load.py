"""The side-by-side Space under load: visitors chatting at once, measured from their side with ``gradio_client``.

The Space is served on 127.0.0.1 in a process of its own, configured as ``hf-cai chat --run-dir RUN`` configures it
(``--run-dir``), or, without one, on the embedded SmolLM2-135M-Instruct with a quick random LoRA adapter (every linear
layer, as the training profiles adapt). Each of ``--visitors`` visitors has a script of ``--turns`` red-team prompts,
each sent with its own seed, and holds its own session (its conversation grows turn by turn). Two scenarios:

1. **alone**: each visitor's script runs with nobody else on the Space, one visitor after another;
2. **together**: all visitors start at the same moment.

For each: errors, replies complete (both panels answered, nothing failed), the replies that are identical to the same
visitor's replies alone (the same seeds: batching must not change them), p50/p95 time to the first token and to the
full reply of a turn, and the peak resident memory of the Space process (``VmHWM``). The figure the target is about is
p95(together) / p95(alone) of the full reply. With ``--serial-baseline`` the together scenario runs again on a Space
whose batches hold one visitor (``max_batch_size`` 2: the two panels), which is how the Space answered before it
batched visitors.

Usage: ``python benchmarks/space_load.py [--run-dir RUN] [--results benchmarks/RESULTS.md] ...`` (Linux: memory is
read from ``/proc``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from argparse import Namespace
from pathlib import Path

PENDING = "…"


@dataclasses.dataclass
class Turn:
    """One prompt of one visitor, as the visitor saw it."""

    visitor: int
    index: int
    first_token: float | None = None
    full_reply: float | None = None
    replies: tuple[str, ...] = ()
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and len(self.replies) == 2 and all(r and r != PENDING for r in self.replies)


def _text(message: dict) -> str:
    content = message["content"]
    return (content if isinstance(content, str) else "".join(part.get("text", "") for part in content)).strip()


def _last_replies(output) -> tuple[str, ...]:
    """The last assistant message of both panels in a /chat output (empty while a panel has none yet)."""
    return tuple(_text(h[-1]) if h and h[-1]["role"] == "assistant" else "" for h in output[:2])


def visit(url: str, visitor: int, prompts: list[str], args, start: threading.Barrier | None = None) -> list[Turn]:
    """One visitor's session: each prompt in turn, timing the first streamed token and the full reply."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    if start is not None:
        start.wait()
    turns = []
    for index, prompt in enumerate(prompts):
        turn = Turn(visitor, index)
        began = time.perf_counter()
        try:
            job = client.submit(prompt, args.max_new_tokens, args.temperature, seed(visitor, index), api_name="/chat")
            while not job.done():
                outputs = job.outputs()
                if turn.first_token is None and outputs and any(
                    r and r != PENDING for r in _last_replies(outputs[-1])
                ):
                    turn.first_token = time.perf_counter() - began
                time.sleep(0.02)
            result = job.result()
            turn.full_reply = time.perf_counter() - began
            turn.first_token = turn.first_token or turn.full_reply
            turn.replies = _last_replies(result)
            if result[2]:
                turn.error = f"notice: {result[2]}"
        except Exception as error:  # counted and reported, the other visitors go on
            turn.error = f"{type(error).__name__}: {error}"
        turns.append(turn)
    return turns


def seed(visitor: int, index: int) -> int:
    return 1000 * visitor + index


def together(url: str, scripts: list[list[str]], args) -> list[Turn]:
    """All visitors at once; each thread is one visitor's browser."""
    results: dict[int, list[Turn]] = {}
    start = threading.Barrier(len(scripts))
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, visit(url, i, scripts[i], args, start)))
        for i in range(len(scripts))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [turn for i in sorted(results) for turn in results[i]]


# --------------------------------------------------------------------------- the Space process
class Space:
    """The Space served by a child process (``--serve``) on a free loopback port."""

    def __init__(self, config_file: Path, log: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        command = [sys.executable, __file__, "--serve", str(config_file), "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        deadline = time.monotonic() + 600
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Space exited while starting; its log: {log}")
            try:
                urllib.request.urlopen(self.url + "config", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Space did not start within 10 minutes; its log: {log}") from None
                time.sleep(0.5)
        self.idle_memory = self.memory("VmRSS")

    def memory(self, field: str = "VmHWM") -> float:
        """Resident memory of the Space process in MiB: now (``VmRSS``) or its peak so far (``VmHWM``)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")

    def cpu_seconds(self) -> float:
        """CPU time the Space process has used so far (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[int, int]:
        """Stop the Space; returns how many batches of each size it decoded."""
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=60)
        lines = [line for line in output.splitlines() if line.startswith("{")]
        return {int(size): count for size, count in json.loads(lines[-1]).items()} if lines else {}


def serve(config_file: str, port: int) -> None:
    """The child process: load the models once, serve the Space, and print the batch sizes when terminated."""
    from hf_cai.hub.space_config import load_space_config
    from hf_cai.spaces.app import create_app
    from hf_cai.spaces.models import SideBySideModels

    config = load_space_config(config_file, environ={})
    models = SideBySideModels.from_config(config)

    def report(*_):
        sizes: dict[int, int] = {}
        for batcher in models.batchers:
            for size, count in batcher.batch_sizes.items():
                sizes[size] = sizes.get(size, 0) + count
        print(json.dumps(sizes), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)
    create_app(config, models=models).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    while True:
        signal.pause()


# --------------------------------------------------------------------------- set-up and report
def space_config(args, folder: Path):
    """What ``hf-cai chat --run-dir`` serves, or SmolLM2 with a quick adapter; with the benchmark's reply length."""
    from hf_cai.cli.space import chat_config

    model = None
    if args.run_dir is None:
        model = str(quick_adapter(folder / "adapter"))
    options = Namespace(run_dir=args.run_dir, model=model, base=None, constitution=None,
                        max_new_tokens=args.max_new_tokens, temperature=args.temperature, max_prompt_chars=2000,
                        load_in_4bit=False)
    return chat_config(options)


def quick_adapter(folder: Path) -> Path:
    """A LoRA adapter on every linear layer of SmolLM2-135M-Instruct with random, non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from hf_cai.constitution import Constitution
    from hf_cai.gguf import resolve_model
    from hf_cai.modeling import load_causal_lm

    model = get_peft_model(
        load_causal_lm(resolve_model("smollm2-135m-instruct")),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.01)
    model.save_pretrained(str(folder))
    Constitution.builtin("harmless").save(folder / "constitution.yaml")
    return folder


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summary(name: str, turns: list[Turn], peak: float, alone: list[Turn] | None = None) -> tuple[str, dict]:
    done = [t for t in turns if t.full_reply is not None and t.error is None]
    first = [t.first_token for t in done]
    full = [t.full_reply for t in done]
    figures = {
        "errors": sum(t.error is not None for t in turns),
        "complete": sum(t.complete for t in turns),
        "p50_first": percentile(first, 50) if first else float("nan"),
        "p95_first": percentile(first, 95) if first else float("nan"),
        "p50_full": percentile(full, 50) if full else float("nan"),
        "p95_full": percentile(full, 95) if full else float("nan"),
    }
    same = "-"
    if alone is not None:
        reference = {(t.visitor, t.index): t.replies for t in alone}
        same = f"{sum(t.replies == reference.get((t.visitor, t.index)) for t in turns)}/{len(turns)}"
    row = (
        f"| {name} | {len(turns)} | {figures['errors']} | {figures['complete']}/{len(turns)} | {same} | "
        f"{figures['p50_first']:.2f} | {figures['p95_first']:.2f} | {figures['p50_full']:.2f} | "
        f"{figures['p95_full']:.2f} | {peak:.0f} |"
    )
    return row, figures


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _sizes(sizes: dict[int, int]) -> str:
    return ", ".join(f"{count}×{size}" for size, count in sorted(sizes.items(), reverse=True)) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a run of `hf-cai run`/`hf-cai demo` (default: SmolLM2 + a quick adapter)")
    parser.add_argument("--visitors", type=int, default=10)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--serial-baseline", action="store_true", help="also run the visitors together on a Space "
                        "whose batches hold one visitor (as before batching)")
    parser.add_argument("--results", help="append a Markdown section with the figures to this file")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    from hf_cai.builders import builtin_prompts

    pool = list(builtin_prompts("red_team")["prompt"])
    scripts = [[pool[(v * args.turns + t) % len(pool)] for t in range(args.turns)] for v in range(args.visitors)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = space_config(args, folder)
        config.save(folder / "space_config.json")
        space = Space(folder / "space_config.json", folder / "space.log")
        try:
            visit(space.url, args.visitors, ["Hello!"], args)  # warm-up, not counted
            alone = [turn for v, script in enumerate(scripts) for turn in visit(space.url, v, script, args)]
            peak_alone = space.memory()
            started, space_cpu, client_cpu = time.perf_counter(), space.cpu_seconds(), _own_cpu_seconds()
            crowd = together(space.url, scripts, args)
            crowd_seconds = time.perf_counter() - started
            space_cpu, client_cpu = space.cpu_seconds() - space_cpu, _own_cpu_seconds() - client_cpu
            peak_crowd = space.memory()
            idle = space.idle_memory
        finally:
            sizes = space.stop()
        rows = [summary("alone, one visitor after another", alone, peak_alone),
                summary(f"{args.visitors} together", crowd, peak_crowd, alone)]
        serial_note = ""
        if args.serial_baseline:
            serial_config = dataclasses.replace(config, max_batch_size=2)
            serial_config.save(folder / "serial_config.json")
            space = Space(folder / "serial_config.json", folder / "serial.log")
            try:
                visit(space.url, args.visitors, ["Hello!"], args)
                serial = together(space.url, scripts, args)
                peak_serial = space.memory()
            finally:
                space.stop()
            rows.append(summary(f"{args.visitors} together, one visitor per batch (before batching)", serial,
                                peak_serial, alone))
            serial_note = (f" Before batching (one visitor per batch): p95(together)/p95(alone) = "
                           f"{rows[2][1]['p95_full'] / rows[0][1]['p95_full']:.2f}.")

    ratio = rows[1][1]["p95_full"] / rows[0][1]["p95_full"]
    first_ratio = rows[1][1]["p95_first"] / rows[0][1]["p95_first"]
    import torch

    from hf_cai.modeling import DTYPE_VARIABLE, compute_dtype

    setting = f"{DTYPE_VARIABLE}={os.environ[DTYPE_VARIABLE]} " if os.environ.get(DTYPE_VARIABLE) else ""
    model = f"run `{args.run_dir}` (as `hf-cai chat --run-dir` serves it)" if args.run_dir else (
        "embedded SmolLM2-135M-Instruct + a quick random LoRA adapter (all linear layers, r=8)")
    report = (
        f"### Space under load ({datetime.date.today().isoformat()})\n\n"
        f"Command: `{setting}{'python ' + ' '.join(shlex.quote(a) for a in ['benchmarks/space_load.py', *sys.argv[1:]])}`  \n"
        f"Machine: {os.cpu_count()} CPU cores, no GPU ({platform.machine()}, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at the end)  \n"
        f"Space: {model}; base weights loaded once (the adapter on top), in "
        f"{str(compute_dtype()).removeprefix('torch.')}; {config.max_new_tokens}-token replies at "
        f"temperature {config.temperature}, a seed per turn; max_batch_size {config.max_batch_size}, batch window "
        f"{config.batch_window_ms} ms, join_every_tokens {config.join_every_tokens}, stream_interval_ms "
        f"{config.stream_interval_ms}, prefix_cache_mb {config.prefix_cache_mb}, concurrency_limit "
        f"{config.concurrency_limit}. {args.visitors} visitors × "
        f"{args.turns} red-team prompts each (own session, conversation kept). Seconds per turn, from sending the "
        f"prompt; peak RSS of the Space process (after start-up: {idle:.0f} MiB).\n\n"
        "| scenario | turns | errors | replies complete | same replies as alone | first token p50 | first token p95 | "
        "full reply p50 | full reply p95 | peak RSS (MiB) |\n|---|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(row for row, _ in rows)
        + f"\n\np95 full reply, {args.visitors} together / alone: **{ratio:.2f}** (target ≤ 2.5); first token: "
        f"{first_ratio:.2f}. The {args.visitors} visitors' {args.turns} turns took {crowd_seconds:.1f} s in all "
        f"(CPU time: the Space {space_cpu:.1f} s, the {args.visitors} clients in the benchmark's own process "
        f"{client_cpu:.1f} s); "
        f"`generate` calls over the whole run (count×replies): {_sizes(sizes)}.{serial_note}\n"
    )
    print(report)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write("\n" + report)


if __name__ == "__main__":
    main()
