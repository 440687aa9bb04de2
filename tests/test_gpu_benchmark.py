"""benchmarks/gpu.py on CPU: ``--dry-run`` runs every section of the GPU run at tiny sizes, so the script that a GPU
turns into figures cannot rot between the rare runs on one; and a run out of time still reports what it skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
SECTIONS = ("setup", "sft", "dpo", "generation", "levers", "pipeline")
DRY_RUN_SEQUENCE = 64


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("gpu-dry-run")
    result = _run(out)
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text(), result.stdout


@pytest.mark.slow
def test_dry_run_measures_every_section_without_an_error(dry_run):
    results, markdown, stdout = dry_run
    measurements = results["measurements"]
    errors = [f"{m['id']}: {m.get('error')}" for m in measurements if m["status"] == "error"]
    assert not errors, "\n".join(errors)
    for section in SECTIONS:
        assert any(m["section"] == section and m["status"] == "ok" for m in measurements), section
    trained = [m for m in measurements if m["kind"] == "train" and m["status"] == "ok"]
    assert {m["architecture"] for m in trained} == {"llama-3.1-8b", "qwen2.5-1.5b"}
    assert {(m["stage"], m["implementation"]) for m in trained} == {
        ("sft", "cai"),
        ("sft", "trl"),
        ("dpo", "cai"),
        ("dpo", "trl"),
    }
    assert {m["profile"] for m in trained if m["section"] == "sft"} == {"8gb", "12gb", "16gb", "24gb"}
    for run in trained:
        # The random-token rows overfill the sequence: every trained sequence is full length.
        assert run["tokens_per_sequence"] == DRY_RUN_SEQUENCE and run["tokens_per_s"] > 0, run["id"]
    for run in (m for m in measurements if m["kind"] == "generate"):
        assert [batch["batch_size"] for batch in run["batches"]] == [1, 2]
        assert all(batch["plain_tokens_per_s"] > 0 and batch["backend_tokens_per_s"] > 0 for batch in run["batches"])
    (pipeline,) = [m for m in measurements if m["section"] == "pipeline"]
    assert [(s["route"], s["stage"], s["status"]) for s in pipeline["stages"]] == [
        *(("dpo", stage, "done") for stage in ("sl_data", "sft", "pref_data", "dpo", "eval", "card", "publish")),
        ("grpo", "reward", "done"),
        ("grpo", "grpo", "done"),
    ]
    liger = next(m for m in measurements if m.get("lever") == {"use_liger_kernel": True})
    if importlib.util.find_spec("liger_kernel") is None:
        assert liger["status"] == "not run" and "not installed" in liger["note"]
    assert markdown in stdout  # the report printed is the report written
    for heading in (
        "#### Targets",
        "#### QLoRA SFT",
        "#### Soft-label DPO",
        "#### Generation",
        "#### Memory levers",
        "#### The pipeline",
    ):
        assert heading in markdown
    assert "| error:" not in markdown


@pytest.mark.slow
def test_dry_run_reports_the_ratios_against_trl(dry_run):
    results, markdown, _ = dry_run
    targets = {target["target"]: target for target in results["targets"]}
    speed = next(t for name, t in targets.items() if name.startswith("CAI SFT tokens/s"))
    assert speed["value"] > 0  # measured on CPU; whether it holds is judged on a GPU only
    assert speed["holds"] is None
    pipeline = next(t for name, t in targets.items() if name.startswith("every pipeline stage"))
    assert pipeline["value"] == 9 and pipeline["holds"] is True
    assert "| llama-3.1-8b | `8gb` | " in markdown.split("CAI / TRL tokens/s")[1]


def test_a_run_out_of_time_skips_with_the_reason_and_still_reports(tmp_path):
    result = _run(tmp_path, "--budget", "0")
    measurements = json.loads((tmp_path / "results.json").read_text())["measurements"]
    assert measurements and not any(m["status"] in ("ok", "error") for m in measurements)
    builds = [m for m in measurements if m["kind"] == "build"]
    assert builds and all("budget left" in m["note"] for m in builds)
    dependent = [m for m in measurements if m["kind"] in ("train", "generate") and not m.get("unavailable")]
    assert all(m["note"] == f"building {m['architecture']} was skipped" for m in dependent)
    assert "skipped: 0 s of the 0 s budget left" in result.stdout
