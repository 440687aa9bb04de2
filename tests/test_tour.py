"""The README's Python tour (``examples/tour.py --cpu``) run as a user runs it: offline, on the embedded model, through
the library alone, to a publishable folder.

It checks what the tour must print (the quality gates' counts, the judge's accuracy with its warning, the verdicts)
and must not (third-party warnings), and what the Python path must leave behind: adapters that name their base by Hub
id and record the GGUF file they were trained on, load back on those weights, and a published folder with no path of
this machine. ``tests/test_readme.py`` checks that the README shows exactly the script's steps.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_cai.gguf import DEFAULT_MODEL, EMBEDDED_MODELS, cache_dir, resolve_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HUB_ID = EMBEDDED_MODELS[DEFAULT_MODEL].hub_id


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour") / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for variable in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY"):
        env.pop(variable, None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour.py"), "--cpu", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=1200, cwd=tmp_path_factory.mktemp("cwd"),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result.stdout + result.stderr


def test_the_tour_prints_the_gates_the_judge_and_the_verdicts(tour):
    _, output = tour
    assert re.search(r"SL-CAI quality gates: \d+ of \d+ rows kept", output)
    assert re.search(r"training on \d+ of \d+ rows", output), "the SFT trainer says it trains on the kept rows"
    assert re.search(r"judge accuracy \d+% \[\d+%, \d+%\] on 24 items", output)
    assert "not distinguishable from chance" in output or "worse than chance" in output or "wrong way" in output
    assert "Verdict:" in output
    assert "not loaded alike" not in output, "the tour loads both models in 4-bit"


def test_the_tour_prints_no_third_party_warnings(tour):
    _, output = tour
    noisy = [line for line in output.splitlines() if re.search(r"Warning|pip install kernels", line)]
    assert noisy == [], noisy


def test_saved_adapters_name_the_hub_base_and_record_the_gguf_file(tour):
    out, _ = tour
    for adapter in (out / "sft" / "final", out / "dpo" / "final"):
        adapter_config = json.loads((adapter / "adapter_config.json").read_text())
        record = json.loads((adapter / "cai_training.json").read_text())
        assert adapter_config["base_model_name_or_path"] == HUB_ID, adapter
        assert record["base_model"] == HUB_ID
        weights = record["base_weights"]
        assert weights["file"] == EMBEDDED_MODELS[DEFAULT_MODEL].filename and len(weights["sha256"]) == 64
        for name in ("adapter_config.json", "cai_training.json"):
            assert str(cache_dir()) not in (adapter / name).read_text(), (adapter, name)


def test_an_adapter_loads_back_on_the_weights_it_was_trained_on(tour):
    """Offline the Hub id cannot be fetched: hf_cai loads the adapter on the converted GGUF weights it recorded."""
    from hf_cai import TransformersBackend

    out, _ = tour
    backend = TransformersBackend(str(out / "dpo" / "final"))
    assert backend.model.get_base_model().config.name_or_path == resolve_model(DEFAULT_MODEL)


def test_the_published_folder_names_the_hub_base_and_no_local_path(tour):
    out, _ = tour
    folder, space = out / "hub-repo", out / "hub-repo-chat"
    card = (folder / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["base_model"] == HUB_ID
    assert "your-username/hub-repo" in card, "without repo_id, the card names a placeholder repository"
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "eval" / "results.json").is_file()
    space_config = json.loads((space / "space_config.json").read_text())
    assert space_config["base_model"] == HUB_ID and space_config["cai_model"] == "your-username/hub-repo"
    for path in [*folder.rglob("*"), *space.rglob("*")]:
        if path.is_file() and path.suffix in (".json", ".md", ".yaml", ".txt"):
            text = path.read_text(encoding="utf-8")
            assert str(cache_dir()) not in text and str(out) not in text, path
