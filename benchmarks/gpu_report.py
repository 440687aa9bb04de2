"""The report of ``benchmarks/gpu.py``: the targets, one table per section, and how each figure is computed, as
Markdown (``results.md``) and JSON (``results.json``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,
    "H200": 989.4,
    "H800": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "4090": 165.2,
    "A10": 125.0,
    "L4": 121.0,
}
"""Dense bfloat16 peak of common GPUs from their data sheets (without sparsity), for MFU when ``--peak-tflops`` is not
given; a name is matched by the first key it contains (``H100 PCIe`` before ``H100``, the SXM part)."""

SECTIONS = ("sft", "dpo", "generation", "levers", "pipeline")
MAIN_MODEL, MAIN_PROFILE = "llama-3.1-8b", "8gb"
DPO_PEAK_LIMIT = 1.25


def write_report(out: Path, run: dict[str, Any], specs: list[dict], results: dict[str, dict]) -> str:
    """Write ``results.md`` and ``results.json`` into ``out``; return the Markdown."""
    waiting = {"status": "not run", "note": "not reached: the run stopped before it"}
    rows = [spec | results.get(spec["id"], waiting) for spec in specs]
    device = next((row["device"] for row in rows if row.get("device")), "no device reported")
    run = run | {"device": device, "peak_tflops": run.get("peak_tflops") or peak_tflops(device)}
    targets = target_rows(rows, run)
    text = markdown(rows, run, targets)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text, encoding="utf-8")
    document = {"run": run, "targets": targets, "measurements": rows}
    (out / "results.json").write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    return text


def peak_tflops(device: str) -> float | None:
    return next((value for name, value in PEAK_BF16_TFLOPS.items() if name in device), None)


def mfu(row: dict[str, Any], run: dict[str, Any]) -> float | None:
    """6 x N x tokens/s over the GPU's dense bf16 peak (N: :func:`gpu_measure.linear_weights`)."""
    if row.get("status") != "ok" or not run["peak_tflops"] or "CPU" in run["device"]:
        return None
    return 6 * row["linear_weights"] * row["tokens_per_s"] / (run["peak_tflops"] * 1e12)


# ----------------------------------------------------------------------------------------------- targets
def find(rows: list[dict], section: str, **fields: Any) -> dict[str, Any] | None:
    for row in rows:
        if row["section"] == section and all(row.get(k) == v for k, v in fields.items()) and not row.get("lever"):
            return row
    return None


def ok(*rows: dict | None) -> bool:
    return all(row is not None and row.get("status") == "ok" for row in rows)


def target_rows(rows: list[dict], run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: what was measured and whether it holds (``None``: not measured)."""
    main = dict(architecture=MAIN_MODEL, profile=MAIN_PROFILE)
    cai_sft, trl_sft = find(rows, "sft", implementation="cai", **main), find(rows, "sft", implementation="trl", **main)
    cai_dpo, trl_dpo = find(rows, "dpo", implementation="cai", **main), find(rows, "dpo", implementation="trl", **main)
    on_gpu = "CPU" not in run["device"]
    targets = []

    def add(name: str, value: float | None, unit: str, holds: bool | None, digits: int = 2) -> None:
        targets.append({"target": name, "value": value, "unit": unit, "holds": holds, "digits": digits})

    card = int(MAIN_PROFILE.removesuffix("gb"))
    peak = cai_sft.get("peak_reserved_gib") if ok(cai_sft) and on_gpu else None
    add(
        f"Llama-3.1-8B QLoRA SFT at {run['settings']['seq_len']} tokens within {card} GiB under `{MAIN_PROFILE}` "
        "(peak reserved)",
        peak,
        "GiB",
        None if peak is None else peak <= card,
    )
    ratio = cai_sft["tokens_per_s"] / trl_sft["tokens_per_s"] if ok(cai_sft, trl_sft) else None
    add(
        "CAI SFT tokens/s >= 1.0x TRL + PEFT (same model and settings)",
        ratio,
        "x",
        None if ratio is None or not on_gpu else ratio >= 1.0,
    )
    ratio = (
        cai_dpo.get("peak_allocated_gib", 0) / cai_sft["peak_allocated_gib"]
        if ok(cai_sft, cai_dpo) and on_gpu
        else None
    )
    add(
        f"Soft-label DPO peak <= {DPO_PEAK_LIMIT}x SFT peak (CAI, allocated)",
        ratio,
        "x",
        None if ratio is None else ratio <= DPO_PEAK_LIMIT,
    )
    ratio = cai_dpo["tokens_per_s"] / trl_dpo["tokens_per_s"] if ok(cai_dpo, trl_dpo) else None
    add("CAI soft-label DPO tokens/s against TRL DPO (no target set)", ratio, "x", None)
    stages = [stage for row in rows if row["section"] == "pipeline" for stage in row.get("stages", [])]
    passed = sum(stage["status"] == "done" for stage in stages)
    add(
        f"every pipeline stage passes on {run['device']}",
        passed,
        f"of {len(stages)} stages",
        None if not stages else passed == len(stages),
        digits=0,
    )
    return targets


# ----------------------------------------------------------------------------------------------- markdown
def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def status(row: dict[str, Any]) -> str:
    if row.get("status") == "ok":
        return "ok"
    text = row.get("error") or row.get("note") or ""
    text = text.splitlines()[0] if text else ""
    return re.sub(r"\s+", " ", f"{row['status']}: {text}"[:240]).replace("|", "\\|")


def table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(c) + " |" for c in lines]


def trainer_name(row: dict[str, Any]) -> str:
    return "CAI" if row["implementation"] == "cai" else "TRL + PEFT"


def fits(row: dict[str, Any]) -> str:
    card = re.fullmatch(r"(\d+)gb", row["profile"])
    if row.get("peak_reserved_gib") is None or card is None:
        return "-"
    return "yes" if row["peak_reserved_gib"] <= int(card.group(1)) else "no"


def training_table(rows: list[dict], run: dict[str, Any], section: str) -> list[str]:
    unit = "sequences" if section == "sft" else "pairs"
    lines = []
    for row in (r for r in rows if r["section"] == section):
        settings = row.get("trainer_settings") if row.get("status") == "ok" else None
        shape = (
            f"{settings['per_device_train_batch_size']} x {settings['gradient_accumulation_steps']}"
            if settings
            else "-"
        )
        lines.append(
            [
                row["architecture"],
                f"`{row['profile']}`",
                trainer_name(row),
                shape,
                row.get("embedding_dtype") or "-",
                number(row.get("tokens_per_sequence")),
                number(row.get("tokens_per_s")),
                number(mfu(row, run) and 100 * mfu(row, run), 1),
                number(row.get("peak_allocated_gib"), 2),
                number(row.get("peak_reserved_gib"), 2),
                fits(row),
                status(row),
            ]
        )
    header = [
        "model",
        "profile",
        "trainer",
        f"{unit} x accumulation",
        "embeddings",
        "tokens/sequence",
        "tokens/s",
        "MFU %",
        "peak allocated GiB",
        "peak reserved GiB",
        "within the profile's card",
        "result",
    ]
    text = table(header, lines)
    pairs = []
    for cai in (r for r in rows if r["section"] == section and r["implementation"] == "cai"):
        trl = find(rows, section, implementation="trl", architecture=cai["architecture"], profile=cai["profile"])
        if ok(cai, trl):
            same = "yes" if cai["trainer_settings"] == trl["trainer_settings"] else differences(cai, trl)
            memory = None
            if cai.get("peak_allocated_gib") and trl.get("peak_allocated_gib"):
                memory = cai["peak_allocated_gib"] / trl["peak_allocated_gib"]
            pairs.append(
                [
                    cai["architecture"],
                    f"`{cai['profile']}`",
                    number(cai["tokens_per_s"] / trl["tokens_per_s"], 3),
                    number(memory, 3),
                    same,
                ]
            )
    if pairs:
        text += [""] + table(
            ["model", "profile", "CAI / TRL tokens/s", "CAI / TRL peak allocated", "same settings"], pairs
        )
    return text


def differences(cai: dict[str, Any], trl: dict[str, Any]) -> str:
    names = [
        name for name in cai["trainer_settings"] if cai["trainer_settings"][name] != trl["trainer_settings"].get(name)
    ]
    return "no: " + ", ".join(
        f"{name} {cai['trainer_settings'][name]} (CAI) / {trl['trainer_settings'].get(name)} (TRL)" for name in names
    )


def generation_table(rows: list[dict]) -> list[str]:
    lines, faster = [], []
    for row in (r for r in rows if r["section"] == "generation"):
        weights = "NF4" if row["load_in_4bit"] else "bfloat16"
        for batch in row.get("batches") or [{}]:
            plain, backend = batch.get("plain_tokens_per_s"), batch.get("backend_tokens_per_s")
            lines.append(
                [
                    row["architecture"],
                    weights,
                    str(batch.get("batch_size", "-")),
                    number(plain),
                    number(backend),
                    number(backend / plain if plain and backend else None, 3),
                    number(row.get("peak_allocated_gib"), 2),
                    status(row),
                ]
            )
    for row in (r for r in rows if r["section"] == "generation" and r["load_in_4bit"] and r.get("status") == "ok"):
        other = find(rows, "generation", architecture=row["architecture"], load_in_4bit=False)
        if not ok(other):
            continue
        for nf4, bf16 in zip(row["batches"], other["batches"]):
            winner = "NF4" if nf4["backend_tokens_per_s"] > bf16["backend_tokens_per_s"] else "bfloat16"
            faster.append(
                [
                    row["architecture"],
                    str(nf4["batch_size"]),
                    number(nf4["backend_tokens_per_s"]),
                    number(bf16["backend_tokens_per_s"]),
                    winner,
                ]
            )
    header = [
        "model",
        "weights",
        "batch",
        "plain generate tokens/s",
        "TransformersBackend tokens/s",
        "backend / plain",
        "peak allocated GiB",
        "result",
    ]
    text = table(header, lines)
    if faster:
        text += [""] + table(["model", "batch", "backend NF4 tokens/s", "backend bfloat16 tokens/s", "faster"], faster)
    return text


def levers_table(rows: list[dict], run: dict[str, Any]) -> list[str]:
    lines = []
    for row in (r for r in rows if r["section"] == "levers"):
        base = find(
            rows, "sft", implementation=row["implementation"], architecture=row["architecture"], profile=row["profile"]
        )
        memory = speed = None
        if ok(row, base) and row.get("peak_allocated_gib"):
            memory = row["peak_allocated_gib"] / base["peak_allocated_gib"]
        if ok(row, base):
            speed = row["tokens_per_s"] / base["tokens_per_s"]
        lever = ", ".join(f"`{name}={value}`" for name, value in row["lever"].items())
        lines.append(
            [
                lever,
                f"{row['architecture']} · `{row['profile']}` · {trainer_name(row)}",
                number(row.get("tokens_per_s")),
                number(row.get("peak_allocated_gib"), 2),
                number(row.get("peak_reserved_gib"), 2),
                number(memory, 3),
                number(speed, 3),
                status(row),
            ]
        )
    header = [
        "setting",
        "run",
        "tokens/s",
        "peak allocated GiB",
        "peak reserved GiB",
        "peak vs the profile's",
        "tokens/s vs the profile's",
        "result",
    ]
    return table(header, lines)


def pipeline_table(rows: list[dict]) -> list[str]:
    lines = []
    for row in (r for r in rows if r["section"] == "pipeline"):
        if not row.get("stages"):
            lines.append(["-", "-", status(row), "-"])
        for stage in row.get("stages", []):
            error = re.sub(r"\s+", " ", stage.get("error", ""))[:240].replace("|", "\\|")
            lines.append(
                [
                    stage["route"],
                    stage["stage"],
                    stage["status"] + (f": {error}" if error else ""),
                    number(stage.get("seconds"), 1),
                ]
            )
    return table(["route", "stage", "result", "seconds"], lines)


def markdown(rows: list[dict], run: dict[str, Any], targets: list[dict]) -> str:
    settings = run["settings"]
    title = "GPU run (dry run on CPU: figures check the script, they measure nothing)" if run["dry_run"] else "GPU run"
    versions = ", ".join(f"{name} {version}" for name, version in run["versions"].items() if version)
    missing = ", ".join(name for name, version in run["versions"].items() if not version)
    device = next((row for row in rows if row.get("device")), {})
    memory = f", {device['memory_gib']:.0f} GiB" if device.get("memory_gib") else ""
    lines = [
        f"### {title}: {run['device']} ({run['date']})",
        "",
        f"Command: `{run['command']}`  ",
        f"Device: {run['device']}{memory}; CUDA {device.get('cuda') or '-'}; dense bf16 peak for MFU: "
        f"{number(run['peak_tflops'], 1)} TFLOP/s  ",
        f"Libraries: {versions}" + (f" (not installed: {missing})" if missing else "") + "  ",
        f"Time: {run['elapsed_s']:.0f} s of a {run['budget_s']:.0f} s budget. Training: sequence length "
        f"{settings['seq_len']}, {settings['warmup']} warm-up + {settings['steps']} timed optimizer steps of "
        f"{settings['accumulation']} micro-batches.",
        "",
        "#### Targets",
        "",
    ]
    lines += table(
        ["target", "measured", "holds"],
        [
            [
                t["target"],
                "-" if t["value"] is None else f"{number(t['value'], t['digits'])} {t['unit']}",
                {True: "yes", False: "**no**", None: "-"}[t["holds"]],
            ]
            for t in targets
        ],
    )
    lines += ["", f"#### QLoRA SFT, sequence length {settings['seq_len']}", ""] + training_table(rows, run, "sft")
    lines += ["", "#### Soft-label DPO (CAI: `chosen_prob` column; TRL: the same pairs, hard labels)", ""]
    lines += training_table(rows, run, "dpo")
    lines += ["", "#### Generation (greedy, one batch per call)", ""] + generation_table(rows)
    lines += ["", "#### Memory levers (CAI SFT, one setting changed from the profile's)", ""] + levers_table(rows, run)
    lines += ["", f"#### The pipeline on {run['device']} (tiny model)", ""] + pipeline_table(rows)
    setup = [[row["architecture"], number(row.get("seconds"), 0), status(row)] for row in rows if row["section"] == "setup"]
    lines += ["", "#### Model builds", ""] + table(["model", "seconds", "result"], setup)
    lines += ["", HOW_TO_READ.strip(), ""]
    return "\n".join(lines)


HOW_TO_READ = """
How the figures are computed: tokens/s counts the non-padding tokens TRL logs (`num_tokens`; for DPO both the chosen
and the rejected sequence) over the timed optimizer steps, after one warm-up step, with the GPU synchronised at each
step's end. Peak memory is `torch.cuda.max_memory_allocated` / `max_memory_reserved` of the measurement's own process,
model loading included; the CUDA context (some hundreds of MiB) comes on top of the reserved figure. "Within the
profile's card" compares the reserved peak with the card size the profile is named for; "embeddings" is the dtype
the input embedding (and output head) is trained with. MFU = 6 x N x tokens/s / peak,
with N the weights of the linear layers (the output head included, the input embedding lookup not; 4-bit weights by
their original shape) and the GPU's dense bf16 data-sheet peak. 6N is the usual training cost per token (forward 2N,
backward 4N); LoRA's backward needs no gradients for the frozen weights (2N), but gradient checkpointing recomputes
the forward (2N), so a checkpointed QLoRA step also does about 6N; DPO's reference pass adds 2N that the figure leaves
out, and attention's own FLOPs are left out everywhere. CAI runs pass the model folder and `qlora_profile` to the CAI
trainer (hf_cai loads it in NF4); TRL + PEFT runs load the same folder with the same `BitsAndBytesConfig` and give TRL
the profile's `LoraConfig` and settings, as TRL documents QLoRA. Generation tokens/s counts rows x new tokens per call;
the batch is one call of that many conversations with random-token prompts, greedy.
"""
