"""The pipeline end to end on the tiny model: stages, manifest, skip / re-run rules, crash and resume, recipe errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hf_cai.pipeline import Pipeline, PipelineError, RecipeError, load_recipe

pytestmark = pytest.mark.slow

FAST_RECIPE = {
    "model": "tiny",
    "tiny_pretrain_steps": 0,
    "constitution": "harmless",
    "prompts": "builtin:red_team",
    "helpful_prompts": None,
    "max_prompts": 8,
    "qlora_profile": "cpu",
    "seed": 3,
    "sl_data": {"rounds": 1, "max_new_tokens": 6, "few_shot": False, "shard_size": 2, "test_size": 0.25},
    "sft": {"max_steps": 4, "per_device_train_batch_size": 2, "learning_rate": 0.002, "save_steps": 2},
    "pref_data": {"max_new_tokens": 6, "few_shot": False, "shard_size": 2, "test_size": 0.25, "temperature": 1.0},
    "dpo": {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 1},
    "eval": {"max_prompts": 4, "max_new_tokens": 6},
}


def _write_recipe(tmp_path: Path, run_dir: Path, **changes) -> Path:
    recipe = json.loads(json.dumps(FAST_RECIPE))
    recipe["run_dir"] = str(run_dir)
    recipe["publish"] = {"folder": str(run_dir / "hub-repo")}
    for key, value in changes.items():
        recipe[key] = value
    path = tmp_path / f"recipe-{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "hf_cai", *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"hf-cai {' '.join(args)} failed:\n{result.stdout}\n{result.stderr[-4000:]}")
    return result


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["stages"]


def _rows(dataset_dir: Path) -> dict[str, list]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(dataset_dir))
    return {name: split.to_list() for name, split in dataset.items()}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted run of every stage up to a local publication."""
    tmp_path = tmp_path_factory.mktemp("reference")
    run_dir = tmp_path / "run"
    result = _cli("run", "--config", str(_write_recipe(tmp_path, run_dir)))
    assert "stage" in result.stdout and "publish" in result.stdout
    return run_dir


def test_full_run_writes_every_stage(reference_run):
    stages = _manifest(reference_run)
    assert list(stages) == ["sl_data", "sft", "pref_data", "dpo", "eval", "card", "publish"]
    assert all(record["status"] == "done" and record["output_hash"] for record in stages.values())
    assert stages["sl_data"]["metrics"]["rows"] > 0
    assert stages["sft"]["metrics"]["steps"] == 4 and stages["dpo"]["metrics"]["steps"] == 2
    sl = _rows(reference_run / "sl_data" / "dataset")
    assert {"train_sft", "test_sft", "train_prefs", "test_prefs"} <= set(sl)
    assert all(row["revisions"][0]["principle_id"] for row in sl["train_sft"])
    results = json.loads((reference_run / "eval" / "results.json").read_text())
    assert {m["name"] for m in results["metrics"]} >= {"harmlessness win rate", "helpfulness win rate"}
    repo = reference_run / "hub-repo"
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "constitution.yaml"} <= {
        p.name for p in repo.iterdir()
    }
    from hf_cai.constitution import Constitution

    assert Constitution.load(repo / "constitution.yaml").sha256 in (repo / "README.md").read_text()


def test_rerun_skips_finished_stages_and_publish_change_reruns_only_publish(reference_run, tmp_path):
    before = _manifest(reference_run)
    recipe_path = _write_recipe(tmp_path, reference_run)
    _cli("run", "--config", str(recipe_path))
    assert _manifest(reference_run) == before

    _cli("run", "--config", str(recipe_path), f"--publish.folder={reference_run / 'hub-repo-2'}")
    after = _manifest(reference_run)
    changed = [stage for stage in after if after[stage]["started"] != before[stage]["started"]]
    assert changed == ["publish"]
    assert (reference_run / "hub-repo-2" / "README.md").is_file()


def test_changed_constitution_reruns_sl_data_and_marks_later_stages_stale(reference_run, tmp_path):
    from hf_cai.constitution import Constitution

    run_dir = tmp_path / "copy"
    shutil.copytree(reference_run, run_dir)
    other = Constitution.builtin("helpful-honest").save(tmp_path / "other.yaml")
    recipe_path = _write_recipe(tmp_path, run_dir, constitution=str(other))
    before = _manifest(run_dir)
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    after = _manifest(run_dir)
    assert after["sl_data"]["started"] != before["sl_data"]["started"]
    assert after["sl_data"]["output_hash"] != before["sl_data"]["output_hash"]
    pipeline = Pipeline(load_recipe(recipe_path))
    for stage in ("sft", "pref_data", "dpo", "eval", "card", "publish"):
        assert pipeline.fingerprint(stage) != after[stage]["fingerprint"], stage


def _kill_when(process: subprocess.Popen, log: Path, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before the kill point:\n{log.read_text()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("the kill point was not reached in time")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _start(recipe_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """The run in a real subprocess; its log goes to a file (a pipe nobody reads would fill up and stall it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = recipe_path.with_suffix(".log")
    command = [sys.executable, "-m", "hf_cai", "run", "--config", str(recipe_path), *extra]
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle, env=env)
    return process, log


def test_killed_during_sl_data_resumes_to_the_same_rows(reference_run, tmp_path):
    run_dir = tmp_path / "killed-sl"
    recipe_path = _write_recipe(tmp_path, run_dir)
    shards = run_dir / "sl_data" / "shards"
    process, log = _start(recipe_path, "--until", "sl_data")
    _kill_when(process, log, lambda: shards.is_dir() and len(list(shards.glob("shard-*.jsonl"))) >= 1)
    finished_before = len(list(shards.glob("shard-*.jsonl")))
    assert finished_before < 4 and _manifest(run_dir)["sl_data"]["status"] == "running"
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    record = _manifest(run_dir)["sl_data"]
    assert record["status"] == "done" and record["resumed"] is True
    assert _rows(run_dir / "sl_data" / "dataset") == _rows(reference_run / "sl_data" / "dataset")


def test_killed_during_sft_resumes_from_the_last_checkpoint(reference_run, tmp_path):
    run_dir = tmp_path / "killed-sft"
    recipe_path = _write_recipe(tmp_path, run_dir)
    _cli("run", "--config", str(recipe_path), "--until", "sl_data")
    process, log = _start(recipe_path, "--until", "sft")
    _kill_when(process, log, lambda: (run_dir / "sft" / "checkpoint-2" / "trainer_state.json").is_file())
    assert not (run_dir / "sft" / "final").exists()
    _cli("run", "--config", str(recipe_path), "--until", "sft")
    record = _manifest(run_dir)["sft"]
    assert record["status"] == "done" and record["resumed"] is True
    assert record["metrics"]["resumed_from"].startswith("checkpoint-")
    assert record["metrics"]["steps"] == 4
    assert _rows(run_dir / "sl_data" / "dataset") == _rows(reference_run / "sl_data" / "dataset")
    state = json.loads((run_dir / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Resumed training follows the uninterrupted run (weights, optimizer, scheduler and RNG states restored, the
    # adapter kept in the precision it trained in): same losses after the resume point, same final adapter.
    reference_state = json.loads((reference_run / "sft" / "checkpoint-4" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    reference_losses = [entry["loss"] for entry in reference_state["log_history"] if "loss" in entry]
    assert losses == pytest.approx(reference_losses, abs=1e-4)
    from safetensors.torch import load_file

    resumed = load_file(run_dir / "sft" / "final" / "adapter_model.safetensors")
    uninterrupted = load_file(reference_run / "sft" / "final" / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert resumed[name].dtype == tensor.dtype, name
        assert torch.allclose(resumed[name].float(), tensor.float(), rtol=1e-2, atol=1e-3), name  # bf16 rounding


# ----------------------------------------------------------------------------- bad recipes
def test_unknown_keys_name_the_closest_valid_one(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("max_promts: 4\n")
    with pytest.raises(RecipeError, match="unknown key 'max_promts'; did you mean 'max_prompts'"):
        load_recipe(path)
    path.write_text("sft:\n  learnin_rate: 0.1\n")
    with pytest.raises(RecipeError, match="unknown key 'sft.learnin_rate'; did you mean 'learning_rate'"):
        load_recipe(path)


def test_stage_orders_that_cannot_work(tmp_path):
    with pytest.raises(RecipeError, match="cannot run in this order"):
        load_recipe(overrides={"stages": ["sft", "sl_data"]})
    with pytest.raises(RecipeError, match="'grpo' belongs to rl_method 'grpo'"):
        load_recipe(overrides={"stages": ["sl_data", "grpo"]})
    with pytest.raises(RecipeError, match="unknown stage 'evall'; did you mean 'eval'"):
        load_recipe(overrides={"stages": ["evall"]})
    with pytest.raises(RecipeError, match="'space' loads the published model from the Hub: set publish.repo_id"):
        load_recipe(overrides={"publish": {"folder": "out"}, "space": {"repo_id": "me/chat"}})


def test_missing_input_from_a_previous_stage(tmp_path):
    recipe = load_recipe(overrides={"run_dir": str(tmp_path / "run"), "stages": ["sft"]})
    with pytest.raises(PipelineError, match="missing input: stage 'sl_data' has not produced 'dataset'"):
        Pipeline(recipe).run()


def test_cli_reports_recipe_errors_in_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("rl_method: ppo\n")
    result = _cli("run", "--config", str(path), check=False)
    assert result.returncode == 2
    assert "rl_method: unknown value 'ppo'; choose 'dpo' or 'grpo'" in result.stderr
    assert "Traceback" not in result.stderr


def test_full_disk_is_a_clear_error_and_keeps_finished_work(tmp_path, monkeypatch):
    import errno

    from hf_cai import stages

    def full_disk(pipeline, directory):
        (directory / "shards").mkdir(parents=True)
        (directory / "shards" / "shard-00000.jsonl").write_text("{}\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "sl_data", full_disk)
    recipe = load_recipe(overrides={"run_dir": str(tmp_path / "run"), "stages": ["sl_data"]})
    with pytest.raises(PipelineError, match="the disk is full .* Finished shards and checkpoints are kept"):
        Pipeline(recipe).run()
    assert (tmp_path / "run" / "sl_data" / "shards" / "shard-00000.jsonl").is_file()
    assert _manifest(tmp_path / "run")["sl_data"]["status"] == "running"


def test_grpo_route_trains_a_reward_model_then_grpo(tmp_path):
    run_dir = tmp_path / "grpo"
    recipe_path = _write_recipe(
        tmp_path,
        run_dir,
        rl_method="grpo",
        reward={"max_steps": 2, "per_device_train_batch_size": 2},
        grpo={"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8},
    )
    _cli("run", "--config", str(recipe_path), "--until", "grpo")
    stages = _manifest(run_dir)
    assert list(stages) == ["sl_data", "sft", "pref_data", "reward", "grpo"]
    assert stages["grpo"]["metrics"]["steps"] == 2
    assert (run_dir / "grpo" / "final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "reward" / "final" / "constitution.yaml").is_file()


def test_secrets_in_a_recipe_never_reach_the_run_directory(tmp_path):
    secret = "hf_" + "S3cretTok" * 5
    recipe = load_recipe(
        overrides={
            "run_dir": str(tmp_path / "run"),
            "stages": ["sft"],
            "publish.token": secret,
            "sft.hub_token": secret,
            "endpoint": "http://127.0.0.1:9/v1",
        }
    )
    with pytest.raises(PipelineError):
        Pipeline(recipe).run()
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"recipe.yaml", "manifest.json"}
    assert not [p for p in written if secret in p.read_text(errors="ignore")]


def test_sl_data_through_an_endpoint_equals_local_generation(tiny_model_dir, tmp_path):
    from openai_server import OpenAIServer

    from hf_cai.backends import TransformersBackend

    settings = {
        "model": str(tiny_model_dir),
        "load_in_4bit": False,  # the server below serves the unquantised model
        "helpful_prompts": None,
        "max_prompts": 4,
        "stages": ["sl_data"],
        "sl_data": {"rounds": 1, "max_new_tokens": 5, "few_shot": False, "test_size": 0.25},
    }
    Pipeline(load_recipe(overrides={**settings, "run_dir": str(tmp_path / "local")})).run()
    with OpenAIServer(TransformersBackend(str(tiny_model_dir)), model_name="tiny") as server:
        remote = {**settings, "run_dir": str(tmp_path / "remote"), "endpoint": server.base_url, "endpoint_model": "tiny"}
        Pipeline(load_recipe(overrides=remote)).run()
        assert server.request_count > 0
    assert _rows(tmp_path / "remote" / "sl_data" / "dataset") == _rows(tmp_path / "local" / "sl_data" / "dataset")
