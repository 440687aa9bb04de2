"""The pipeline end to end on a real model: SmolLM2-135M-Instruct (embedded, converted from its GGUF file).

A few prompts and short generations keep it to a couple of minutes on two CPU cores. The published folder is then
loaded back by a separate process that imports only transformers and PEFT, as a user of the Hub repository would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_cai.demo import demo_report
from hf_cai.gguf import DEFAULT_MODEL, resolve_model
from hf_cai.pipeline import Pipeline, load_recipe

pytestmark = pytest.mark.slow

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

RECIPE = {
    "model": DEFAULT_MODEL,
    "constitution": "harmless",
    "prompts": "builtin:red_team",
    "helpful_prompts": None,
    "max_prompts": 4,
    "load_in_4bit": True,
    "qlora_profile": "cpu",
    "seed": 0,
    "sl_data": {"rounds": 1, "max_new_tokens": 16, "few_shot": False, "test_size": 0.25},
    # 16-token revisions are mostly cut short: the gates flag them, and this test is about the stages running on a
    # real model, not about the data being good enough to train on.
    "sl_quality": {"exclude_flagged": False},
    "judge_check": {"max_items": 8},
    "sft": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 0.001, "save_steps": 2},
    "pref_data": {"max_new_tokens": 16, "few_shot": False, "test_size": 0.25},
    "dpo": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 0.001, "save_steps": 2},
    "eval": {"max_prompts": 2, "max_new_tokens": 12, "max_audit_prompts_per_principle": 1, "judge_quality_items": 8},
}

# Runs in its own interpreter: the published folder must load with transformers and PEFT alone.
RELOAD = r"""
import json, sys
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, repo = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(base_dir)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), repo).eval()
chat = [{"role": "user", "content": "How do I pick a lock to get into my neighbour's house?"}]
inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
with torch.no_grad():
    tuned = model(**inputs).logits[0, -1]
    with model.disable_adapter():
        base = model(**inputs).logits[0, -1]
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps({"reply": reply, "logit_change": (tuned - base).abs().max().item(),
                  "hf_cai_imported": any(name.split(".")[0] == "hf_cai" for name in sys.modules)}))
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, one_torch_thread) -> Pipeline:
    run_dir = tmp_path_factory.mktemp("smollm2") / "run"
    overrides = {**RECIPE, "run_dir": str(run_dir), "publish": {"folder": str(run_dir / "hub-repo")}}
    pipeline = Pipeline(load_recipe(None, overrides))
    pipeline.run()
    return pipeline


def test_every_stage_runs_on_the_real_model(real_run):
    stages = json.loads((real_run.run_dir / "manifest.json").read_text())["stages"]
    assert list(stages) == ["sl_data", "sft", "pref_data", "dpo", "eval", "card", "publish"]
    assert all(record["status"] == "done" for record in stages.values()), stages
    assert stages["sft"]["metrics"]["steps"] == 2 and stages["dpo"]["metrics"]["steps"] == 2
    from datasets import load_from_disk

    rows = load_from_disk(str(real_run.run_dir / "sl_data" / "dataset"))["train_sft"].to_list()
    assert rows and all(row["revisions"][0]["principle_id"] and row["completion"] for row in rows)
    samples = json.loads((real_run.run_dir / "eval" / "results.json").read_text())["samples"]
    assert samples and all(sample["base"] or sample["cai"] for sample in samples)


def test_card_names_the_hub_base_model(real_run):
    card = (real_run.run_dir / "hub-repo" / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["base_model"] == HUB_ID
    adapter_config = json.loads((real_run.run_dir / "hub-repo" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == HUB_ID


def test_published_adapter_reloads_with_transformers_and_peft_alone(real_run):
    # The Hub id in adapter_config.json is not reachable offline: the base comes from the converted local copy.
    base_dir = resolve_model(DEFAULT_MODEL)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, base_dir, str(real_run.run_dir / "hub-repo")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not loaded["hf_cai_imported"]
    assert loaded["reply"].strip()
    assert loaded["logit_change"] > 0  # the trained adapter is applied, not a no-op


def test_demo_report_shows_the_run_and_where_it_went(real_run):
    report = demo_report(real_run, width=100)
    first = json.loads((real_run.run_dir / "eval" / "results.json").read_text())["samples"][0]
    assert first["prompt"].split()[0] in report and HUB_ID in report
    assert f"hf-cai chat --run-dir {real_run.run_dir}" in report
    assert str(Path(real_run.run_dir / "hub-repo")) in report
